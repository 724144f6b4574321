"""Rows reused, not recomputed: the cache of extracted rows (``<cache>/<kind>/<content>.h5``).

Every extraction shard, once published, is hard-linked into the cache (copied where the
filesystem has no hard links, as the log says once). Snakemake deletes a job's old outputs
before the job runs, so the cache is what keeps the rows of a shard being re-made (one video
added to it, a changed shard count, a video that moved split, a trial setting undone). A job
looks up each of its videos by what decides its rows (the file's fingerprint and the store's
settings hash), copies the rows it finds, from the cache or any current shard of the run, and
decodes only the rest. One cache may serve many runs (config ``cache:``); its files are only
ever added, never rewritten, so runs read and write it side by side. Nothing deletes from it
but ``python -m pipeline cache prune`` (pipeline/cache/usage.py).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from glob import glob
from pathlib import Path

import h5py
import numpy as np

from ..layout import EXTRACTED, results_of, shard_path
from ..row_codecs import read_rows, storage_of
from ..store import FeatureWriter, StoreError, decode_attr, incomplete, open_store

log = logging.getLogger("pipeline")


@dataclass
class Source:
    path: Path
    start: int
    stop: int


def _entries(folder: Path):
    return sorted(folder.glob("*.h5")) if folder.is_dir() else []


def read_index(path: Path):
    """(settings, {fingerprint: (start, stop)}) of a pool file, or None if it is unusable."""
    try:
        with open_store(path) as f:
            if incomplete(f, needs=("offsets", "data", "fingerprints")):
                return None
            attrs = {k: decode_attr(v) for k, v in f.attrs.items()}
            offsets = f["offsets"][:]
            prints = [v.decode() if isinstance(v, bytes) else v for v in f["fingerprints"][:]]
    except (StoreError, OSError, KeyError):
        return None
    rows = {fp: (int(offsets[i]), int(offsets[i + 1])) for i, fp in enumerate(prints) if fp}
    return attrs.get("settings_sha256"), rows


def pool_index(pool: Path, settings: str, shards=()) -> dict[str, Source]:
    """Fingerprint -> where its rows lie, over the cache files (and the run's current
    ``shards``) made with ``settings``."""
    found: dict[str, Source] = {}
    for path in [*_entries(pool), *shards]:
        got = read_index(path)
        if got and got[0] == settings:
            for fp, (a, b) in got[1].items():
                found.setdefault(fp, Source(path, a, b))
    return found


def _open(files: dict, path: Path):
    """The job's one read handle on a cache or shard file, or None when it is gone (pruned by
    another job since its index was read: its videos are decoded instead)."""
    if path not in files:
        try:
            files[path] = h5py.File(path, "r")
        except OSError:
            return None
    return files[path]


def copy_rows(writer: FeatureWriter, video_id: str, fingerprint: str, src: Source,
              files: dict) -> np.ndarray:
    """Append a video's rows from ``src`` (open in ``files``) to ``writer``; returns their frame
    indices. Rows kept compressed one per chunk (flow) in the writer's storage are copied as
    stored chunks: no second compression; rows of another storage (a gzip shard into a JPEG-LS
    one) are decoded and stored the writer's way."""
    f = files[src.path]
    a, b = src.start, src.stop
    data = f["data"]
    chunks = None
    if storage_of(f)[0] == writer.storage is not None and data.chunks == writer.chunks \
            and data.chunks[0] == 1:
        chunks = [data.id.read_direct_chunk((i,) + (0,) * (data.ndim - 1)) for i in range(a, b)]
    index = f["frame_index"][a:b]
    writer.add(video_id, index, f["timestamps"][a:b], read_rows(f, a, b), fingerprint,
               stored_chunks=chunks)
    return index


def reuse_rows(probes: list, writers: dict[str, FeatureWriter], pool: Path | None) -> tuple[list, list]:
    """Copy the rows of every probe whose rows the pool holds for all ``writers`` (kind ->
    writer) with the same settings and the same frames; returns (reused, left to decode)."""
    if pool is None or not probes:
        return [], list(probes)
    indexes = {kind: pool_index(Path(pool) / kind, w.settings, run_shards(w.path))
               for kind, w in writers.items()}
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


def run_shards(path: Path) -> list[Path]:
    """The other published shards of this kind of every run beside this one
    (``results/*/features/<kind>/*/shard-*.h5``): runs of other names over the same videos
    copy each other's rows."""
    path, run = Path(path).absolute(), results_of(path)
    if run is None:
        return []  # a shard outside a run's layout (a test, a hand-made file)
    kind = path.parent.parent.name
    return sorted(p for p in run.parent.glob(f"*/features/{kind}/*/shard-*.h5") if p != path)


def _same_frames(probe, sources: dict, files: dict) -> bool:
    """Whether every source holds the rows of the frames the probe plans (and can be read)."""
    for src in sources.values():
        f = _open(files, src.path)
        if f is None or list(f["frame_index"][src.start:src.stop]) != list(probe.sampled):
            return False
    return True


