"""``python -m pipeline cache``: what the cache of extracted rows holds, what the runs use, and
the one way anything is deleted from it (``cache prune``).

A cache entry (``<cache>/<kind>/<content>.h5``, pipeline/cache/reuse.py) is *used* by a run
when it is one of the run's current shards (a hard link to it, or a copy), or when it holds rows
(a video fingerprint with a settings hash) that the run's shards or probe tables name and no
other kept entry holds. The runs counted are the configs given and every run folder the cache
records as a user (each run that put rows into it). Light: h5py only, no torch.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from ..layout import EXTRACTED, RunFolder


@dataclass
class Usage:
    """What one run (its :class:`~pipeline.layout.RunFolder`) uses of a cache."""
    run: RunFolder
    cache: Path
    rows: set = field(default_factory=set)  # (kind, settings, fingerprint) the run wants
    contents: set = field(default_factory=set)  # (kind, content name) of its current shards


@dataclass
class Entry:
    path: Path
    kind: str
    bytes: int
    shared: bool  # a hard link of a current shard: deleting it frees nothing
    mtime: float
    settings: str | None
    fingerprints: tuple


def usage_of(config: dict, workdir: Path = Path(".")) -> Usage:
    """What one config's run uses, read from its shards and probe tables."""
    folder = RunFolder.of_config(config, workdir)
    cache = Path(config.get("cache") or folder.default_cache)
    return usage_at(folder, cache if cache.is_absolute() else workdir / cache)


def usage_at(folder: RunFolder, cache: Path) -> Usage:
    """What the run in ``folder`` uses of ``cache``: its current shards and the rows its shards
    and probe tables name."""
    from .reuse import read_index
    from ..store import read_attrs
    run = Usage(folder, Path(cache))
    probed = set()
    for table in folder.shards("probe"):
        with open(table, newline="", encoding="utf-8") as f:
            probed |= {r.get("fingerprint") for r in csv.DictReader(f, delimiter="\t")} - {None, ""}
    for kind in EXTRACTED:
        settings = set()
        for path in folder.shards(kind):
            got = read_index(Path(path))
            if got is None:
                continue
            settings.add(got[0])
            run.rows |= {(kind, got[0], fp) for fp in got[1]}
            run.contents.add((kind, read_attrs(path)["content_sha256"][:32]))
        run.rows |= {(kind, s, fp) for s in settings for fp in probed}
    return run


def with_users(cache: Path, runs: list[Usage]) -> tuple[list[Usage], list[Path]]:
    """``runs`` and every other run the cache records as a user (pipeline/cache/reuse.py),
    and the recorded run folders that are gone."""
    from .reuse import users
    given = {Path(r.run.path).resolve() for r in runs}
    more, gone = [], []
    for results in users(cache):
        if results.resolve() in given:
            continue
        (more.append(usage_at(RunFolder(str(results)), cache)) if results.is_dir() else gone.append(results))
        given.add(results.resolve())
    return runs + more, gone


def entries(cache: Path) -> list[Entry]:
    from .reuse import read_index
    out = []
    for kind in EXTRACTED:
        for path in sorted((Path(cache) / kind).glob("*.h5")):
            st = path.stat()
            got = read_index(path)
            out.append(Entry(path, kind, st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size,
                             st.st_nlink > 1, st.st_mtime, got[0] if got else None,
                             tuple(got[1]) if got else ()))
    return out


def unused(cache: Path, runs: list[Usage], max_bytes: int | None = None) -> list[tuple[Entry, str]]:
    """The entries no run uses (with why), then, over ``max_bytes`` of the cache's own disk,
    the oldest of the rest."""
    items = entries(cache)
    contents = set().union(*(r.contents for r in runs)) if runs else set()
    wanted = set().union(*(r.rows for r in runs)) if runs else set()
    kept, covered, gone = [], set(), []
    for e in items:  # the runs' current shards first: they are there anyway
        if (e.kind, e.path.stem) in contents:
            kept.append(e)
            covered |= {(e.kind, e.settings, fp) for fp in e.fingerprints}
    for e in sorted((e for e in items if e not in kept), key=lambda e: -e.mtime):
        mine = {(e.kind, e.settings, fp) for fp in e.fingerprints}
        if e.settings is None:
            gone.append((e, "unreadable"))
        elif mine & wanted - covered:
            kept.append(e)
            covered |= mine
        else:
            gone.append((e, "no known run uses its rows"))
    if max_bytes is not None:  # never a current shard's file: the shard holds its rows anyway
        spare = [e for e in kept if not e.shared and (e.kind, e.path.stem) not in contents]
        own = sum(e.bytes for e in kept if not e.shared)
        for e in sorted(spare, key=lambda e: e.mtime):
            if own <= max_bytes:
                break
            gone.append((e, f"oldest over the size limit ({max_bytes / 1e9:g} GB)"))
            own -= e.bytes
    return gone


def describe(cache: Path, runs: list[Usage], gone: list[Path] = ()) -> str:
    items = entries(cache)
    own = sum(e.bytes for e in items if not e.shared)
    shared = sum(e.bytes for e in items if e.shared)
    free = sum(e.bytes for e, _ in unused(cache, runs) if not e.shared)
    lines = [f"cache {cache}: {len(items)} file(s), {_gb(own)} of its own disk, {_gb(shared)} "
             f"shared with shards (hard links, no extra disk)"]
    for kind in EXTRACTED:
        n = [e for e in items if e.kind == kind]
        lines.append(f"  {kind}: {len(n)} file(s), {sum(len(e.fingerprints) for e in n)} video rows")
    for r in runs:
        mine = [e for e in items if (e.kind, e.path.stem) in r.contents]
        lines.append(f"  run {r.run.name} ({r.run.path}): {len(r.contents)} current shard(s), "
                     f"{len(mine)} of them in the cache")
    lines += [f"  run folder {g}: recorded as a user, gone (prune forgets it)" for g in gone]
    lines.append(f"  `cache prune` would free {_gb(free)} (what none of these runs uses)")
    return "\n".join(lines)


def prune(cache: Path, runs: list[Usage], dry_run: bool, max_bytes: int | None = None,
          gone: list[Path] = ()) -> list[str]:
    from .reuse import forget_user
    lines, freed = [], 0
    for results in gone:
        lines.append(f"{'would forget' if dry_run else 'forgot'} run folder {results} (gone)")
        if not dry_run:
            forget_user(cache, results)
    for e, why in unused(cache, runs, max_bytes):
        freed += 0 if e.shared else e.bytes
        lines.append(f"{'would delete' if dry_run else 'deleted'} {e.path} ({_gb(e.bytes)}): {why}")
        if not dry_run:
            e.path.unlink(missing_ok=True)
    lines.append(f"{'would free' if dry_run else 'freed'} {freed:,} bytes ({_gb(freed)})")
    return lines


def _gb(n: float) -> str:
    return f"{n / 1e9:.3f} GB" if n >= 1e7 else f"{n / 1e6:.2f} MB"

