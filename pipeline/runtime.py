"""The settings a job is given beside its params: speed-only settings (the schema's
``x-runtime`` keys) reach jobs in an environment variable, and a rule's rerun trigger leaves
them out (and keys at a neutral default)."""
from __future__ import annotations

import json
from functools import lru_cache

from .config import schema, section

# Keys added after runs existed, whose default reproduces what those runs did. A rule's rerun
# trigger (its params) leaves such a key out while it has that default, so adding a key to the
# schema re-runs nothing; setting it to anything else re-runs what it changes.
NEUTRAL_DEFAULTS = {"moclip": {"adapter": "default", "val_windows": "centre", "precision": "auto",
                               "model": None, "pretrained": None, "padding": "mask",
                               "window_stride": None,
                               # students trained before it reached them used 32 whatever was set
                               "batch_size": 32},
                    "text": {"description_units": "sentences"},
                    # a head entry's settings (its job's params)
                    "heads": {"weight_decay_1d": True, "learn_scale": True}}

# Speed-only settings (the schema marks them ``x-runtime``: device, decoder, batch sizes of
# frozen models, workers, and flow's lossless storage layout) change how fast a job runs or how
# its rows lie on disk, never what the rows hold. They stay out of the
# rules' params (changing them re-runs nothing) and reach the jobs in this environment variable.
RUNTIME_ENV = "PIPELINE_RUNTIME"


@lru_cache(maxsize=1)
def runtime_keys() -> dict:
    """``{section: (key, ...)}`` of the speed-only settings; section ``""`` is the top level."""
    props = schema()["properties"]
    keys = {"": tuple(k for k, v in props.items() if v.get("x-runtime"))}
    for name, sub in props.items():
        found = tuple(k for k, v in sub.get("properties", {}).items() if v.get("x-runtime"))
        if found:
            keys[name] = found
    return keys


def runtime_settings(config: dict) -> dict:
    """The speed-only settings of a resolved config: what the workflow hands its jobs."""
    top = schema()["properties"]
    return {**{k: config.get(k, top[k].get("default")) for k in runtime_keys()[""]},
            **{name: {k: config[name][k] for k in keys}
               for name, keys in runtime_keys().items() if name}}


def trigger_view(name: str, values: dict) -> dict:
    """A config section as a rule's rerun trigger sees it: without its speed-only keys and
    without the keys at a neutral default (see :data:`NEUTRAL_DEFAULTS`)."""
    drop = set(runtime_keys().get(name, ()))
    neutral = NEUTRAL_DEFAULTS.get(name, {})
    return {k: v for k, v in values.items()
            if k not in drop and not (k in neutral and v == neutral[k])}


def job_runtime() -> dict:
    """The speed-only settings this job was given (:data:`RUNTIME_ENV`; none outside a workflow)."""
    import os
    return json.loads(os.environ.get(RUNTIME_ENV) or "{}")


def with_runtime(name: str, given: dict | str | None, flags: dict | None = None) -> dict:
    """Section ``name`` as a job uses it: ``given`` (its params, dict or JSON), the job's
    speed-only settings over it, and set command-line ``flags`` over those; defaults filled."""
    given = json.loads(given) if isinstance(given, str) else dict(given or {})
    runtime = {k: v for k, v in job_runtime().get(name, {}).items() if v is not None}
    return section(name, {**given, **runtime, **{k: v for k, v in (flags or {}).items() if v is not None}})


def runtime_value(key: str):
    """A top-level speed-only setting (device, decoder) as this job was given it, else the
    schema's default."""
    return job_runtime().get(key, schema()["properties"][key]["default"])
