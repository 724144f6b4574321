"""The ``python -m pipeline`` commands: one module per stage group, each command's flags written
beside its function (``@command(name, help, arg(...), ...)``). Snakemake rules call them with
explicit paths and the rule's config section as JSON (``--params``), so a rule's command line
is its whole input."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

COMMANDS: list[tuple] = []  # (name, function, help, args), in the order `--help` lists them


from ..errors import PipelineError  # noqa: F401 - the commands raise it


def arg(*names, **kwargs) -> tuple:
    """One ``add_argument`` call, written where the command is."""
    return names, kwargs


def command(name: str, help_: str, *args):
    """Register the decorated function as ``python -m pipeline <name>`` with its arguments."""
    def register(func):
        COMMANDS.append((name, func, help_, args))
        return func
    return register


def params(text, name: str) -> dict:
    """A config section from its JSON (or a dict), validated, defaults filled."""
    from ..config import section
    from ..recipes import settings_of
    return section(name, settings_of(text))


def optional_int(text: str):
    """An integer, or None/null (a config value left unset)."""
    return None if text in ("None", "null", "") else int(text)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more; got {value}")
    return value


def head_names(trained_only: bool = False) -> list[str]:
    """The heads a command may name (``trained_only``: those with parameters to fit)."""
    from ..heads.registry import HEAD_TYPES, trains
    return [h for h in sorted(HEAD_TYPES) if trains(h) or not trained_only]


def mark_summary(a, why: str) -> None:
    """Mark the run's summary out of date while a job that changes what it shows runs."""
    if getattr(a, "summary", None):
        from ..freshness import mark_out_of_date
        mark_out_of_date(a.summary, why)


def dataset_info(a):
    """(samples, number of classes, multi-label?) from the samples stage's files."""
    from ..annotations import read_classes, read_samples
    info = json.loads(Path(a.dataset_info).read_text())
    return read_samples(a.samples), len(read_classes(a.classes)), info["multilabel"]


DEVICE = arg("--device", help="auto | cpu | cuda[:N] (default: the workflow's device setting, "
             "else auto)")
DECODERS = ("opencv", "torchcodec")
DECODER = arg("--decoder", choices=DECODERS, help="opencv (CPU) or torchcodec (NVDEC on a CUDA "
              "device); default: the workflow's decoder setting, else opencv")
SUMMARY = arg("--summary", help="the run's reports/summary.md, marked out of date while this job runs")
REUSE = arg("--reuse", type=Path, help="the cache of extracted rows (config `cache`): videos found "
            "there, or in a current shard of any run beside this one, with the same content and "
            "settings are copied, not decoded; $PIPELINE_CACHE, which the workflow's jobs get, "
            "wins over it")


def cache_of(a) -> Path | None:
    """The cache a job uses: $PIPELINE_CACHE (the workflow's ``cache:``), else --reuse."""
    env = os.environ.get("PIPELINE_CACHE")
    return Path(env) if env else a.reuse
DATASET_FILES = tuple(arg(f"--{name}", required=True) for name in ("samples", "classes", "dataset-info"))
CONFIG_FILES = arg("--configfile", nargs="+", action="extend", metavar="FILE",
                   help="config files, as given to snakemake --configfile (they replace the default "
                        "job's config.yaml); none: ./config.yaml")
CONFIG_OVERRIDES = arg("--config", nargs="+", action="extend", metavar="KEY=VALUE",
                       help="overrides, as snakemake --config (values are YAML: shards=8, "
                            "'clip={batch_size: 64}')")
