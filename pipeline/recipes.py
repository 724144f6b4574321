"""What decides each output, written once: its *recipe*.

A recipe is the settings that decide an output's content (a stage's config section less its
speed-only keys, the sampling, the models' identities), as the config words them. It is a
rule's params (Snakemake's rerun trigger: compared as text, so every recipe is rendered here,
keys sorted), what an output records about itself (a shard's ``settings`` attribute, a
student's ``meta``, a head's ``entry``) and what every check compares: the freshness of a
shard, the student's and the heads' input checks, ``plan`` and the cache. The cache keys rows
on the recipe *resolved* (:func:`settings_sha256`: the weights' content, the precision and the
device type actually used), so alike rows of the same weights at another path are shared and
rows of another device type are kept apart.

Changing what a recipe holds re-runs every output made before: a key added later stays out of
the recipe while it holds the value that reproduces what older outputs did
(:data:`NEUTRAL_DEFAULTS`, the one table that maps older recipes to today's). A change of the
*code* that changes an output for the same settings raises its kind's version
(:data:`RECIPE_VERSIONS`): the recipe then holds it, and what an earlier version made is made
again, saying why. Ground floor: plain dicts, no config validation, no torch.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import yaml

SCHEMA_PATH = Path(__file__).parent / "resources" / "config.schema.yaml"

# Keys added after runs existed, whose value here reproduces what those runs did: a recipe
# leaves such a key out while it has that value, so adding a key re-runs nothing; setting it
# to anything else re-runs what it changes. (``heads``: a head entry's settings.)
NEUTRAL_DEFAULTS = {"moclip": {"adapter": "default", "val_windows": "centre", "precision": "auto",
                               "model": None, "pretrained": None, "padding": "mask",
                               "window_stride": None,
                               # students trained before it reached them used 32 whatever was set
                               "batch_size": 32},
                    "text": {"description_units": "sentences"},
                    "heads": {"weight_decay_1d": True, "learn_scale": True}}

# Each kind of output's recipe version: raise one when a change of the code changes what that
# kind holds for the same settings (a fixed rendering, a new rounding), so that every output an
# earlier version made is made again. Version 1 is each recipe as outputs recorded it before
# recipes had versions; it is not written, so those outputs stay current.
RECIPE_VERSIONS = {"clip": 1, "flow": 1, "student": 1, "text": 1, "head": 1}
VERSION_KEY = "recipe"

# What finished runs recorded beside their settings, written as they wrote it so that they stay
# current (Snakemake re-runs a job whose params text changed); with NEUTRAL_DEFAULTS, the one
# table that maps recorded params to recipes. ENTRY_KEY: a head entry's type, group and varied
# values (:func:`head_recipe`). RENDERING_MARK: students rendered per frame before that
# rendering became ptlflow's exactly carry no such mark and were trained again (version 2 of the
# per_frame student, in effect). The extraction rules' ``--reuse`` (:func:`recorded_reuse`).
ENTRY_KEY = "_entry"
RENDERING_MARK = "rendering"

CLIP_IDENTITY = ("model", "pretrained")  # what of clip: the student and the text bank depend on
# A flow shard's attributes a student is trained on: its export refuses flow made otherwise.
STUDENT_FLOW_KEYS = ("model", "weights", "backend", "bound", "size", "step", "work_size", "quantisation")
# A feature shard's attributes a head's inputs must agree on across splits.
HEAD_INPUT_KEYS = {"clip": ("model", "weights"), "motion": ("model", "teacher", "student", "embedding")}
# How flow rows are stored (features.flow.quantise does it): a flow shard records it, and one
# stored otherwise (before zero flow was exact) is stale.
FLOW_QUANTISATION = "uint8 = 128 + round(clip(flow, -bound, bound) / bound * 127)"
# A shard's attributes that are not part of its rows' resolved recipe: speed (batch size), the
# config's words for the settings (``settings``: a path, "auto"), whose resolved identity is
# recorded beside them, and the rows' layout on disk (``storage``, ``row_shape``).
NOT_SETTINGS = ("batch_size", "weights_source", "producer", "settings", "storage", "row_shape")


@lru_cache(maxsize=1)
def schema_file() -> dict:
    """The config schema as the file says it, read once per process (LibYAML's loader where
    installed: every job and every parse of the workflow reads it)."""
    return yaml.load(SCHEMA_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@lru_cache(maxsize=1)
def runtime_keys() -> dict:
    """``{section: (key, ...)}`` of the speed-only settings (the schema marks them
    ``x-runtime``); section ``""`` is the top level."""
    props = schema_file()["properties"]
    keys = {"": tuple(k for k, v in props.items() if v.get("x-runtime"))}
    for name, sub in props.items():
        found = tuple(k for k, v in sub.get("properties", {}).items() if v.get("x-runtime"))
        if found:
            keys[name] = found
    return keys


def trigger_view(name: str, values: dict) -> dict:
    """A config section as a recipe holds it: without its speed-only keys and without the keys
    at a neutral default (:data:`NEUTRAL_DEFAULTS`)."""
    drop = set(runtime_keys().get(name, ()))
    neutral = NEUTRAL_DEFAULTS.get(name, {})
    return {k: v for k, v in values.items()
            if k not in drop and not (k in neutral and v == neutral[k])}


def versioned(kind: str, recipe: dict) -> dict:
    """A recipe of ``kind`` with its version (:data:`RECIPE_VERSIONS`; version 1 unwritten)."""
    version = RECIPE_VERSIONS[kind]
    return {**recipe, VERSION_KEY: version} if version > 1 else recipe


def recorded_reuse(default_cache: str) -> str:
    """The extraction rules' ``--reuse`` param: always the run's default cache folder, as
    before ``cache:`` existed (the jobs take the cache from $PIPELINE_CACHE, which wins)."""
    return default_cache


def settings_of(recipe: dict | str | None) -> dict:
    """A section's settings from its recipe (a rule's params, dict or JSON): without the
    recipe's version and the student's rendering marker, which are no settings."""
    recipe = json.loads(recipe) if isinstance(recipe, str) else dict(recipe or {})
    return {k: v for k, v in recipe.items() if k not in (VERSION_KEY, RENDERING_MARK)}


def compact_json(value) -> str:
    """A rule's params value: keys sorted, no spaces (the text Snakemake records and compares)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def section_params(config: dict, section: str, keys=None, drop=(), kind: str | None = None) -> str:
    """A config section (or its ``keys``, less ``drop``) as a rule's params; ``kind``: the
    output it is the recipe of, whose version it then holds."""
    values = {k: v for k, v in trigger_view(section, config[section]).items()
              if (keys is None or k in keys) and k not in drop}
    return compact_json(versioned(kind, values) if kind else values)


