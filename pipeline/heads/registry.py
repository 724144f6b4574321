"""The head types (:data:`HEAD_TYPES`: the one place that names the built-in ones) and the
heads a run trains, by name: ``heads.<name>: {type: <head>, grid: {...}, seeds: [...],
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

from .user import HeadTypeError, is_user_type

ENTRY_KEYS = ("type", "grid", "seeds")  # what an entry says about itself, not its head's settings
# What the trainer and run_head read besides the schema's trainer keys: settings of the built-in
# heads (text, species, open vocabulary). A user head's setting of one of these names would
# never reach its class, so it is refused by name.
BUILT_IN_ONLY = ("softmax_weight", "species_weight", "anchor_weight", "base_to_novel", "novel_seed",
                 "extra_classes", "pooling", "weighting", "species_train")

# every model key a head takes (the trainer's keys are in entry.TRAIN_DEFAULTS); the config
# schema lists, per head type (heads.<type>), exactly these keys, so a key meant for another
# head is refused instead of ignored.
_TRANSFORMER = {"layers": 2, "attention_heads": 8, "width": None, "ff_mult": 4, "dropout": 0.1}
_MOTION = {"motion_source": "student"}  # heads that read motion: the student's, or flow_clip

# The built-in head types, the one place that names them. ``streams``: what the head reads
# (``motion_setting``: a setting that adds the motion stream); ``model``: what builds it (a
# module of pipeline.heads and a name in it); ``prompt``: built from the class text bank and
# scored against it (it can score new classes); ``trains``: it has parameters to fit;
# ``frames_baseline``: what the per-class analysis measures motion's gain against; ``paper``:
# the published method it reproduces (report.compare_with); ``defaults``: its settings.
HEAD_TYPES = {
    "fusion": {"streams": ("rgb", "motion"), "model": "models.FusionHead", "paper": "vimoclip",
               "defaults": {**_MOTION, **_TRANSFORMER, "layers": 4, "lr": 1e-4, "weight_decay": 0.1,
                            "mode": "cross", "positions": False, "variant": "default",
                            "standardise": True}},
    "interleave": {"streams": ("rgb", "motion"), "model": "models.InterleaveHead",
                   "paper": "animalmotionclip",
                   "defaults": {**_MOTION, **_TRANSFORMER, "lr": 1e-4, "weight_decay": 0.1,
                                "classifier": "mlp", "aggregation": "dense", "semi_dense_k": 2,
                                "sparse_n": 3, "temporal": "steps", "windows": 3,
                                "standardise": True}},
    "rgb_only": {"streams": ("rgb",), "model": "models.TemporalHead", "frames_baseline": True,
                 "defaults": {**_TRANSFORMER, "lr": 1e-4, "weight_decay": 0.1, "positions": True,
                              "variant": "default", "standardise": True}},
    "motion_only": {"streams": ("motion",), "model": "models.TemporalHead",
                    "defaults": {**_MOTION, **_TRANSFORMER, "lr": 1e-4, "weight_decay": 0.1,
                                 "positions": True, "variant": "default", "standardise": True}},
    "rgb_linear": {"streams": ("rgb",), "model": "models.LinearProbe",
                   "defaults": {"lr": 1e-3, "weight_decay": 1e-4, "standardise": True}},
    "motion_linear": {"streams": ("motion",), "model": "models.LinearProbe",
                      "defaults": {**_MOTION, "lr": 1e-3, "weight_decay": 1e-4, "standardise": True}},
    "zero_shot": {"streams": ("rgb",), "model": "prompt.build_zero_shot", "prompt": True,
                  "trains": False, "paper": "clip",
                  "defaults": {"epochs": 0, "lr": 0.0, "weight_decay": 0.0, "pooling": "mean",
                               "weighting": "rows"}},
    "prompt": {"streams": ("rgb",), "motion_setting": "motion", "model": "prompt.build_prompt",
               "prompt": True, "paper": "animal_clip",
               "defaults": {"layers": 1, "attention_heads": 8, "dropout": 0.1, "lr": 1e-3,
                            "weight_decay": 0.05, "motion": False, "refine": "mlp",
                            "conditioning": True, "species": "classifier", "relation_prior": True,
                            "video_species": False, "text_mode": "bank", "n_ctx": 4,
                            "softmax_weight": 0.5, "species_weight": 0.5, "anchor_weight": 1.0,
                            "max_frames": 64, "learn_scale": True, "base_to_novel": None, "novel_seed": 0, "label_smoothing": 0.1,
                            "pooling": "mean", "weighting": "rows", "species_train": "predicted",
                            **_MOTION}},
}
BASELINE = next(t for t, h in HEAD_TYPES.items() if not h.get("trains", True))  # every run's
DEFAULT_HEAD = "fusion"  # what predict uses unless told


def head_type(name: str) -> dict:
    """A built-in head type's entry of :data:`HEAD_TYPES` (a clear error for an unknown name)."""
    if name not in HEAD_TYPES:
        raise HeadTypeError(f"unknown head type {name!r}; built-in types: {', '.join(HEAD_TYPES)}, "
                            f"or a module:Class of your own (docs/heads.md)")
    return HEAD_TYPES[name]


def is_prompt(name: str) -> bool:
    """Built from the class text bank and scored against it (it can take new classes)."""
    return HEAD_TYPES.get(name, {}).get("prompt", False)  # a user's module:Class is no key


def trains(name: str) -> bool:
    return is_user_type(name) or HEAD_TYPES.get(name, {}).get("trains", True)


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
    if not any(entry_type(n, e) == BASELINE for n, e in heads.items()):
        heads[BASELINE] = {}
    return expand(heads)


def config_trainer_keys() -> tuple:
    """The trainer's keys of every head (the schema's trainer_keys, standardise, motion_source):
    read from the schema file itself (pipeline.config imports this module)."""
    from ..recipes import schema_file
    defs = schema_file()["definitions"]
    return (*defs["trainer_keys"], *defs["standardise_key"], *defs["motion_source_key"])
