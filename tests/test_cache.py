"""The cache is a cache: each change to a finished run re-runs what it decides and nothing else,
and nothing stale stays in place (real Snakemake runs on a small csv data set of demo videos)."""
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from conftest import copy_workflow, demo_config, snakemake
from pipeline.annotations import read_samples, shard_of

pytestmark = pytest.mark.slow
RES = "results/cache"
N = 12  # videos: train 0-7, test 8-11 (no val split: fewer jobs per re-run)


def _label(demo_dir, i):
    import csv
    with open(demo_dir / "annotations.csv") as f:
        return {r["video"]: r["labels"] for r in csv.DictReader(f)}[f"clip_{i:03d}.mp4"]


def _annotations(work, demo_dir, ids, relabel=None):
    rows = ["video,split,labels"]
    for i in ids:
        split = "train" if i < 8 or i >= 100 else "test"
        label = (relabel or {}).get(i) or _label(demo_dir, i % 100)
        rows.append(f"v{i:03d}.mp4,{split},{label}")
    (work / "ann.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory, demo_dir):
    """A finished run: 12 demo videos listed in a csv, 2 shards per split, one quick head."""
    work = copy_workflow(tmp_path_factory.mktemp("cache"))
    videos = work / "videos"
    videos.mkdir()
    for i in range(N):
        shutil.copy(demo_dir / "videos" / f"clip_{i:03d}.mp4", videos / f"v{i:03d}.mp4")
    _annotations(work, demo_dir, range(N))
    cfg = demo_config()
    cfg["dataset"] = {"name": "cache", "format": "csv", "videos": "videos", "annotations": "ann.csv",
                      "classes": str(demo_dir / "classes.csv"), "eval_split": "test",
                      "val_split": None}
    cfg["text"] = {}
    cfg["moclip"] = {**cfg["moclip"], "epochs": 1}
    cfg["heads"] = {"motion_linear": {"epochs": 2, "frames": 12}}
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(work)
    return work


def jobs(proc) -> list[str]:
    """The rules of the jobs a (real, not dry) run executed."""
    return re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):", proc.stdout + proc.stderr, re.M)


def decoded(work, since: float) -> dict:
    """split-shard -> (reused, decoded) of the extraction logs written after ``since``."""
    out = {}
    for log in (work / RES / "logs" / "extract").glob("*.log"):
        if log.stat().st_mtime >= since:
            last = log.read_text().strip().splitlines()[-1]
            m = re.search(r"reused: (\d+) videos, decoded: (\d+) videos$", last)
            assert m, (log, last)
            out[log.stem] = (int(m[1]), int(m[2]))
    return out


def rerun(work, *targets):
    """Run again (by default up to the features: what these tests are about, and the student
    and heads after them are the slow part); returns the run and its extraction counts."""
    since = time.time() - 0.01
    time.sleep(1.1)  # mtimes of the next writes are visibly newer
    proc = snakemake(work, *(targets or ("features",)))
    return proc, decoded(work, since)


def test_a_finished_run_has_nothing_to_do(run):
    out = snakemake(run, "-n")
    assert "Nothing to be done" in out.stdout + out.stderr


def test_a_label_fix_re_extracts_nothing(run, demo_dir):
    import csv
    old = next(r for r in read_samples(run / RES / "samples.tsv") if r["video_id"] == "v003")
    with open(demo_dir / "classes.csv") as f:
        names = [r["name"] for r in csv.DictReader(f)]
    new = next(n for n in names if n != _label(demo_dir, 3))
    _annotations(run, demo_dir, range(N), relabel={3: new})
    proc, extracted = rerun(run)
    ran = set(jobs(proc))
    assert not ran & {"probe", "extract", "clip", "flow"}, ran
    assert "samples" in ran and not extracted
    out = snakemake(run, "-n").stdout  # what the labels still change: the student, heads, report
    pending = {line.split()[0] for line in out.split("Job stats:")[1].split("\n\n")[0].splitlines()[3:]
               if line.strip() and not line.startswith("total")}
    assert {"moclip_train", "head", "report"} <= pending and not pending & {"probe", "extract"}, pending
    now = next(r for r in read_samples(run / RES / "samples.tsv") if r["video_id"] == "v003")
    assert now["labels"] != old["labels"]


def test_adding_a_video_decodes_that_video_only(run, demo_dir):
    shutil.copy(demo_dir / "videos" / "clip_020.mp4", run / "videos" / "v100.mp4")
    _annotations(run, demo_dir, list(range(N)) + [100])
    proc, extracted = rerun(run)
    shard = shard_of("v100", 2)
    assert list(extracted) == [f"train-{shard}"], extracted
    assert extracted[f"train-{shard}"][1] == 1 and extracted[f"train-{shard}"][0] >= 1
    assert jobs(proc).count("probe") == 1 and jobs(proc).count("extract") == 1