def row_settings(kind: str, config: dict) -> dict:
    """The recipe of an extracted stream's rows (``clip`` or ``flow``): its own section and the
    sampling. The extraction rules' params are its sections (:func:`row_params`), a shard
    records it whole (attribute ``settings``), freshness and ``plan`` compare it."""
    return {kind: versioned(kind, trigger_view(kind, config[kind])),
            "sampling": trigger_view("sampling", config["sampling"] or {})}


def row_params(config: dict, kind: str, section: str) -> str:
    """One section of :func:`row_settings` as an extraction rule's params."""
    return compact_json(row_settings(kind, config)[section])


def student_params(config: dict) -> str:
    """The student's recipe as its rules' params: its section (not the export choice) and the
    teacher (and :data:`RENDERING_MARK` for a per_frame student)."""
    moclip = {k: v for k, v in trigger_view("moclip", config["moclip"]).items() if k != "export"}
    if config["moclip"]["flow_norm"] == "per_frame":
        moclip[RENDERING_MARK] = "ptlflow flow_to_rgb"
    return json.dumps({"moclip": versioned("student", moclip), "clip": {k: config["clip"][k] for k in CLIP_IDENTITY}},
                      sort_keys=True)


def head_recipe(head) -> str:
    """A head entry's recipe (a resolved :class:`~pipeline.heads.entry.Head`) as its job's
    params: its settings as the config gives them and, for an entry that is not simply its
    type's name, its type, group and varied values (under :data:`ENTRY_KEY`: :func:`entry_of`
    reads them back)."""
    given = versioned("head", trigger_view("heads", head.given))
    if head.type != head.name or head.varies:
        given[ENTRY_KEY] = {"type": head.type, "group": head.group, "varies": head.varies}
    return json.dumps(given, sort_keys=True)


