"""Rows reused, not recomputed: a shard made again copies the rows of videos the run's pool
already holds (same file content, same settings) and decodes only the others."""
import collections
import shutil

import cv2
import h5py
import numpy as np
import pytest
import torch

from pipeline.layout import RunFolder
from pipeline.config import section
from pipeline.features.extract import extract_both
from pipeline.features.flow import extract_flow
from pipeline.cache.reuse import read_index
from pipeline.row_codecs import storage_of
from pipeline.store import FeatureReader
from pipeline.video import probe_video

CPU = torch.device("cpu")
PLAN = {"mode": "uniform", "frames": 6, "max_frames": 64}


@pytest.fixture
def videos(tmp_path, demo_dir):
    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(4):
        shutil.copy(demo_dir / "videos" / f"clip_{i:03d}.mp4", folder / f"v{i}.mp4")
    return folder


def _probes(folder, names):
    return [probe_video(folder / f"{n}.mp4", n, PLAN) for n in names]


@pytest.fixture
def opens(monkeypatch):
    counter, real = collections.Counter(), cv2.VideoCapture

    def counting(path, *args):  # every decoder a stage opens goes through here
        counter[str(path)] += 1
        return real(path, *args)
    monkeypatch.setattr(cv2, "VideoCapture", counting)
    return counter


def _cfgs(micro_clip):
    return (section("clip", {"model": micro_clip, "pretrained": None}),
            section("flow", {"backend": "dis", "work_size": 64, "size": 32}))


def _rows(path) -> dict:
    r = FeatureReader([path])
    return {v: (r.video(v).frame_index.tolist(), r.video(v).data) for v in r.video_ids}


def test_a_remade_shard_copies_known_videos_and_decodes_the_new_one(videos, micro_clip, tmp_path,
                                                                     opens, demo_dir):
    clip_cfg, flow_cfg = _cfgs(micro_clip)
    pool, out = tmp_path / "pool", tmp_path / "features"
    first = _probes(videos, ["v0", "v1", "v2"])
    stats = extract_both(first, out / "c.h5", out / "f.h5", clip_cfg, flow_cfg, CPU, progress=False,
                         reuse=pool)
    assert stats["reused"] == 0 and stats["videos"] == 3
    before = {k: _rows(out / f"{k}.h5") for k in ("c", "f")}
    for k in ("c", "f"):  # Snakemake deletes a job's outputs before it runs again
        (out / f"{k}.h5").unlink()
    shutil.copy(demo_dir / "videos" / "clip_009.mp4", videos / "v3.mp4")
    opens.clear()
    stats = extract_both(_probes(videos, ["v0", "v1", "v2", "v3"]), out / "c.h5", out / "f.h5",
                         clip_cfg, flow_cfg, CPU, progress=False, reuse=pool)
    assert (stats["reused"], stats["videos"]) == (3, 1)
    assert opens == {str(videos / "v3.mp4"): 1}, opens  # the new video only
    for k in ("c", "f"):
        after = _rows(out / f"{k}.h5")
        assert sorted(after) == ["v0", "v1", "v2", "v3"]
        for vid, (index, data) in before[k].items():
            assert after[vid][0] == index and np.array_equal(after[vid][1], data), (k, vid)
    fp = _fingerprint(out / "f.h5", "v0")
    src = next(p for p in (pool / "flow").glob("*.h5") if p.stat().st_nlink == 1 and fp in read_index(p)[1])
    with h5py.File(out / "f.h5") as f, h5py.File(src) as g:
        assert storage_of(f)[0] == "jpegls"  # the default flow.storage
        # the copied flow rows are stored as the cache's are, byte for byte
        row = lambda h: (int(h["offsets"][[v.decode() for v in h["video_ids"][:]].index("v0")]), 0, 0)
        assert f["data"].id.read_direct_chunk(row(f)) == g["data"].id.read_direct_chunk(row(g))


def _fingerprint(path, video):
    with h5py.File(path) as f:
        ids = [v.decode() for v in f["video_ids"][:]]
        return f["fingerprints"][ids.index(video)].decode()


def test_rows_of_another_storage_are_copied_and_stored_the_writers_way(videos, micro_clip, tmp_path):
    """A gzip shard (made before flow.storage, or with it set so) feeds a JPEG-LS shard: the same
    rows, no decode, stored the writer's way; and back."""
    _, flow_cfg = _cfgs(micro_clip)
    pool = tmp_path / "pool"
    probes = _probes(videos, ["v0", "v1"])
    extract_flow(probes, tmp_path / "g.h5", {**flow_cfg, "storage": "gzip"}, CPU, progress=False, reuse=pool)
    stats = extract_flow(probes, tmp_path / "j.h5", flow_cfg, CPU, progress=False, reuse=pool)
    assert stats["reused"] == 2
    stats = extract_flow(probes, tmp_path / "g2.h5", {**flow_cfg, "storage": "gzip"}, CPU,
                         progress=False, reuse=tmp_path / "none")  # decoded: the reference
    for path, storage in (("g.h5", "gzip"), ("j.h5", "jpegls")):
        with h5py.File(tmp_path / path) as f:
            assert storage_of(f)[0] == storage
    assert _rows(tmp_path / "j.h5").keys() == _rows(tmp_path / "g.h5").keys()
    for vid, (index, data) in _rows(tmp_path / "g2.h5").items():
        assert _rows(tmp_path / "j.h5")[vid][0] == index
        assert np.array_equal(_rows(tmp_path / "j.h5")[vid][1], data)


