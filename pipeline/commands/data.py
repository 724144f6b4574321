"""Commands of the data stages: the demo data set, the config, weights, samples and probe."""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys

from . import CONFIG_FILES, CONFIG_OVERRIDES, PipelineError, arg, command, params, positive_int

log = logging.getLogger("pipeline")


@command("demo", "write the synthetic demo data set (videos whose label is their motion)",
         arg("--out", required=True, help="output folder"),
         arg("--params", help="the demo: config section as JSON"))
def cmd_demo(a):
    from ..demo import make_demo
    info = make_demo(a.out, params(a.params, "demo"))
    log.info("demo data set: %d videos, %d classes in %s", info["videos"], info["classes"], a.out)


@command("config", "print the config a run uses, each value marked with where it came from (a "
         "file, --config or the schema default), after validating it",
         CONFIG_FILES, CONFIG_OVERRIDES)
def cmd_config(a):
    from ..config import format_config, parse_overrides, resolve_config
    config, sources = resolve_config(a.configfile or [], parse_overrides(a.config))
    sys.stdout.write(format_config(config, sources))


@command("weights", "fetch every checkpoint a config needs (CLIP and flow tags) into the caches "
         "the stages read, on a node with network; --check lists each as cached or missing, with "
         "where it goes; local files are checked (exit 1 if one is missing or unusable)",
         CONFIG_FILES,
         arg("--check", action="store_true", help="only say what is cached and missing"))
def cmd_weights(a):
    from ..config import resolve_config
    from ..weights import fetch, format_items, needed
    config, _ = resolve_config(a.configfile or [])
    items = needed(config)
    if not a.check:
        items = fetch(items)
    print(format_items(items))
    bad = [i["what"] for i in items if i.get("problem")]
    missing = [i["what"] for i in items if not i["cached"] and not i.get("problem")]
    if bad:
        print(f"error: {', '.join(bad)}: cannot be had (see above); fix the config", file=sys.stderr)
    if missing:
        print(f"error: missing from the local caches: {', '.join(missing)}; run `python -m "
              f"pipeline weights --configfile ...` on a node with network", file=sys.stderr)
    if bad or missing:
        raise SystemExit(1)


@command("demo-clip", "train the demo's tiny CLIP on frames of the demo's world and write an "
         "open_clip checkpoint (for clip.pretrained)",
         arg("--out", required=True, help="checkpoint file to write"),
         arg("--params", help="the demo: config section as JSON (its clip: steps, batch_size, lr)"))
def cmd_demo_clip(a):
    from ..demo_clip import MODEL, train_demo_clip
    demo = params(a.params, "demo")
    info = train_demo_clip(a.out, {**demo["clip"], "seed": demo["seed"]})
    log.info("demo CLIP (%s): %d steps in %.0f s, zero-shot shape accuracy %.2f on held-out frames "
             "(chance 0.25); written to %s", MODEL, info["steps"], info["seconds"],
             info["shape_accuracy"], a.out)


@command("samples", "read a data set's annotation files into samples.tsv, classes.tsv, "
         "missing.tsv (+ species.tsv, relation.tsv)",
         arg("--params", required=True, help="the dataset: config section as JSON"),
         arg("--shards", type=positive_int, default=1, help="shards per split"),
         arg("--out", required=True, help="results/<name> folder"))
def cmd_samples(a):
    from ..annotations import build_samples, split_roles, write_samples
    ds = json.loads(a.params)
    s = build_samples(ds, a.shards)
    write_samples(s, a.out)
    for m in s.missing:
        log.warning("missing video %s (listed at %s, line %s)", m["path"], m["file"], m["line"])
    splits = sorted({r["split"] for r in s.rows})
    log.info("%d videos in %s; %d listed but missing (see missing.tsv); %d classes; %s",
             len(s.rows), ", ".join(f"{sp}: {sum(r['split'] == sp for r in s.rows)}" for sp in splits),
             len(s.missing), len(s.classes.names), "multi-label" if s.multilabel else "single-label")
    if "train_split" in ds:  # the workflow checks the roles when it builds the DAG
        split_roles(ds, splits)


