"""The published protocols a summary row may be set beside. Each is a paper's number, the data
set it was published on, and the preset (``configs/<preset>.yaml``) that follows the released
code: what decides the result is the preset's resolved values (its head entry, and the run's
sampling, models, student and text; the head is the type whose ``paper`` it is in the
registry). A row is cited only when its settings are those; otherwise
the summary names the settings that differ."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from .recipes import runtime_keys

PROTOCOLS = (
    {"paper": "vimoclip", "format": "animal_kingdom", "preset": "animal_kingdom",
     "cite": "ViMoCLIP (micro mAP; 77.09 on Animal Kingdom)",
     "sections": ("sampling", "clip", "flow", "moclip")},
    {"paper": "animal_clip", "format": "animal_kingdom_species", "preset": "animal_kingdom_species",
     "cite": "Animal-CLIP (trained and tested on the true species, as the paper)",
     "sections": ("sampling", "clip", "text")},
    {"paper": "animal_clip", "format": "mammalnet", "preset": "mammalnet_animal_clip",
     "cite": "Animal-CLIP (MammalNet composition split, true genus, as the paper)",
     "sections": ("sampling", "clip", "text")},
    {"paper": "animal_clip", "format": "lote", "preset": "lote_animal_clip",
     "cite": "Animal-CLIP (LoTE-Animal, true species, as the paper)",
     "sections": ("sampling", "clip", "text")},
)
# What of dataset: decides the protocol (the paths are the user's own)
DATASET_KEYS = ("format", "multilabel", "val_split", "eval_split", "segments", "species.relation_from")
SHOWN = 6  # differences named in a summary cell; the rest counted


def protocol_for(paper: str, dataset_format: str | None) -> dict | None:
    """The protocol of ``paper`` on this data set format, or None (no number published there)."""
    return next((p for p in PROTOCOLS if p["paper"] == paper and p["format"] == dataset_format), None)


def run_view(config: dict) -> dict:
    """What of a resolved run config a protocol compares (the report job is given it): the
    dataset keys above and the sections every protocol reads, without speed-only keys."""
    view = {"dataset": {k: _get(config["dataset"], k) for k in DATASET_KEYS}}
    for name in sorted({s for p in PROTOCOLS for s in p["sections"]}):
        view[name] = {k: v for k, v in (config.get(name) or {}).items() if k not in runtime_keys().get(name, ())}
    return view


def differences(protocol: dict, settings: dict, run: dict, presets: Path) -> list[str]:
    """``key (this run's value; the protocol's)`` for each deciding setting of a row (its head
    entry's resolved ``settings`` and the run's :func:`run_view`) that is not the preset's."""
    from .heads.entry import head_params
    from .heads.registry import HEAD_TYPES
    head = next(t for t, h in HEAD_TYPES.items() if h.get("paper") == protocol["paper"])
    want_settings, want_run = _preset(str(Path(presets) / f"{protocol['preset']}.yaml"), head)
    given = _flat(head_params(head, settings))
    out = []
    for key, want in _flat(head_params(head, want_settings)).items():
        if key != "seed" and not _same(given.get(key), want):
            out.append(f"{key} ({_fmt(given.get(key))}; {_fmt(want)})")
    got = _flat(run)
    for key, want in _flat(want_run).items():
        if key.split(".")[0] in protocol["sections"] + ("dataset",) and not _same(got.get(key), want):
            out.append(f"{key} ({_fmt(got.get(key))}; {_fmt(want)})")
    return out


def cell(protocol: dict, diffs: list[str]) -> str:
    """The summary's ``compare with`` cell: the citation, or the settings that keep it away."""
    if not diffs:
        return protocol["cite"]
    more = f" and {len(diffs) - SHOWN} more" if len(diffs) > SHOWN else ""
    return (f"none: {protocol['cite'].split(' (')[0]}'s protocol (configs/{protocol['preset']}.yaml) "
            f"differs in {', '.join(diffs[:SHOWN])}{more} (this run's value; theirs)")


@lru_cache(maxsize=8)
def _preset(path: str, head: str) -> tuple[dict, dict]:
    from .config import load_config
    from .heads.entry import run_heads
    config = load_config(path)
    entry = next(h for h in run_heads(config).values() if h.type == head)
    return entry.given, run_view(config)


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = (d or {}).get(part) if isinstance(d, dict) else None
    return d


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _same(got, want) -> bool:
    # a file the preset names (its own placeholder path) is the user's: set or not is what counts
    if isinstance(want, str) and want.startswith("/"):
        return got is not None
    if isinstance(want, (int, float)) and isinstance(got, (int, float)) and not isinstance(want, bool):
        return float(got) == float(want)
    return (list(got) if isinstance(got, tuple) else got) == want


def _fmt(value) -> str:
    return "null" if value is None else str(value)