def test_content_not_name_decides(videos, micro_clip, tmp_path, opens, demo_dir):
    """A renamed video is copied under its new id; a file replaced under its name is decoded."""
    _, flow_cfg = _cfgs(micro_clip)
    pool = tmp_path / "pool"
    extract_flow(_probes(videos, ["v0", "v1"]), tmp_path / "a.h5", flow_cfg, CPU, progress=False,
                 reuse=pool)
    (videos / "v0.mp4").rename(videos / "renamed.mp4")
    shutil.copy(demo_dir / "videos" / "clip_010.mp4", videos / "v1.mp4")  # new content, same name
    opens.clear()
    stats = extract_flow(_probes(videos, ["renamed", "v1"]), tmp_path / "b.h5", flow_cfg, CPU,
                         progress=False, reuse=pool)
    assert (stats["reused"], stats["videos"]) == (1, 1)
    assert opens == {str(videos / "v1.mp4"): 1}, opens
    old, new = FeatureReader([tmp_path / "a.h5"]), FeatureReader([tmp_path / "b.h5"])
    assert np.array_equal(old.video("v0").data, new.video("renamed").data)
    assert not np.array_equal(old.video("v1").data, new.video("v1").data)


def test_other_settings_are_not_reused(videos, micro_clip, tmp_path, opens):
    _, flow_cfg = _cfgs(micro_clip)
    pool = tmp_path / "pool"
    probes = _probes(videos, ["v0", "v1"])
    extract_flow(probes, tmp_path / "a.h5", flow_cfg, CPU, progress=False, reuse=pool)
    opens.clear()
    stats = extract_flow(probes, tmp_path / "b.h5", {**flow_cfg, "size": 16}, CPU, progress=False,
                         reuse=pool)
    assert (stats["reused"], stats["videos"]) == (0, 2) and len(opens) == 2
    # a batch size changes no row: reused
    stats = extract_flow(probes, tmp_path / "c.h5", {**flow_cfg, "batch_size": 3}, CPU,
                         progress=False, reuse=pool)
    assert (stats["reused"], stats["videos"]) == (2, 0)


def test_prune_keeps_what_a_run_uses_and_drops_the_rest(videos, micro_clip, tmp_path):
    from pipeline.cache.usage import Usage, prune, unused
    _, flow_cfg = _cfgs(micro_clip)
    pool = tmp_path / "pool"
    a, b = _probes(videos, ["v0", "v1"]), _probes(videos, ["v2"])
    extract_flow(a, tmp_path / "a.h5", flow_cfg, CPU, progress=False, reuse=pool)
    extract_flow(b, tmp_path / "b.h5", flow_cfg, CPU, progress=False, reuse=pool)
    files = sorted((pool / "flow").glob("*.h5"))
    assert len(files) == 2
    (tmp_path / "a.h5").unlink()  # its shard is gone: nothing prunes its rows on its own
    assert sorted((pool / "flow").glob("*.h5")) == files
    settings = read_index(files[0])[0]
    wants_v1 = Usage(RunFolder(str(tmp_path)), pool, rows={("flow", settings, a[1].fingerprint)})
    assert unused(pool, [wants_v1]) and len(unused(pool, [wants_v1])) == 1  # v2's file only
    nobody = Usage(RunFolder(str(tmp_path)), pool)
    lines = prune(pool, [nobody], dry_run=True)
    assert len(list((pool / "flow").glob("*.h5"))) == 2 and lines[-1].startswith("would free")
    prune(pool, [wants_v1], dry_run=False)
    left = list((pool / "flow").glob("*.h5"))
    assert len(left) == 1 and a[1].fingerprint in read_index(left[0])[1]


def test_without_hard_links_the_cache_copies(videos, micro_clip, tmp_path, monkeypatch, caplog):
    import errno
    import os
    _, flow_cfg = _cfgs(micro_clip)

    def no_links(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    monkeypatch.setattr(os, "link", no_links)
    pool = tmp_path / "pool"
    extract_flow(_probes(videos, ["v0", "v1"]), tmp_path / "a.h5", flow_cfg, CPU, progress=False,
                 reuse=pool)
    (tmp_path / "a.h5").unlink()
    stats = extract_flow(_probes(videos, ["v0", "v1"]), tmp_path / "a.h5", flow_cfg, CPU,
                         progress=False, reuse=pool)
    assert (stats["reused"], stats["videos"]) == (2, 0)
    assert "copied into it" in caplog.text



def test_a_size_limit_prunes_the_oldest_rows_and_says_so(videos, micro_clip, tmp_path):
    import os
    from pipeline.cache.usage import Usage, prune
    _, flow_cfg = _cfgs(micro_clip)
    pool = tmp_path / "pool"
    for i, name in enumerate(["v0", "v1", "v2"]):
        extract_flow(_probes(videos, [name]), tmp_path / f"{name}.h5", flow_cfg, CPU, progress=False, reuse=pool)
        (tmp_path / f"{name}.h5").unlink()
    files = sorted((pool / "flow").glob("*.h5"), key=lambda p: p.stat().st_mtime)
    for age, path in enumerate(files):  # oldest first
        os.utime(path, (1_000_000 + age, 1_000_000 + age))
    settings = read_index(files[0])[0]
    wants_all = Usage(RunFolder(str(tmp_path)), pool, rows={("flow", settings, fp) for f in files for fp in read_index(f)[1]})
    size = files[0].stat().st_blocks * 512
    lines = prune(pool, [wants_all], dry_run=False, max_bytes=2 * size + size // 2)
    assert not files[0].exists() and files[1].exists() and files[2].exists()
    assert "oldest over the size limit" in lines[0] and lines[-1].startswith("freed")