@command("probe", "decode every video of one shard: real frame count, fps, size, and the frame "
         "sampling plan; unreadable videos are recorded with the reason",
         arg("--samples", required=True),
         arg("--videos", required=True, help="folder the sample paths are relative to"),
         arg("--split", required=True),
         arg("--shard", type=int, required=True),
         arg("--params", help="the sampling: config section as JSON"),
         arg("--out", required=True, help="probe TSV to write"))
def cmd_probe(a):
    from ..annotations import read_samples
    from ..video import probe_listed, write_probes
    rows = [r for r in read_samples(a.samples) if r["split"] == a.split and r["shard"] == a.shard]
    probes = probe_listed(rows, a.videos, params(a.params, "sampling"), f"probe {a.split}/{a.shard}")
    write_probes(probes, a.out)
    bad = sum(not p.readable for p in probes)
    log.info("probed %d videos of %s shard %d: %d readable, %d skipped (reasons in %s)",
             len(probes), a.split, a.shard, len(probes) - bad, bad, a.out)


@command("cache-adopt", "set aside a run's shards outside its plan into the cache and make sure "
         "the cache holds the rows of every current shard (what a run does before its jobs; "
         "rule cache_adopt when there is nothing else to do)",
         arg("--results", required=True, help="the run folder: results/<name>"),
         arg("--cache", required=True),
         arg("--set-aside", default="{}", help="JSON: shard path -> why it is outside the plan"),
         arg("--out", help="marker file to write when done"))
def cmd_cache_adopt(a):
    from pathlib import Path

    from ..cache.reuse import adopt_into_cache
    lines = adopt_into_cache(a.results, json.loads(a.set_aside), a.cache)
    for line in lines:
        log.info(line)
    if a.out:
        Path(a.out).write_text("\n".join(lines) + "\n")


def gigabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of GB, 0 or more; got {text}")
    return value


@command("cache", "the cache of extracted rows: its size and what its runs use (`cache`), or "
         "delete what none of them uses (`cache prune [--dry-run]`); nothing else ever deletes "
         "from it. Its runs: the one of --configfile (or ./config.yaml), those of --runs, and "
         "every run folder the cache records as a user (each run that put rows into it)",
         arg("action", nargs="?", choices=("show", "prune"), default="show"),
         CONFIG_FILES, CONFIG_OVERRIDES,
         arg("--runs", nargs="+", action="extend", metavar="FILE", default=[],
             help="the config file of each further run, one file a run"),
         arg("--only-given", action="store_true", help="count only the runs given, not the "
             "cache's recorded users (prune may then delete rows another project copies from)"),
         arg("--dry-run", action="store_true", help="prune: only say what would be deleted"),
         arg("--max-gb", type=gigabytes, help="prune: then delete the oldest rows until the "
             "cache's own disk is under this size (rows of no run's current shard; each one named)"))
def cmd_cache(a):
    from ..cache.usage import describe, prune, usage_of, with_users
    from ..config import parse_overrides, resolve_config
    configs = [a.configfile or []] + [[f] for f in a.runs]
    runs = [usage_of(resolve_config(f, parse_overrides(a.config))[0]) for f in configs]
    caches = {r.cache.resolve(): r.cache for r in runs}
    for cache in caches.values():
        mine = [r for r in runs if r.cache.resolve() == cache.resolve()]
        if cache.exists() and not cache.is_dir():
            raise PipelineError(f"cache: {cache} is a file, not a folder; point cache: at a folder")
        if not cache.is_dir():
            print(f"cache {cache}: empty (no run has extracted into it yet)")
            continue
        mine, gone = (mine, []) if a.only_given else with_users(cache, mine)
        if a.action == "show":
            print(describe(cache, mine, gone))
        else:
            max_bytes = None if a.max_gb is None else int(a.max_gb * 1e9)
            print("\n".join(prune(cache, mine, a.dry_run, max_bytes, gone)))
