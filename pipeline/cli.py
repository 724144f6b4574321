"""``python -m pipeline <command>``: one subcommand per stage, plus predict and bench.

Snakemake rules call these with explicit paths and the rule's config section as JSON
(``--params``), so a rule's command line is its whole input.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from . import __version__

log = logging.getLogger("pipeline")


class PipelineError(RuntimeError):
    """An error whose message tells the user what to do; printed without a traceback."""


def _params(text: str | None, name: str) -> dict:
    from .config import section
    return section(name, text or "{}")


# ---------------------------------------------------------------- foundation stages

def cmd_demo(a):
    from .demo import make_demo
    info = make_demo(a.out, _params(a.params, "demo"))
    log.info("demo data set: %d videos, %d classes in %s", info["videos"], info["classes"], a.out)


def cmd_samples(a):
    from .annotations import build_samples, write_samples
    from .config import ConfigError
    ds = json.loads(a.params)
    s = build_samples(ds, a.shards)
    write_samples(s, a.out)
    for m in s.missing:
        log.warning("missing video %s (listed at %s, line %s)", m["path"], m["file"], m["line"])
    splits = sorted({r["split"] for r in s.rows})
    log.info("%d videos in %s; %d listed but missing (see missing.tsv); %d classes; %s",
             len(s.rows), ", ".join(f"{sp}: {sum(r['split'] == sp for r in s.rows)}" for sp in splits),
             len(s.missing), len(s.classes.names), "multi-label" if s.multilabel else "single-label")
    for want in (ds.get("train_split"), ds.get("eval_split")):
        if want and want not in splits:
            raise ConfigError(f"config.yaml: dataset split {want!r} (train_split/eval_split) has no "
                              f"video; splits found: {', '.join(splits)}")


def cmd_probe(a):
    from tqdm import tqdm
    from .annotations import read_samples
    from .video import probe_video, write_probes
    sampling = _params(a.params, "sampling")
    rows = [r for r in read_samples(a.samples) if r["split"] == a.split and r["shard"] == a.shard]
    probes = []
    for r in tqdm(rows, desc=f"probe {a.split}/{a.shard}", unit="video", disable=None):
        p = probe_video(Path(a.videos) / r["path"], r["video_id"], sampling)
        if not p.readable:
            log.warning("skipping %s: %s", p.path, p.reason)
        probes.append(p)
    write_probes(probes, a.out)
    bad = sum(not p.readable for p in probes)
    log.info("probed %d videos of %s shard %d: %d readable, %d skipped (reasons in %s)",
             len(probes), a.split, a.shard, len(probes) - bad, bad, a.out)


# ---------------------------------------------------------------- model stages


def _add_model_commands(sub):
    pass


# ---------------------------------------------------------------- parser

def _add(sub, name, func, help_):
    p = sub.add_parser(name, help=help_, description=help_)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Motion-aware CLIP features and action classifiers for animal videos.")
    parser.add_argument("--version", action="version", version=f"pipeline {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = _add(sub, "demo", cmd_demo, "write the synthetic demo data set (videos whose label is their motion)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--params", help="the demo: config section as JSON")

    p = _add(sub, "samples", cmd_samples, "read a data set's annotation files into samples.tsv, "
             "classes.tsv, missing.tsv (+ species.tsv, relation.tsv)")
    p.add_argument("--params", required=True, help="the dataset: config section as JSON")
    p.add_argument("--shards", type=int, default=1, help="shards per split")
    p.add_argument("--out", required=True, help="results/<name> folder")

    p = _add(sub, "probe", cmd_probe, "decode every video of one shard: real frame count, fps, "
             "size, and the frame sampling plan; unreadable videos are recorded with the reason")
    p.add_argument("--samples", required=True)
    p.add_argument("--videos", required=True, help="folder the sample paths are relative to")
    p.add_argument("--split", required=True)
    p.add_argument("--shard", type=int, required=True)
    p.add_argument("--params", help="the sampling: config section as JSON")
    p.add_argument("--out", required=True, help="probe TSV to write")

    _add_model_commands(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    from .annotations import AnnotationError
    from .config import ConfigError
    try:
        args.func(args)
    except (PipelineError, AnnotationError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