def test_replacing_a_video_under_its_name_re_extracts_it(run, demo_dir):
    target = run / "videos" / "v010.mp4"
    shutil.copy(demo_dir / "videos" / "clip_021.mp4", target)
    proc, extracted = rerun(run)
    assert list(extracted) == [f"test-{shard_of('v010', 2)}"] and \
        list(extracted.values())[0][1] == 1, extracted
    os.utime(target)  # touched, same content: probed again, nothing extracted
    proc, extracted = rerun(run)
    assert "probe" in jobs(proc) and not extracted


def test_removing_and_renaming_decode_nothing(run, demo_dir):
    (run / "videos" / "v009.mp4").rename(run / "videos" / "v109.mp4")  # now a train video
    _annotations(run, demo_dir, [i for i in range(N) if i not in (5, 9)] + [100, 109])
    proc, extracted = rerun(run)
    moved = {f"train-{shard_of('v005', 2)}", f"train-{shard_of('v109', 2)}",
             f"test-{shard_of('v009', 2)}"}
    assert set(extracted) == moved and all(d == 0 for _, d in extracted.values()), extracted


def test_damaged_shards_are_made_again_alone(run):
    """Truncated in place, replaced by a text file, made by another model: the next run makes
    these shards again, and only these."""
    import h5py
    feat = run / RES / "features"
    truncated, text, other = feat / "clip/test/shard-0.h5", feat / "flow/test/shard-1.h5", \
        feat / "clip/train/shard-1.h5"
    n_videos = {}
    for path in (truncated, text, other):
        with h5py.File(path) as f:
            n_videos[path] = len(f["video_ids"])
    os.truncate(truncated, truncated.stat().st_size // 2)  # in place: its pooled link too
    text.unlink()
    text.write_text("not a feature file\n")
    copy = other.with_name("copy.h5")
    shutil.copy(other, copy)
    with h5py.File(copy, "a") as f:
        f.attrs["model"] = "ViT-L-14"
    copy.replace(other)
    proc, extracted = rerun(run)
    for path in (truncated, text, other):
        assert f"removed {path.relative_to(run)}" in proc.stderr, proc.stderr[-2000:]
    assert jobs(proc).count("extract") == 3
    # a shard damaged in place is decoded again; a new file in its place leaves the pooled
    # rows intact, and they are copied (a fused job copies a video only if both kinds are pooled)
    assert extracted == {"test-0": (0, n_videos[truncated]), "test-1": (n_videos[text], 0),
                         "train-1": (n_videos[other], 0)}, extracted


def test_a_killed_student_retraining_leaves_nothing_stale(run):
    """Change the student's settings, kill its re-training (SIGKILL), run again: it re-trains."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["moclip"]["epochs"] = 3
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    student = run / RES / "models" / "moclip" / "student.pt"
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2"], cwd=run,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log, start = run / RES / "logs" / "moclip_train.log", time.time()
    deadline = start + 300
    while time.time() < deadline and not (log.exists() and log.stat().st_mtime > start
                                          and "epoch 1:" in log.read_text()):
        time.sleep(0.5)  # this run's training, one epoch in
    subprocess.run(["pkill", "-KILL", "-f", "pipeline moclip-train"])
    proc.wait(timeout=120)
    assert not student.exists()
    summary = (run / RES / "reports" / "summary.md").read_text()
    assert summary.startswith("> **Out of date.**") and "motion student" in summary
    again = snakemake(run)
    ran = jobs(again)
    assert "moclip_train" in ran and "moclip_export" in ran and "report" in ran, ran
    assert student.exists()
    assert not (run / RES / "reports" / "summary.md").read_text().startswith("> **Out of date")
    # a student that goes missing takes its motion features with it
    student.unlink()
    again = snakemake(run)
    assert "moclip_train" in jobs(again) and "its student" in again.stderr


def test_a_new_shard_count_copies_every_row(run):
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["shards"] = 3
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc, extracted = rerun(run)
    assert len(extracted) == 6 and all(d == 0 for _, d in extracted.values()), extracted
    left = sorted(p.name for p in (run / RES / "features" / "clip" / "train").glob("*.h5"))
    assert left == ["shard-0.h5", "shard-1.h5", "shard-2.h5"]
    pool = list((run / RES / "features" / ".reuse" / "clip").glob("*.h5"))
    assert pool and all(p.stat().st_nlink == 2 for p in pool), "orphans left after a finished run"
