"""``python -m pipeline plan``: what a run will cost, before it runs.

End-to-end scenarios: the plan of the session's demo run predicts the bytes it wrote; a plan
before any video is downloaded says what it assumed; samples, probe, config and plan run
without torch or OpenCV."""
import json
import re

import numpy as np
import pytest
import yaml

from conftest import ROOT, run_cli
from pipeline.plan_disk import measure_layout, shard_bytes
from pipeline.store import FeatureWriter


@pytest.mark.parametrize("kind,shape,dtype,videos,rows", [
    ("clip", (512,), np.float16, 40, 5000), ("clip", (64,), np.float32, 3, 70),
    ("flow", (2, 24, 24), np.uint8, 12, 900)])
def test_a_shards_size_is_predicted_from_its_measured_layout(tmp_path, kind, shape, dtype, videos, rows):
    layout = measure_layout(kind, shape, dtype, tmp_path)
    rng = np.random.default_rng(0)
    per = np.array_split(np.arange(rows), videos)
    with FeatureWriter(tmp_path / "real.h5", kind, shape, dtype) as w:
        for v, idx in enumerate(per):
            w.add(f"some/folder/clip_{v:05d}", idx, idx.astype(np.float32),
                  rng.integers(0, 255, (len(idx), *shape)).astype(dtype), "sha256:" + "ab" * 32)
    real = (tmp_path / "real.h5").stat().st_size
    assert shard_bytes(layout, videos, rows) == pytest.approx(real, rel=0.05)


@pytest.mark.slow
def test_the_plan_of_a_finished_run_predicts_what_it_wrote(demo_run, tmp_path):
    out = tmp_path / "plan.json"
    proc = run_cli("plan", "--json", out, cwd=demo_run)
    plan = json.loads(out.read_text())
    features = demo_run / "results" / "demo" / "features"
    written = sum(f.stat().st_size for kind in ("clip", "flow", "motion")
                  for f in (features / kind).rglob("*.h5"))
    assert plan["disk_bytes"] == pytest.approx(written, rel=0.2), proc.stdout
    assert set(plan["splits"]) == {"train", "val", "test"}
    for split in plan["splits"].values():
        assert split["source"] == "probe tables (exact)"
    stages = {(r["stage"], r["split"]): r for r in plan["stages"]}
    assert stages[("extract", "train")]["jobs"] == 2
    assert stages[("extract", "train")]["threads"] == 8  # the schema's default for extraction
    assert stages[("head", "fusion")]["jobs"] == 1
    assert "dis flow" in plan["streams"]["flow"]["source"]
    assert "features on disk" in proc.stdout


