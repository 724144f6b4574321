"""What decides whether outputs are current: a probe shard's members, files that cannot be
current (named while the DAG is planned, never removed then), the summary's out-of-date banner."""
import os

import numpy as np

from pipeline.freshness import shard_members, stale_outputs
from pipeline.store import FeatureWriter

def test_a_summary_is_marked_out_of_date_once_per_reason(tmp_path):
    from pipeline.freshness import OUT_OF_DATE, mark_out_of_date
    summary = tmp_path / "summary.md"
    mark_out_of_date(summary, "nothing to mark")  # no summary yet: nothing written
    assert not summary.exists()
    summary.write_text("# Heads compared\n\n| fusion | 70.00 |\n")
    for why in ("head fusion is being trained again", "head fusion is being trained again",
                "head rgb_only is being trained again"):
        mark_out_of_date(summary, why)
    text = summary.read_text()
    assert text.startswith(OUT_OF_DATE) and text.count("head fusion is being trained") == 1
    assert "head rgb_only" in text and text.endswith("# Heads compared\n\n| fusion | 70.00 |\n")


def test_a_probe_shard_is_decided_by_its_videos_not_their_labels(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (videos / name).write_bytes(b"x" * 10)
    table = tmp_path / "samples.tsv"

    def write(labels_of_a):
        table.write_text("video_id\tpath\tsplit\tshard\tlabels\tspecies\n"
                         f"a\ta.mp4\ttrain\t0\t{labels_of_a}\t\nb\tb.mp4\ttrain\t0\t2\t\n")
        os.utime(table, ns=(time_ns[0], time_ns[0]))
        time_ns[0] += 10**9
    time_ns = [10**18]
    write("1")
    before = shard_members(table, videos, "train", 0)
    write("3")  # a label fix
    assert shard_members(table, videos, "train", 0) == before
    (videos / "b.mp4").write_bytes(b"y" * 11)  # replaced content
    assert shard_members(table, videos, "train", 0) != before


def test_a_same_size_same_mtime_replacement_is_probed_again(tmp_path):
    """cp -p, rsync -a and tar x keep size and mtime: the inode and ctime still tell."""
    import shutil
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(b"x" * 10)
    table = tmp_path / "samples.tsv"
    table.write_text("video_id\tpath\tsplit\tshard\tlabels\tspecies\na\ta.mp4\ttrain\t0\t1\t\n")
    before = shard_members(table, videos, "train", 0)
    assert shard_members(table, videos, "train", 0) == before
    (tmp_path / "new.mp4").write_bytes(b"y" * 10)
    shutil.copystat(videos / "a.mp4", tmp_path / "new.mp4")
    os.replace(tmp_path / "new.mp4", videos / "a.mp4")
    st = (videos / "a.mp4").stat()
    assert st.st_size == 10
    assert shard_members(table, videos, "train", 0) != before


def _shard(path, kind="clip", model="m", complete=True):
    w = FeatureWriter(path, kind, (4,), np.float16, {"model": model, "sampling": {"mode": "uniform"}})
    w.add("v", [0], [0.0], np.zeros((1, 4)))
    if complete:
        w.close()
    else:
        w.abort()


def test_files_that_cannot_be_current_are_named(tmp_path):
    cfg = {"clip": {"model": "m"}, "sampling": {"mode": "uniform"},
           "flow": {"backend": "dis", "model": "raft", "step": 1, "size": 32, "work_size": 64,
                    "bound": 4, "half": False}}
    feat = tmp_path / "features" / "clip"
    _shard(feat / "train" / "shard-0.h5")
    _shard(feat / "train" / "shard-1.h5", model="other")
    _shard(feat / "train" / "shard-7.h5")
    (feat / "test").mkdir(parents=True)
    (feat / "test" / "shard-0.h5").write_text("not hdf5")
    good = feat / "test" / "shard-1.h5"
    _shard(good)
    with open(good, "r+b") as f:
        f.truncate(good.stat().st_size // 2)
    _shard(tmp_path / "features" / "motion" / "train" / "shard-0.h5", kind="motion")
    before = sorted((p, p.stat().st_size) for p in tmp_path.rglob("*"))
    stale = stale_outputs(tmp_path, cfg, ["train", "test"], 2)
    assert sorted((p, p.stat().st_size) for p in tmp_path.rglob("*")) == before  # reads only
    found = {str(p.relative_to(tmp_path)): why for p, why, _ in stale}
    assert {str(p.relative_to(tmp_path)) for p, _, in_plan in stale if not in_plan} == \
        {"features/clip/train/shard-7.h5"}
    assert set(found) == {"features/clip/train/shard-1.h5", "features/clip/train/shard-7.h5",
                          "features/clip/test/shard-0.h5", "features/clip/test/shard-1.h5",
                          "features/motion/train/shard-0.h5"}, found
    assert "its student" in found["features/motion/train/shard-0.h5"]
    assert "made with model='other'" in found["features/clip/train/shard-1.h5"]
    assert "not in the run's plan" in found["features/clip/train/shard-7.h5"]
    assert "not a readable HDF5" in found["features/clip/test/shard-0.h5"]
