"""The HDF5 feature store: round trip, windows, provenance, atomic publish, refusals."""
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from conftest import ROOT
from pipeline.store import FeatureReader, FeatureWriter, StoreError, read_attrs


def write(path, videos, kind="clip", attrs=None):
    with FeatureWriter(path, kind, (4,), np.float16, attrs or {"model": "m", "weights": "w"}) as w:
        for vid, n in videos:
            rows = np.arange(n * 4, dtype=np.float32).reshape(n, 4) + hash(vid) % 7
            w.add(vid, np.arange(n) * 2, np.arange(n) / 10, rows)
    return path


def test_round_trip_windows_and_iteration(tmp_path):
    a = write(tmp_path / "a.h5", [("v1", 3), ("v2", 5)])
    b = write(tmp_path / "b.h5", [("v3", 1)])
    r = FeatureReader([a, b], kind="clip", expect={"model": "m"})
    assert r.video_ids == ["v1", "v2", "v3"] and len(r) == 3 and r.n_rows("v2") == 5
    v2 = r.video("v2")
    assert v2.data.shape == (5, 4) and v2.data.dtype == np.float16
    assert list(v2.frame_index) == [0, 2, 4, 6, 8]
    w = r.window("v2", 1, 3)
    assert list(w.frame_index) == [2, 4, 6] and np.array_equal(w.data, v2.data[1:4])
    assert r.window("v2", 4, 10).data.shape[0] == 1  # clipped at the video's end
    assert [x.video_id for x in r] == ["v1", "v2", "v3"]
    attrs = read_attrs(a)
    assert attrs["kind"] == "clip" and attrs["complete"] and attrs["producer"].startswith("pipeline")


@pytest.mark.parametrize("block_rows", [1, 4, 6, 1000])
def test_iteration_in_blocks_gives_every_video_exactly(tmp_path, block_rows):
    a = write(tmp_path / "a.h5", [("v1", 3), ("v2", 5), ("v3", 2), ("v4", 1)])
    b = write(tmp_path / "b.h5", [("v5", 4), ("v6", 3)])
    r = FeatureReader([a, b])
    r.block_bytes = block_rows * 4 * 2  # rows of 4 float16
    got = list(r)
    assert [x.video_id for x in got] == ["v1", "v2", "v3", "v4", "v5", "v6"]
    for x in got:
        ref = FeatureReader([a, b]).video(x.video_id)
        assert np.array_equal(x.data, ref.data) and np.array_equal(x.frame_index, ref.frame_index)
        assert np.array_equal(x.timestamps, ref.timestamps)


def test_refuses_wrong_kind_model_and_unknown_video(tmp_path):
    a = write(tmp_path / "a.h5", [("v1", 2)])
    with pytest.raises(StoreError, match="holds 'clip' features, expected 'flow'"):
        FeatureReader([a], kind="flow")
    with pytest.raises(StoreError, match="made with model='m', but this needs 'ViT-B-32'"):
        FeatureReader([a], expect={"model": "ViT-B-32"})
    with pytest.raises(StoreError, match="'nope' is in none"):
        FeatureReader([a]).video("nope")
    with pytest.raises(StoreError, match="also in"):
        FeatureReader([a, write(tmp_path / "b.h5", [("v1", 1)])])


def test_refuses_truncated_other_schema_and_missing(tmp_path):
    a = write(tmp_path / "a.h5", [("v1", 200)])
    data = a.read_bytes()
    (tmp_path / "t.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreError, match="truncated or corrupt"):
        FeatureReader([tmp_path / "t.h5"])
    with h5py.File(a, "a") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(StoreError, match="schema version 99"):
        FeatureReader([a])
    with pytest.raises(StoreError, match="not found"):
        FeatureReader([tmp_path / "none.h5"])


def test_writer_killed_midway_leaves_no_final_file(tmp_path):
    out = tmp_path / "shard.h5"
    script = textwrap.dedent(f"""
        import os, signal, numpy as np, sys
        sys.path.insert(0, {str(ROOT)!r})
        from pipeline.store import FeatureWriter
        w = FeatureWriter({str(out)!r}, "flow", (2, 8, 8), np.uint8, {{}})
        w.add("v1", [0], [0.0], np.zeros((1, 2, 8, 8), np.uint8))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -9
    assert not out.exists()
    assert (tmp_path / "shard.h5.partial").exists()
    # An exception inside the writer removes the partial file too.
    with pytest.raises(RuntimeError):
        with FeatureWriter(out, "clip", (4,), np.float32, {}) as w:
            w.add("v", [0], [0.0], np.zeros((1, 4)))
            raise RuntimeError("disk full")
    assert not out.exists() and not (tmp_path / "shard.h5.partial").exists()


def test_partial_file_given_as_input_is_refused(tmp_path):
    w = FeatureWriter(tmp_path / "x.h5", "clip", (4,), np.float32, {})
    w.add("v", [0], [0.0], np.zeros((1, 4)))
    w._f.flush()
    with pytest.raises(StoreError, match="incomplete|truncated"):
        FeatureReader([tmp_path / "x.h5.partial"])
    w.abort()


@pytest.mark.parametrize("fault", ["whole", "no complete mark", "index past the data",
                                   "data missing"])
def test_every_reader_judges_a_shard_whole_or_not_alike(tmp_path, fault):
    """The reader, the cache's index and the workflow's freshness check apply one
    completeness check (pipeline.store.incomplete): they accept and refuse the same files."""
    import shutil
    from pipeline.cache.reuse import read_index
    from pipeline.freshness import stale_reason
    path = write(tmp_path / "a.h5", [("v1", 3), ("v2", 5)])
    with FeatureWriter(tmp_path / "b.h5", "clip", (4,), np.float16, {"model": "m"}) as w:
        w.add("v9", [0], [0.0], np.zeros((1, 4)), "sha256:" + "1" * 64)
    shutil.copy(tmp_path / "b.h5", path)  # fingerprints: the cache indexes rows by them
    with h5py.File(path, "a") as f:
        if fault == "no complete mark":
            del f.attrs["complete"]
        elif fault == "index past the data":
            f["offsets"][-1] = 7
        elif fault == "data missing":
            del f["data"]
    refused = []
    try:
        FeatureReader([path])
    except StoreError:
        refused.append("reader")
    if read_index(path) is None:
        refused.append("cache")
    if stale_reason(path, {}) is not None:
        refused.append("freshness")
    assert refused == ([] if fault == "whole" else ["reader", "cache", "freshness"]), refused