def test_a_plan_before_any_video_is_there_says_what_it_assumed(tmp_path):
    """A user's data set whose videos are not downloaded yet: listed videos are counted, their
    length assumed and said so; a flow model's compression falls back to a stated figure."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "classes.csv").write_text("id,name\n0,run\n1,eat\n")
    (data / "list.csv").write_text("video,split,labels\n" + "".join(
        f"v{i}.mp4,{'train' if i % 4 else 'test'},{'run' if i % 2 else 'eat'}\n" for i in range(40)))
    cfg = {"dataset": {"name": "mine", "format": "csv", "videos": str(data / "videos"),
                       "classes": str(data / "classes.csv"), "annotations": str(data / "list.csv"),
                       "train_split": "train", "eval_split": "test"},
           "clip": {"model": "ViT-B-32"}, "sampling": {"mode": "all", "max_frames": 1000},
           "shards": 4, "heads": {"fusion": {}, "motion_linear": {}}}
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "plan.json"
    proc = run_cli("plan", "--configfile", tmp_path / "my.yaml", "--frames-per-video", 400,
                   "--json", out, cwd=tmp_path)
    plan = json.loads(out.read_text())
    assert plan["splits"]["train"]["videos"] == 30 and plan["splits"]["test"]["videos"] == 10
    assert plan["splits"]["train"]["rows"] == 30 * 400
    assert "assumed" in plan["splits"]["train"]["source"]
    assert "assumed" in plan["streams"]["flow"]["source"]
    # ViT-B-32 512-d float16 rows: about 1 KB each in the clip and the motion stream
    assert plan["streams"]["clip"]["bytes_per_row"] == pytest.approx(1024, rel=0.05)
    # RAFT at the default 256 px working size: the H100 figure it states
    assert plan["rates"]["flow"] == pytest.approx(97.0)
    assert plan["device_hours"] > 0 and "H100" in proc.stdout
    assert re.search(r"^head +motion_linear +1 ", proc.stdout, re.M), proc.stdout  # its whole name


@pytest.mark.parametrize("content, message", [
    ("stage,frames_per_s\nclip,fast\n", "line 2: frames_per_s is 'fast', not a number"),
    ("stage,frames_per_s\nclip,100\nflow,-3\n", "line 3: frames_per_s of 'flow' is -3; a rate is a number above zero"),
    ("stage,frames_per_s\nclip,0\n", "line 2: frames_per_s of 'clip' is 0"),
    ("stage,frames_per_s\nclip,1e400\n", "is 1e400; a rate is a number above zero"),
    ("name,speed\nclip,100\n", "not a bench CSV (it needs the columns stage and frames_per_s"),
    ("stage,frames_per_s\nclip,100\nclip_fast,300\n", "line 3: stage 'clip_fast' is not one bench times"),
    ("stage,frames_per_s,settings\nclip,100,{oops\n", "line 2: settings '{oops' are not the JSON"),
    (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "not a text CSV file")])
def test_a_bad_bench_csv_is_one_clear_line(tmp_path, content, message):
    bench = tmp_path / "bench.csv"
    bench.write_bytes(content if isinstance(content, bytes) else content.encode())
    proc = run_cli("plan", "--bench", bench, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_bench_rate_serves_only_the_models_it_measured(tmp_path):
    """A CSV timed on the demo's tiny CNN gives no rate to a ViT-L-14 config, and says so; a CSV
    that records nothing (an old one) is used, and the plan says it assumed so."""
    from pipeline.config import section, validate_config
    from pipeline.plan import rates, read_bench, write_bench
    rows = [{"stage": "clip", "frames_per_s": 900.0}, {"stage": "flow", "frames_per_s": 50.0}]
    write_bench(rows, tmp_path / "tiny.csv", "demo-tiny-CNN", "raft", 256)
    cfg = validate_config({"dataset": {"name": "x", "format": "csv", "videos": "v", "classes": "c.csv",
                                       "annotations": "a.csv"}, "clip": {"model": "ViT-L-14"}})
    got, said = rates(cfg, read_bench(tmp_path / "tiny.csv"))
    assert got["clip"] is None and got["flow"] == 50.0
    assert "clip not used (measured with clip_model 'demo-tiny-CNN' where this config has 'ViT-L-14')" in said
    (tmp_path / "old.csv").write_text("stage,frames_per_s\nclip,900\n")
    got, said = rates(cfg, read_bench(tmp_path / "old.csv"))
    assert got["clip"] == 900.0 and "clip assumed measured with this config's models" in said
    assert section("flow", {})["model"] == "raft"


def test_the_students_hours_come_from_a_timed_training_step_and_count_validation():
    from pipeline.config import validate_config
    from pipeline.plan import student_hours
    cfg = validate_config({"dataset": {"name": "x", "format": "csv", "videos": "v", "classes": "c.csv",
                                       "annotations": "a.csv", "val_split": "val"},
                           "moclip": {"epochs": 10, "num_workers": 4}})
    splits = {"train": {"rows": 36000}, "val": {"rows": 3600}}
    rate = {"student_train": 100.0, "student_read": 50.0, "student": 400.0}
    # training: 36000 rows x 10 epochs at min(100, 4 workers x 50) = 100/s; validation: 3600 x 10 at 400/s
    assert student_hours(cfg, splits, rate) == pytest.approx((3600 + 90) / 3600)
    rate["student_read"] = 10.0  # four workers read 40 rows/s: the GPU waits for them
    assert student_hours(cfg, splits, rate) == pytest.approx((9000 + 90) / 3600)


def test_the_students_loader_workers_follow_the_jobs_cpus(monkeypatch):
    import torch
    from pipeline.moclip.train import loader_workers
    import pipeline.devices
    monkeypatch.setattr(pipeline.devices, "job_cpus", lambda: 4)  # the job's allotment
    assert loader_workers({"num_workers": None}, torch.device("cuda")) == 3
    monkeypatch.setattr(pipeline.devices, "job_cpus", lambda: 32)
    assert loader_workers({"num_workers": None}, torch.device("cuda")) == 8
    assert loader_workers({"num_workers": None}, torch.device("cpu")) == 0
    assert loader_workers({"num_workers": 2}, torch.device("cuda")) == 2


def test_a_plan_warns_of_a_split_with_no_readable_video():
    from pipeline.plan import format_plan
    plan = {"name": "x", "shards": 1, "device": "cpu", "train_split": "train", "eval_split": "test",
            "splits": {"train": {"listed": 3, "present": 3, "videos": 3, "rows": 30, "source": "s"},
                       "test": {"listed": 2, "present": 0, "videos": 0, "rows": 0, "source": "s"}},
            "stages": [], "streams": {}, "disk_bytes": 0, "device_hours": None, "rates": {},
            "rates_source": "-"}
    text = format_plan(plan)
    assert "WARNING: split 'test' has no readable video (2 listed, 0 found" in text
    plan["eval_split"] = "val"
    assert "WARNING: dataset.eval_split 'val' has no listed video" in format_plan(plan)


LIGHT = ("import sys\nfrom pipeline.cli import main\ntry:\n    main(sys.argv[1:])\n"
         "except SystemExit:\n    pass\n"
         "print('LOADED', sorted(m for m in ('torch', 'cv2') if m in sys.modules), file=sys.stderr)")


def test_planning_commands_import_neither_torch_nor_opencv(tmp_path, demo_dir):
    """samples, probe, config, plan and weights --check on a login node: no GPU stack loaded
    (plan measures flow with OpenCV only when --measure-flow asks, and says so)."""
    import subprocess
    import sys
    cfg = {"dataset": {"name": "light", "format": "csv", "videos": str(demo_dir / "videos"),
                       "classes": str(demo_dir / "classes.csv"), "annotations": "ann.csv",
                       "eval_split": "test", "val_split": None}}
    (tmp_path / "ann.csv").write_text("video,split,labels\n" + "".join(
        f"clip_{i:03d}.mp4,{'train' if i < 4 else 'test'},moving left\n" for i in range(6)))
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(cfg))
    ds = json.dumps({**cfg["dataset"], "annotations": str(tmp_path / "ann.csv")})

    def loaded(*args):
        proc = subprocess.run([sys.executable, "-c", LIGHT, *map(str, args)], cwd=tmp_path,
                              capture_output=True, text=True, env={**__import__("os").environ,
                                                                   "PYTHONPATH": str(ROOT)})
        assert "error" not in proc.stderr.lower(), proc.stderr[-2000:]
        return proc.stderr.strip().splitlines()[-1]
    assert loaded("config", "--configfile", "my.yaml") == "LOADED []"
    assert loaded("samples", "--params", ds, "--out", "s") == "LOADED []"
    assert loaded("probe", "--samples", "s/samples.tsv", "--videos", demo_dir / "videos",
                  "--split", "train", "--shard", "0", "--params", "{}", "--out", "p.tsv") == "LOADED []"
    assert loaded("plan", "--configfile", "my.yaml", "--json", "plan.json") == "LOADED []"
    assert "--measure-flow" in json.loads((tmp_path / "plan.json").read_text())["streams"]["flow"]["source"]
    assert loaded("plan", "--configfile", "my.yaml", "--measure-flow") == "LOADED ['cv2', 'torch']"
    # weights --check on local weights files and classical flow; open_clip's and ptlflow's tag
    # tables live in modules that import torch, so a tag is checked with them
    (tmp_path / "w.pt").write_bytes(b"PK\x03\x04 a torch.save zip")
    (tmp_path / "local.yaml").write_text(yaml.safe_dump({**cfg, "clip": {"model": "demo-tiny-CNN",
                                                                         "pretrained": "w.pt"},
                                                         "flow": {"backend": "dis"}}))
    assert loaded("weights", "--check", "--configfile", "local.yaml") == "LOADED []"


def test_the_students_hours_are_modelled_from_its_arithmetic_at_its_precision(tmp_path):
    """No bench: ViT-B/32, 4.4 GMAC a frame, 3x forward and backward, at half an H100's dense
    float32 peak for the Animal Kingdom preset's float32 student (about 20 hours for 9.7 M
    frames x 10 epochs), bfloat16's peak for `auto`; a bench row timed in another precision is
    not used for it, and the statement says so."""
    from pipeline.config import resolve_config
    from pipeline.plan import rates, read_bench, student_hours, write_bench
    config, _ = resolve_config([ROOT / "configs" / "animal_kingdom.yaml"], {})
    got, said = rates(config, None)
    assert got["student_train"] == pytest.approx(0.5 * 67e12 / (6 * 4.4e9))
    assert "ViT-B-32 4.4 GMAC a frame forward, 3x that forward and backward, in float32" in said
    splits = {"train": {"rows": 9_673_612}, "test": {"rows": 2_456_688}}
    hours = student_hours(config, splits, got)
    assert 19 < hours - 2_456_688 * 10 / got["student"] / 3600 < 23
    auto, _ = resolve_config([ROOT / "configs" / "animal_kingdom.yaml"], {"moclip": {"precision": "auto"}})
    assert rates(auto, None)[0]["student_train"] == pytest.approx(0.5 * 989e12 / (6 * 4.4e9))
    write_bench([{"stage": "student_train", "frames_per_s": 5000.0}], tmp_path / "b.csv",
                "ViT-B-32", "raft", 360, "bfloat16")
    got, said = rates(config, read_bench(tmp_path / "b.csv"))
    assert got["student_train"] == pytest.approx(0.5 * 67e12 / (6 * 4.4e9))
    assert "student_precision 'bfloat16' where this config has 'float32'" in said
    assert rates(auto, read_bench(tmp_path / "b.csv"))[0]["student_train"] == 5000.0
