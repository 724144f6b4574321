"""Commands of the classifier heads, the run's report, and predict on new videos."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from ..heads.registry import DEFAULT_HEAD
from ..layout import HEAD_INPUTS, STREAMS
from . import (DATASET_FILES, DEVICE, SUMMARY, PipelineError, arg, command, dataset_info,
               mark_summary, positive_int)

log = logging.getLogger("pipeline")


@command("head", "train one head on cached features; write head.pt, train_log.csv, "
         "predictions/<split>.csv, metrics.json and plots",
         arg("--name", required=True, help="the entry's name (heads.<name>): its results folder "
             "and summary row"),
         arg("--entry", help="the entry as JSON: type (a head type, or module:Class / "
             "file.py:Class; default: the name), group and varies (its grid and seed values)"),
         arg("--params", help="the entry's settings (heads.<name> in config, less type, grid and "
             "seeds) as JSON"),
         *(arg(f"--{kind}-{role}", nargs="*", help=f"{kind} feature shards of the {role} split")
           for kind in HEAD_INPUTS for role in ("train", "val", "eval")),
         arg("--train-split", default="train"),
         arg("--val-split", default=None, help="none: select on the training loss"),
         arg("--eval-split", default="test"),
         *DATASET_FILES,
         arg("--text", help="text.h5 (the prompt heads' text bank)"),
         arg("--out", required=True, help="heads/<name> folder"),
         SUMMARY, DEVICE)
def cmd_head(a):
    mark_summary(a, f"head {a.name} is being trained again on changed inputs")
    from ..annotations import read_classes
    from ..compute import pick_device
    from ..heads.run import run_head
    samples, _, multilabel = dataset_info(a)
    shards = {(kind, role): getattr(a, f"{kind}_{role}") for kind in HEAD_INPUTS
              for role in ("train", "val", "eval") if getattr(a, f"{kind}_{role}")}
    splits = {"train": a.train_split, "val": a.val_split, "eval": a.eval_split}
    from ..heads.entry import resolve_head
    from ..recipes import entry_of
    given, entry = entry_of(json.loads(a.params or "{}"), json.loads(a.entry or "{}"))
    head = resolve_head(a.name, given, **entry)  # the one resolution: every step below takes it
    m = run_head(head, shards, samples, read_classes(a.classes), multilabel, a.out,
                 pick_device(a.device), splits, a.text)
    if m.get("no_metrics"):
        return
    keys = ("mAP", "mAP_micro") if multilabel else ("top1", "top5", "mean_class_accuracy")
    log.info("head %s on %s: %s", a.name, a.eval_split,
             ", ".join(f"{k} {100 * m[k]:.2f}" for k in keys if m.get(k) is not None))


@command("report", "summary table of all heads (reports/summary.md) and plots",
         arg("--metrics", nargs="+", required=True, help="heads/*/metrics.json"),
         arg("--linear-probe", help="models/moclip/linear_probe.json"),
         arg("--dataset-info", required=True),
         arg("--missing", help="missing.tsv (videos listed but not found)"),
         arg("--probe-tables", nargs="*", help="probe tables of the evaluation split (skipped videos)"),
         arg("--features", nargs="*", help="feature shards of the evaluation split (videos the "
             "extraction skipped)"),
         arg("--scores", nargs="*", help="heads/*/scores.npz: the per-class comparison, "
             "confusions, worst videos and agreement"),
         arg("--samples", help="samples.tsv (training counts per class, video paths)"),
         arg("--classes", help="classes.tsv"),
         arg("--train-split", default="train"),
         arg("--protocol", help="the run's deciding settings as JSON (pipeline.protocols.run_view): "
             "a paper's number is cited only beside rows that follow its protocol"),
         arg("--presets", help="the presets' folder (configs/): the protocols' settings"),
         arg("--videos-root", default="", help="dataset.videos (for the predict commands)"),
         arg("--run", default="results/NAME", help="the run folder (for the predict commands)"),
         arg("--out", required=True, help="reports folder"))
def cmd_report(a):
    from ..report import split_counts, summary
    info = json.loads(Path(a.dataset_info).read_text())
    # each row named by its folder (heads/<name>/), which its scores.npz is found by too
    metrics = [{**json.loads(Path(f).read_text()), "head": Path(f).parent.name} for f in a.metrics]
    counts = (split_counts(metrics[0]["split"], a.missing, a.probe_tables, a.features or ())
              if a.probe_tables else None)
    lines = []
    if a.scores:
        from ..analysis import analyse
        from ..annotations import read_classes, read_samples
        by_head = {m["head"]: m for m in metrics if not m.get("no_metrics")}
        Path(a.out).mkdir(parents=True, exist_ok=True)
        lines = analyse(a.scores, by_head, read_classes(a.classes), read_samples(a.samples),
                        a.train_split, a.out, a.videos_root, a.run)
    path = summary(metrics, a.out, a.linear_probe, info.get("segments_source"), counts, lines,
                   json.loads(a.protocol) if a.protocol else None,
                   Path(a.presets) if a.presets else None)
    print(path.read_text())


@command("predict", "label new videos with a trained run: decode, CLIP, flow, student and head "
         "in one process, with the run's own settings",
         arg("videos", nargs="+", help="video files or folders"),
         arg("--run", required=True, help="a finished run: results/<name>"),
         arg("--head", default=DEFAULT_HEAD, help=f"which trained head (default {DEFAULT_HEAD})"),
         arg("--top-k", type=positive_int, default=5, help="classes shown per video"),
         arg("--json", help="also write the results as JSON"),
         arg("--timeline", action="store_true", help="also score sliding windows of --window "
             "seconds, one starting every second, and plot them as an action timeline (PNG) per "
             "video; the whole-video scores stay those without it"),
         arg("--window", type=float, default=2.0, help="timeline window length (seconds; one "
             "window starts every second)"),
         arg("--extra-classes", help="open vocabulary (prompt heads): more classes to score, a "
             "file (one name per line, or id,name) or a comma-separated list"),
         arg("--timeline-dir", default=".", help="where timeline PNGs go"),
         DEVICE)
def cmd_predict(a):
    from ..compute import pick_device
    from ..predict import format_results, predict_videos
    extra = None
    if a.extra_classes:
        from ..describe import read_names
        extra = read_names(a.extra_classes) if Path(a.extra_classes).is_file() else \
            [n.strip() for n in a.extra_classes.split(",") if n.strip()]
    results = predict_videos(a.videos, a.run, a.head, a.top_k, pick_device(a.device),
                             timeline=Path(a.timeline_dir) if a.timeline else None,
                             window_s=a.window, extra_classes=extra)
    print(format_results(results))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2) + "\n")
    if not any("error" not in r for r in results):
        raise PipelineError("no video could be read")


@command("export", "write one array per video of a run's feature stream (npy, or one npz) and "
         "index.csv with each video's labels and species, for use outside the pipeline",
         arg("--run", required=True, help="a run folder: results/<name>"),
         arg("--split", required=True),
         arg("--stream", required=True, choices=STREAMS),
         arg("--format", choices=("npy", "npz"), default="npy"),
         arg("--out", required=True, help="folder to write"))
def cmd_export(a):
    from ..api import export, open_run
    index = export(open_run(a.run), a.split, a.stream, a.out, a.format)
    log.info("exported %s %s features of %s to %s (index: %s)", a.split, a.stream, a.run, a.out, index)
