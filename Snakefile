"""Motion-aware CLIP features and action classifiers for animal videos.

Thin on purpose: validate the config, include one rule file per stage group, name the targets.
Every computation lives in the `pipeline` package (rules call `python -m pipeline <command>`).
"""
import sys

sys.path.insert(0, workflow.basedir)
from pipeline.config import ConfigError, validate_config


configfile: "config.yaml"


try:
    config.update(validate_config(config))
except ConfigError as e:
    sys.exit(f"error: {e}")


include: "workflow/rules/common.smk"
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
