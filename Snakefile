"""Motion-aware CLIP features and action classifiers for animal videos.

Thin on purpose: validate the config, include one rule file per stage group, name the targets.
Every computation lives in the `pipeline` package (rules call `python -m pipeline <command>`).
"""
import json
import shlex
import sys
import time

from snakemake.utils import min_version

min_version("8.0")

sys.path.insert(0, workflow.basedir)
from pipeline.config import ConfigError, resolve_config
from pipeline.runtime import RUNTIME_ENV, runtime_settings

# No `configfile:` directive: Snakemake would deep-merge a user's --configfile into the demo's
# config.yaml and leak the demo's settings into every key the user did not repeat. Instead a
# user's files replace config.yaml, and the keys they leave out take the schema's defaults
# (`python -m pipeline config --configfile FILE` prints the result, from the same resolver).
# the --config values alone (config itself holds the --configfile values too)
_overrides = getattr(getattr(workflow, "config_settings", None), "config", None)
try:
    _resolved, _ = resolve_config(workflow.overwrite_configfiles,
                                  overrides=dict(config if _overrides is None else _overrides))
except ConfigError as e:
    sys.exit(f"error: {e}")
config.clear()
config.update(_resolved)


include: "workflow/rules/common.smk"


# Shards that cannot be current are only *named* while the DAG is planned (a dry run, lint or
# summary changes no file): those in the plan are made again (forcerun, in common.smk)
# and a real run makes them again; those outside it are set aside into the cache at onstart
# (or by rule cache_adopt), once this run holds Snakemake's lock, so a second invocation never
# touches a running one's files.
for _path, _why in STALE.items():
    print(f"note: {_path}: {_why}; a run makes it again", file=sys.stderr)
for _path, _why in OUT_OF_PLAN.items():
    print(f"note: {_path}: {_why}; a run sets it aside into the cache ({CACHE})", file=sys.stderr)
if getattr(workflow, "is_main_process", True):
    from pipeline.freshness import checkpoint_note
    if _note := checkpoint_note(RESULTS, _rows, annotation_inputs()):
        print(f"note: {_note}", file=sys.stderr)


# Speed-only settings (the schema's x-runtime keys) reach the jobs in the environment, not in
# the rules' params, so changing the device or a batch size re-runs nothing.
RUNTIME = json.dumps(runtime_settings(config), sort_keys=True)
# Rules run `python -m pipeline`: the package is found in this workflow's own folder, so a
# conda env (--software-deployment-method conda) needs only the dependencies, not the package.
# GPU jobs running side by side each claim their own device from a pool in the run's folder.
_pool = RUN.devices
_prefix = (f"export PYTHONPATH={shlex.quote(workflow.basedir)}${{PYTHONPATH:+:$PYTHONPATH}}; "
           f"export {RUNTIME_ENV}={shlex.quote(RUNTIME)}; "
           f"export PIPELINE_DEVICE_POOL={shlex.quote(_pool)}; "
           f"export PIPELINE_CACHE={shlex.quote(CACHE)}; ")  # where rows are, not what they are
shell.prefix(_prefix.replace("{", "{{").replace("}", "}}"))  # Snakemake formats the prefix


include: "workflow/rules/cache.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/moclip.smk"
include: "workflow/rules/heads.smk"


rule all:
    default_target: True
    input:
        rules.features.input,
        rules.motion.input if USES_STUDENT else [],
        rules.report.output,
        ADOPT,


onstart:
    # holding the lock, a real run: set aside the shards outside the plan, and make sure the
    # cache holds the rows of every current shard (deleted, or copied without its links)
    from pipeline.cache.reuse import adopt_into_cache
    for _line in adopt_into_cache(RESULTS, OUT_OF_PLAN, CACHE):
        print(_line, file=sys.stderr)
    # One GPU job per visible GPU on a workstation unless --resources gpu=N says otherwise (the
    # rules ask for `gpu`, which nothing limits until a total is given); CPU jobs go on beside
    # them. A cluster executor's jobs get their own GPUs from the scheduler.
    _plugin = getattr(workflow, "executor_plugin", None)
    _local = _plugin is None or not _plugin.common_settings.non_local_exec
    if _local and "gpu" not in workflow.global_resources and hasattr(workflow, "register_resource"):
        from pipeline.devices import visible_gpus
        _n = visible_gpus()
        if _n:
            workflow.register_resource("gpu", _n)
            # register_resource updates the scheduler's `resources`, which Snakemake 9's scheduler
            # does not read (it reads `global_resources`): without this the limit is not kept
            _scheduler = getattr(workflow, "scheduler", None)
            if _scheduler is not None and isinstance(getattr(_scheduler, "global_resources", None), dict):
                _scheduler.global_resources["gpu"] = _n
            print(f"note: at most {_n} GPU job(s) at once ({_n} visible GPU(s)); "
                  f"--resources gpu=N to change", file=sys.stderr)