@contextlib.contextmanager
def shard_job(writers: dict[str, FeatureWriter], probes: list, desc: str, progress: bool,
              pool: Path | None):
    """An extraction job's frame: the writers (kind -> writer) open, the videos the pool holds
    copied, the rest handed to the block as ``(todo, stats, done)`` under a progress bar; then
    the videos the block skipped recorded in each shard (the report counts them), the shards
    published and linked into the pool. ``stats["reused"]`` counts the copied videos."""
    from ..features.common import stage_run
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


_SAID: set = set()


def _cached_name(path: Path, pool: Path) -> Path:
    """Where the cache keeps a shard's rows: ``<pool>/<kind>/<content hash>.h5``."""
    from ..store import read_attrs
    attrs = read_attrs(path)
    return Path(pool) / attrs["kind"] / f"{attrs['content_sha256'][:32]}.h5"


def _place(path: Path, target: Path, put=None) -> None:
    """Hard-link (or ``put``) ``path`` at ``target`` through a temporary name and one atomic
    rename: another run never sees half a file."""
    temp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}")
    try:
        (put or os.link)(path, temp)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


USERS = "runs"  # <cache>/runs/<digest>.json: the run folders that put rows into the cache


def register_user(pool: Path, shard: Path) -> None:
    """Record the run folder of ``shard`` among the cache's users (once): ``cache`` shows every
    user and ``cache prune`` keeps what any of them uses, whichever configs it is given."""
    run = results_of(shard)
    if run is None:
        return
    run = run.resolve()
    entry = Path(pool) / USERS / f"{hashlib.sha256(str(run).encode()).hexdigest()[:16]}.json"
    if not entry.exists():
        entry.parent.mkdir(parents=True, exist_ok=True)
        _place(None, entry, lambda _, temp: Path(temp).write_text(json.dumps({"results": str(run)}) + "\n"))


def users(pool: Path) -> list[Path]:
    """The run folders recorded as the cache's users (:func:`register_user`)."""
    found = []
    for entry in sorted((Path(pool) / USERS).glob("*.json")):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            found.append(Path(json.loads(entry.read_text())["results"]))
    return found


def forget_user(pool: Path, results: Path) -> None:
    for entry in (Path(pool) / USERS).glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            if Path(json.loads(entry.read_text())["results"]) == Path(results):
                entry.unlink()


def publish(path: Path, pool: Path | None) -> str | None:
    """Put a published shard's rows into the cache, named by their content hash: a hard link
    (no disk), else a copy, and record its run among the cache's users. Returns "linked",
    "copied" or None (already there)."""
    if pool is None:
        return None
    register_user(pool, path)
    target = _cached_name(path, pool)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and (os.path.samefile(path, target) or read_index(target) is not None):
        return None
    try:
        _place(path, target)
        return "linked"
    except OSError as e:
        if "copy" not in _SAID:
            log.warning("cache %s: no hard links from %s (%s); shards are copied into it, which "
                        "costs their disk twice", pool, path.parent, e.strerror or e)
            _SAID.add("copy")
    _place(path, target, shutil.copyfile)
    return "copied"


def adopt(shards, pool: Path) -> dict:
    """Make sure the cache holds the rows of every current shard (a cache deleted or copied
    without its links, a shard made before the cache existed); a cached copy of a shard is
    turned back into a link to it (a project copied with ``cp -r`` stores its rows twice).
    Returns counts: linked, copied, relinked."""
    counts = {"linked": 0, "copied": 0, "relinked": 0}
    for path in map(Path, shards):
        if read_index(path) is None:
            continue
        register_user(pool, path)
        target = _cached_name(path, pool)
        if target.exists() and not os.path.samefile(path, target) and \
                target.stat().st_size == path.stat().st_size:
            with contextlib.suppress(OSError):
                _place(path, target)
                counts["relinked"] += 1
            continue
        how = publish(path, pool)
        if how:
            counts[how] += 1
    return counts


def adopt_into_cache(results, set_aside: dict, cache) -> list[str]:
    """What a real run does once it holds Snakemake's lock (the Snakefile's ``onstart``, or rule
    cache_adopt when there is nothing else to do): set aside the shards outside the run's plan
    (``set_aside``: path -> why; their rows into the cache, then out of the run) and make sure
    the cache holds the rows of every current shard. Returns console lines."""
    lines = []
    for path, why in set_aside.items():
        path = Path(path)
        if path.parent.parent.name in EXTRACTED and read_index(path) is not None:
            adopt([path], Path(cache))
        path.unlink(missing_ok=True)
        lines.append(f"note: set aside {path} ({why}); its rows stay in the cache")
    shards = [Path(p) for kind in EXTRACTED for p in glob(shard_path(results, kind, "*", "*"))]
    counts = adopt(sorted(shards), Path(cache))
    if any(counts.values()):
        lines.append(f"note: cache {cache}: {counts['linked']} shard(s) hard-linked, "
                     f"{counts['copied']} copied (no hard links there: twice the disk), "
                     f"{counts['relinked']} stored twice made one again")
    return lines
