"""Motion-aware CLIP features and action classifiers for animal videos.

Thin on purpose: validate the config, include one rule file per stage group, name the targets.
Every computation lives in the `pipeline` package (rules call `python -m pipeline <command>`).
"""
import json
import shlex
import sys

sys.path.insert(0, workflow.basedir)
from pipeline.config import ConfigError, resolve_config

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


# Shards that cannot be current (damaged, another model's, outside the plan, motion features
# without their student) are removed before the DAG is built, so this run makes them again.
if getattr(workflow, "is_main_process", True):  # not in the jobs a cluster runs
    from pipeline.freshness import stale_outputs
    for _path, _why in stale_outputs(RESULTS, config, SPLITS, config["shards"]):
        _path.unlink()
        print(f"note: removed {_path}: {_why}; this run makes it again", file=sys.stderr)


# Speed-only settings reach the jobs in the environment (see pipeline.cli.apply_runtime), so
# changing the device or a batch size re-runs nothing.
RUNTIME = json.dumps({"device": config["device"], "decoder": config["decoder"],
                      **{s: {k: v for k, v in config[s].items() if k in RUNTIME_ONLY}
                         for s in ("clip", "flow", "moclip")}}, sort_keys=True)
# Rules run `python -m pipeline`: the package is found in this workflow's own folder, so a
# conda env (--software-deployment-method conda) needs only the dependencies, not the package.
# GPU jobs running side by side each claim their own device from a pool in the run's folder.
_pool = f"results/{config['dataset']['name']}/.devices"
_prefix = (f"export PYTHONPATH={shlex.quote(workflow.basedir)}${{PYTHONPATH:+:$PYTHONPATH}}; "
           f"export PIPELINE_RUNTIME={shlex.quote(RUNTIME)}; "
           f"export PIPELINE_DEVICE_POOL={shlex.quote(_pool)}; ")
shell.prefix(_prefix.replace("{", "{{").replace("}", "}}"))  # Snakemake formats the prefix


include: "workflow/rules/data.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/moclip.smk"
include: "workflow/rules/heads.smk"


rule all:
    default_target: True
    input:
        rules.features.input,
        rules.motion.input,
        rules.report.output,


onsuccess:
    # pooled rows that no shard and no listed video needs any more (see pipeline/features/reuse.py)
    from pipeline.features.reuse import prune_pool
    from pipeline.freshness import wanted_fingerprints
    prune_pool(Path(REUSE), wanted_fingerprints(RESULTS, SPLITS, config["shards"]))
