"""The heads a run trains, by name: ``heads.<name>: {type: <head>, grid: {...}, seeds: [...],
...settings}``. A name that is a head type needs no ``type`` (``fusion: {}``). ``type`` is a
built-in head or a user's ``torch.nn.Module``, named ``package.module:ClassName`` or
``path/to/file.py:ClassName`` (docs/heads.md has the contract). ``grid`` (lists of values of
some settings) and ``seeds`` expand an entry into one named entry per combination, one job
each. Light at import: the workflow builds its DAG from it (a user type is imported there, to
stop a run at start when it cannot be used).
"""
from __future__ import annotations

import itertools
import re

from .streams import streams
from .user import HeadTypeError, check_user_head, is_user_type

ENTRY_KEYS = ("type", "grid", "seeds")  # what an entry says about itself, not its head's settings


def entry_type(name: str, entry: dict | None) -> str:
    return (entry or {}).get("type") or name


def _fmt(value) -> str:
    text = "-".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text)


def expand(heads: dict) -> dict[str, dict]:
    """name -> {"type", "settings", "group", "varies"}: every entry, its grid and seeds expanded
    (``fusion.lr-0.0001.seed-1``); ``group`` is the entry's name in the config, ``varies`` the
    values that tell its expansions apart."""
    out: dict[str, dict] = {}
    for name, entry in heads.items():
        entry = dict(entry or {})
        head_type = entry_type(name, entry)
        settings = {k: v for k, v in entry.items() if k not in ENTRY_KEYS}
        grid, seeds = entry.get("grid") or {}, entry.get("seeds")
        keys = sorted(grid)
        combos = list(itertools.product(*(grid[k] for k in keys))) if keys else [()]
        for values in combos:
            for seed in (seeds if seeds else [None]):
                varies = dict(zip(keys, values)) | ({"seed": seed} if seeds else {})
                sub = ".".join([name] + [f"{k}-{_fmt(v)}" for k, v in varies.items()])
                if sub in out:
                    raise HeadTypeError(f"heads.{name}: its expansion {sub!r} is named twice")
                out[sub] = {"type": head_type, "settings": {**settings, **varies}, "group": name,
                            "varies": varies}
    return out


def run_entries(config: dict) -> dict[str, dict]:
    """The entries a run trains and reports: the expanded ``heads:``, and CLIP's zero-shot
    classifier, every run's baseline, named or not."""
    heads = dict(config["heads"])
    if not any(entry_type(n, e) == "zero_shot" for n, e in heads.items()):
        heads["zero_shot"] = {}
    return expand(heads)


def motion_sources(config: dict, where: str = ".") -> set[str]:
    """Where the run's motion streams come from: ``student`` (the distilled MoCLIP, whose
    training and export run only then) and/or ``flow_clip`` (the frozen CLIP on flow images)."""
    return {e["settings"].get("motion_source", "student") for e in run_entries(config).values()
            if streams(e["type"], e["settings"], where)[1]}


def check_entries(config: dict, where: str = ".") -> dict[str, dict]:
    """The run's entries, every user type imported and its constructor checked (the run stops
    at start, naming the entry)."""
    entries = run_entries(config)
    for name, e in entries.items():
        if is_user_type(e["type"]):
            check_user_head(name, e["type"], e["settings"], where)
    return entries