def entry_of(params: dict, entry: dict | None = None) -> tuple[dict, dict]:
    """A head job's (settings, entry) from its params (:func:`head_recipe`), or from an
    ``entry`` given by hand (type, group, varies) beside bare settings."""
    given = settings_of(params)
    return given, given.pop(ENTRY_KEY, None) or dict(entry or {})


def expected_attrs(config: dict) -> dict:
    """Per kind, what a current shard records: its recipe (:func:`row_settings`) and the
    attributes its readers check (all that shards written before ``settings`` existed are
    compared by)."""
    clip, flow = config["clip"], config["flow"]
    classical = flow["backend"] != "ptlflow"
    return {"clip": {"kind": "clip", "settings": row_settings("clip", config),
                     "model": clip["model"], "sampling": config["sampling"]},
            "flow": {"kind": "flow", "settings": row_settings("flow", config),
                     "backend": flow["backend"],
                     "model": flow["backend"] if classical else flow["model"],
                     "step": flow["step"], "size": flow["size"], "work_size": flow["work_size"],
                     "bound": float(flow["bound"]), "half": flow["half"],
                     "quantisation": FLOW_QUANTISATION, "sampling": config["sampling"]},
            "motion": {"kind": "motion"}, "flow_clip": {"kind": "motion"}}


def differs(recorded: dict, expected: dict, says: str = "the config says") -> str | None:
    """The one comparison: why what an output recorded is not the recipe ``expected`` (its
    ``settings`` section by section, and attributes), in the config's words, or None. ``says``
    names who expects it (a reader: "the student was trained on")."""
    for key, want in expected.items():
        got = _decoded(recorded.get(key), want)
        if key == "settings" and got is None:
            continue  # made before outputs recorded it: compared by the other attributes
        if key == "settings":
            for section, values in want.items():
                mine = got.get(section) or {}
                if mine.get(VERSION_KEY, 1) != values.get(VERSION_KEY, 1):
                    return (f"made by version {mine.get(VERSION_KEY, 1)} of the {section} recipe; "
                            f"this pipeline makes version {values.get(VERSION_KEY, 1)}")
                for k in sorted(set(values) | set(mine)):
                    if mine.get(k) != values.get(k):
                        return f"made with {section}.{k}={mine.get(k)!r}, {says} {values.get(k)!r}"
        elif got != want:
            return f"made with {key}={got!r}, {says} {want!r}"
    return None


def settings_sha256(kind: str, row_shape, dtype, attrs: dict) -> str:
    """The recipe resolved, as one hash (model identity, sampling, sizes, precision, device
    type): what the cache keys a video's rows on; :data:`NOT_SETTINGS` are left out."""
    import numpy as np
    decided = {k: v for k, v in attrs.items() if k not in NOT_SETTINGS}
    if RECIPE_VERSIONS.get(kind, 1) > 1:  # rows an earlier version computed are not reused
        decided[VERSION_KEY] = RECIPE_VERSIONS[kind]
    text = json.dumps({"kind": kind, "row_shape": [int(s) for s in row_shape],
                       "dtype": np.dtype(dtype).str, **decided}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _decoded(got, want):
    got = got.decode() if isinstance(got, bytes) else got
    if isinstance(got, str) and got[:1] in "{[" and not isinstance(want, str):
        got = json.loads(got)
    return got
