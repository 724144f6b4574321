"""Rows reused, not recomputed: the run's pool of extracted rows (``features/.reuse/<kind>/``).

Every extraction shard, once published, is hard-linked into the pool. Snakemake deletes a job's
old outputs before the job runs, so the pool is what keeps the rows of a shard being re-made
(one video added to it, a changed shard count, a video that moved split). A job looks up each
of its videos by what decides its rows (the file's fingerprint and the store's settings hash),
copies the rows it finds, from any shard of the run, and decodes only the rest.

A pool file whose shard is gone (its link count is 1) is deleted by :func:`prune_pool` once no
current video wants its rows (see the Snakefile's ``onsuccess``). Filesystems without hard
links get no pool: re-made shards are then decoded again, as the log says.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..store import FeatureWriter, StoreError, decode_attr, open_store

log = logging.getLogger("pipeline")


@dataclass
class Source:
    path: Path
    start: int
    stop: int


def _entries(folder: Path):
    return sorted(folder.glob("*.h5")) if folder.is_dir() else []


def _read_index(path: Path):
    """(settings, {fingerprint: (start, stop)}) of a pool file, or None if it is unusable."""
    try:
        with open_store(path) as f:
            attrs = {k: decode_attr(v) for k, v in f.attrs.items()}
            if not attrs.get("complete") or "fingerprints" not in f or "offsets" not in f:
                return None
            offsets = f["offsets"][:]
            if offsets[-1] != f["data"].shape[0]:
                return None
            prints = [v.decode() if isinstance(v, bytes) else v for v in f["fingerprints"][:]]
    except (StoreError, OSError, KeyError):
        return None
    rows = {fp: (int(offsets[i]), int(offsets[i + 1])) for i, fp in enumerate(prints) if fp}
    return attrs.get("settings_sha256"), rows


def pool_index(pool: Path, settings: str) -> dict[str, Source]:
    """Fingerprint -> where its rows lie, over the pool files made with ``settings``."""
    found: dict[str, Source] = {}
    for path in _entries(pool):
        got = _read_index(path)
        if got and got[0] == settings:
            for fp, (a, b) in got[1].items():
                found.setdefault(fp, Source(path, a, b))
    return found


def copy_rows(writer: FeatureWriter, video_id: str, fingerprint: str, src: Source,
              files: dict) -> np.ndarray:
    """Append a video's rows from ``src`` to ``writer``; returns their frame indices. Rows kept
    compressed one per chunk (flow) are copied as stored chunks: no second compression."""
    if src.path not in files:
        files[src.path] = h5py.File(src.path, "r")
    f = files[src.path]
    a, b = src.start, src.stop
    data = f["data"]
    chunks = None
    if data.compression and data.chunks and data.chunks[0] == 1 and \
            data.chunks == writer.chunks and data.compression == writer.compression:
        chunks = [data.id.read_direct_chunk((i,) + (0,) * (data.ndim - 1)) for i in range(a, b)]
    index = f["frame_index"][a:b]
    writer.add(video_id, index, f["timestamps"][a:b], data[a:b], fingerprint, stored_chunks=chunks)
    return index


def reuse_rows(probes: list, writers: dict[str, FeatureWriter], pool: Path | None) -> tuple[list, list]:
    """Copy the rows of every probe whose rows the pool holds for all ``writers`` (kind ->
    writer) with the same settings and the same frames; returns (reused, left to decode)."""
    if pool is None or not probes:
        return [], list(probes)
    indexes = {kind: pool_index(Path(pool) / kind, w.settings) for kind, w in writers.items()}
    reused, rest, files = [], [], {}
    try:
        for p in probes:
            sources = {kind: idx.get(p.fingerprint) for kind, idx in indexes.items()}
            if not p.fingerprint or not all(sources.values()) or not _same_frames(p, sources, files):
                rest.append(p)
                continue
            for kind, w in writers.items():
                copy_rows(w, p.video_id, p.fingerprint, sources[kind], files)
            reused.append(p)
    finally:
        for f in files.values():
            f.close()
    return reused, rest


def _same_frames(probe, sources: dict, files: dict) -> bool:
    for src in sources.values():
        if src.path not in files:
            try:
                files[src.path] = h5py.File(src.path, "r")
            except OSError:  # pruned by another job since the index was read: decode it
                return False
        if list(files[src.path]["frame_index"][src.start:src.stop]) != list(probe.sampled):
            return False
    return True


@contextlib.contextmanager
def shard_job(writers: dict[str, FeatureWriter], probes: list, desc: str, progress: bool,
              pool: Path | None):
    """An extraction job's frame: the writers (kind -> writer) open, the videos the pool holds
    copied, the rest handed to the block as ``(todo, stats, done)`` under a progress bar; then
    the videos the block skipped recorded in each shard (the report counts them), the shards
    published and linked into the pool. ``stats["reused"]`` counts the copied videos."""
    from .common import stage_run
    with contextlib.ExitStack() as stack:
        for w in writers.values():
            stack.enter_context(w)
        reused, todo = reuse_rows(probes, writers, pool)
        with stage_run(todo, desc, progress) as (stats, done):
            yield todo, stats, done
        for w in writers.values():
            w.record("skipped", [list(f) for f in stats["failed"]])
    stats["reused"] = len(reused)
    for w in writers.values():
        publish(w.path, pool)


_NO_LINKS: list = []


def publish(path: Path, pool: Path | None) -> None:
    """Hard-link a published shard into the pool, named by its content hash."""
    if pool is None:
        return
    from ..store import read_attrs
    attrs = read_attrs(path)
    folder = Path(pool) / attrs["kind"]
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{attrs['content_sha256'][:32]}.h5"
    temp = folder / f".{target.name}.{os.getpid()}"
    try:
        temp.unlink(missing_ok=True)
        os.link(path, temp)
        # replaces an entry of the same name, which may be a damaged or orphaned copy
        os.replace(temp, target)
    except OSError as e:
        if not _NO_LINKS:
            log.warning("no reuse pool: %s cannot hard-link into %s (%s); a shard made again "
                        "is decoded again", path.parent, folder, e.strerror or e)
        _NO_LINKS.append(True)


def prune_pool(pool: Path, wanted: set[str] | None) -> list[Path]:
    """Delete the pool files that no shard links to (link count 1) and whose rows no current
    video wants: ``wanted`` are the fingerprints of the current probe tables, and rows also held
    by a linked pool file with the same settings are not wanted from an orphan. ``wanted`` None
    (the run is not complete) deletes nothing. Returns what was deleted."""
    if wanted is None:
        return []
    gone = []
    for folder in (p for p in Path(pool).iterdir() if p.is_dir()) if Path(pool).is_dir() else ():
        entries = [(p, p.stat().st_nlink, _read_index(p)) for p in _entries(folder)]
        linked = {(idx[0], fp) for _, n, idx in entries if n > 1 and idx for fp in idx[1]}
        current = {idx[0] for _, n, idx in entries if n > 1 and idx}
        for path, n, idx in entries:
            if n > 1:
                continue
            keep = idx is not None and idx[0] in current and any(
                fp in wanted and (idx[0], fp) not in linked for fp in idx[1])
            if not keep:
                path.unlink(missing_ok=True)
                gone.append(path)
    return gone
