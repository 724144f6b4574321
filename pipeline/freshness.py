"""What decides whether a stage's outputs are current, for the workflow to build its DAG from.

Snakemake re-runs a job when an input is newer or its params changed. The rules feed it what
really decides each output: a probe shard re-runs when its videos (ids, paths, file size, mtime,
inode and ctime) change, not when a label does; an extraction shard re-runs when its probe
table's content changes, not when the table is merely rewritten. Shards that cannot be current
(damaged, made by another model) are *forced* in the DAG, never touched while it is planned: a
look (dry run, lint, summary) changes no file, and only a real run, holding Snakemake's lock,
replaces them (their rows are in the cache). Light on purpose: the DAG is built without torch or
OpenCV.
"""
from __future__ import annotations

import csv
import hashlib
import os
import time
from functools import lru_cache
from glob import glob
from pathlib import Path

from .layout import EXTRACTED, shard_path
from .recipes import differs, expected_attrs


def _digest(parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()[:32]


@lru_cache(maxsize=4)
def _members(samples_tsv: str, mtime_ns: int) -> dict:
    out: dict = {}
    with open(samples_tsv, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f, delimiter="\t"):
            out.setdefault((r["split"], int(r["shard"])), []).append((r["video_id"], r["path"]))
    return out


def shard_members(samples_tsv, videos, split: str, shard: int) -> str:
    """Digest of what a probe shard reads: its videos' ids and paths, and each file's size,
    mtime, inode and ctime (a file replaced under its name is probed again, even with its size
    and mtime kept by ``cp -p`` or ``rsync -a``; a copy re-reads its bytes, it decodes nothing:
    the probe's content fingerprint then says whether its features must be made again). Labels
    are not in it."""
    path = Path(samples_tsv)
    rows = _members(str(path), path.stat().st_mtime_ns).get((split, int(shard)), [])
    parts = []
    for vid, rel in sorted(rows):
        try:
            st = os.stat(Path(videos) / rel)
            stamp = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}:{st.st_ctime_ns}"
        except OSError:
            stamp = "missing"
        parts += [vid, rel, stamp]
    return _digest(parts)


def file_digest(path) -> str:
    """A file's content hash: a table rewritten with the same content keeps its digest."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:32]


def stale_reason(path, expect: dict) -> str | None:
    """Why an existing feature shard cannot be current, or None: not HDF5, truncated,
    incomplete, or made otherwise than ``expect`` (:func:`pipeline.recipes.expected_attrs`:
    its recipe, and the attributes the readers check)."""
    import h5py
    from .store import incomplete
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            if why := incomplete(f, needs=("offsets", "data")):
                return why
    except OSError as e:
        return f"not a readable HDF5 file ({str(e).splitlines()[0][:80]})"
    return differs(attrs, expect)


OUT_OF_DATE = "> **Out of date.**"


def summary_out_of_date(summary) -> str | None:
    """Why ``summary`` carries the out-of-date banner (a head or student job marked it and did
    not finish: failed, killed, or its entry since removed), or None."""
    summary = Path(summary)
    if summary.is_file() and summary.read_text()[:len(OUT_OF_DATE)] == OUT_OF_DATE:
        return "marked out of date by a job that did not finish (failed, killed, or its entry removed)"
    return None


def mark_out_of_date(summary, why: str) -> None:
    """Put a banner on top of an existing summary that a job is re-making one of its inputs,
    so that numbers of older inputs are never shown as current (the report rule rewrites the
    file whole when the run finishes)."""
    summary = Path(summary)
    if not summary.is_file():
        return
    text = summary.read_text()
    reasons = []
    if text.startswith(OUT_OF_DATE):
        head, _, text = text.partition("\n\n")
        reasons = [line[2:] for line in head.splitlines()[1:] if line.startswith("> ")]
    line = f"{why} (since {time.strftime('%Y-%m-%d %H:%M')})"
    if not any(r.split(" (since")[0] == why for r in reasons):
        reasons.append(line)
    banner = "\n".join([f"{OUT_OF_DATE} The rows below come from older inputs: re-run "
                        f"snakemake to bring them up to date."] + [f"> {r}" for r in reasons])
    partial = summary.with_name(f"{summary.name}.{os.getpid()}.partial")  # heads run side by side
    partial.write_text(banner + "\n\n" + text)
    os.replace(partial, summary)


def stale_outputs(results, config: dict, splits, shards: int) -> list[tuple[Path, str, bool]]:
    """Feature shards of a run folder that cannot be current: ``(path, why, in_plan)``. In the
    plan: damaged, made with other settings than the config's, or motion features whose student
    is gone (a real run makes them again: the workflow forces their jobs). Outside it: a split
    or shard number the config no longer has (a real run sets them aside into the cache,
    pipeline.cache.reuse.adopt_into_cache). Reads, never writes."""
    results = Path(results)
    student = results / "models" / "moclip" / "student.pt"
    found = []
    for kind, expect in expected_attrs(config).items():
        plan = {Path(shard_path(results, kind, s, k)) for s in splits for k in range(shards)}
        for path in sorted(map(Path, glob(shard_path(results, kind, "*", "*")))):
            if path not in plan:
                found.append((path, f"not in the run's plan ({len(list(splits))} splits x "
                                    f"{shards} shards)", False))
            elif kind == "motion" and not student.is_file():  # Snakemake would keep it
                found.append((path, f"its student ({student}) is gone", True))
            elif why := stale_reason(path, expect):
                found.append((path, why, True))
    return found


def cache_gaps(results, cache) -> list[Path]:
    """The run's extracted shards whose rows the cache lacks (a cache deleted or new, a project
    copied): a run fills them in (pipeline.cache.reuse.adopt_into_cache). Reads, never writes."""
    from .store import read_attrs
    gaps = []
    for path in sorted(Path(p) for kind in EXTRACTED for p in glob(shard_path(results, kind, "*", "*"))):
        try:
            content = str(read_attrs(path).get("content_sha256") or "")[:32]
        except Exception:  # noqa: BLE001 - an unreadable shard is the freshness check's to report
            continue
        if content and not (Path(cache) / path.parent.parent.name / f"{content}.h5").exists():
            gaps.append(path)
    return gaps


def checkpoint_note(results, rows: list[dict], inputs) -> str | None:
    """What a dry run cannot know behind the samples and probe checkpoints, said with the
    number that matters: how many listed videos a real run could decode at most. None when the
    samples stage will not run again (its inputs are older than samples.tsv, no video is new)."""
    samples = Path(results) / "samples.tsv"
    if not samples.is_file() or not rows:
        return None
    made = samples.stat().st_mtime
    newer = any(Path(f).is_file() and Path(f).stat().st_mtime > made for f in inputs)
    known = set()
    for table in glob(shard_path(results, "probe", "*", "*")):
        with open(table, newline="", encoding="utf-8") as f:
            known |= {r["video_id"] for r in csv.DictReader(f, delimiter="\t")}
    new = sum(r["video_id"] not in known for r in rows)
    if not newer and not new:
        return None
    return (f"samples and probe are checkpoints, so a dry run lists every job after them; a real "
            f"run decodes at most {new} of {len(rows)} listed videos (those new to the run's "
            f"probe tables; the others only if their files changed) and re-runs only the shards "
            f"whose videos changed")
