"""The settings a job is given beside its params: speed-only settings (the schema's
``x-runtime`` keys) reach jobs in an environment variable; the recipes leave them out
(:mod:`pipeline.recipes`)."""
from __future__ import annotations

import json

from .config import schema, section
from .recipes import runtime_keys, settings_of

# Speed-only settings (the schema marks them ``x-runtime``: device, decoder, batch sizes of
# frozen models, workers, and flow's lossless storage layout) change how fast a job runs or how
# its rows lie on disk, never what the rows hold. They stay out of the
# rules' params (changing them re-runs nothing) and reach the jobs in this environment variable.
RUNTIME_ENV = "PIPELINE_RUNTIME"


def runtime_settings(config: dict) -> dict:
    """The speed-only settings of a resolved config: what the workflow hands its jobs."""
    top = schema()["properties"]
    return {**{k: config.get(k, top[k].get("default")) for k in runtime_keys()[""]},
            **{name: {k: config[name][k] for k in keys}
               for name, keys in runtime_keys().items() if name}}


def job_runtime() -> dict:
    """The speed-only settings this job was given (:data:`RUNTIME_ENV`; none outside a workflow)."""
    import os
    return json.loads(os.environ.get(RUNTIME_ENV) or "{}")


def with_runtime(name: str, given: dict | str | None, flags: dict | None = None) -> dict:
    """Section ``name`` as a job uses it: ``given`` (its params, dict or JSON), the job's
    speed-only settings over it, and set command-line ``flags`` over those; defaults filled."""
    given = settings_of(given)
    runtime = {k: v for k, v in job_runtime().get(name, {}).items() if v is not None}
    return section(name, {**given, **runtime, **{k: v for k, v in (flags or {}).items() if v is not None}})


def runtime_value(key: str):
    """A top-level speed-only setting (device, decoder) as this job was given it, else the
    schema's default."""
    return job_runtime().get(key, schema()["properties"][key]["default"])
