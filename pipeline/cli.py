"""``python -m pipeline <command>``: one subcommand per stage, plus predict and bench.

Snakemake rules call these with explicit paths and the rule's config section as JSON
(``--params``), so a rule's command line is its whole input.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
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


def cmd_config(a):
    from .config import format_config, resolve_config
    overrides = {}
    for item in a.config or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise PipelineError(f"--config {item!r}: expected KEY=VALUE (e.g. shards=8)")
        overrides[key] = yaml_value(value)
    config, sources = resolve_config(a.configfile or [], overrides)
    sys.stdout.write(format_config(config, sources))


def cmd_weights(a):
    from .config import resolve_config
    from .weights import fetch, format_items, needed
    config, _ = resolve_config(a.configfile or [])
    items = needed(config)
    if not a.check:
        items = fetch(items)
    print(format_items(items))
    missing = [i["what"] for i in items if not i["cached"]]
    if missing:
        print(f"error: missing from the local caches: {', '.join(missing)}; run `python -m "
              f"pipeline weights --configfile ...` on a node with network", file=sys.stderr)
        raise SystemExit(1)


def yaml_value(text: str):
    import yaml
    return yaml.safe_load(text)


def cmd_demo_clip(a):
    from .demo_clip import MODEL, train_demo_clip
    demo = _params(a.params, "demo")
    info = train_demo_clip(a.out, {**demo["clip"], "seed": demo["seed"]})
    log.info("demo CLIP (%s): %d steps in %.0f s, zero-shot shape accuracy %.2f on held-out frames "
             "(chance 0.25); written to %s", MODEL, info["steps"], info["seconds"],
             info["shape_accuracy"], a.out)


def cmd_samples(a):
    from .annotations import build_samples, split_roles, write_samples
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


def cmd_probe(a):
    from .annotations import read_samples
    from .video import probe_listed, write_probes
    rows = [r for r in read_samples(a.samples) if r["split"] == a.split and r["shard"] == a.shard]
    probes = probe_listed(rows, a.videos, _params(a.params, "sampling"), f"probe {a.split}/{a.shard}")
    write_probes(probes, a.out)
    bad = sum(not p.readable for p in probes)
    log.info("probed %d videos of %s shard %d: %d readable, %d skipped (reasons in %s)",
             len(probes), a.split, a.shard, len(probes) - bad, bad, a.out)


# ---------------------------------------------------------------- model stages


def _stage_inputs(a):
    from .features.common import pick_device
    from .video import read_probes
    probes = read_probes(a.probe)
    return probes, pick_device(a.device)


def _report(stage: str, out, stats: dict) -> None:
    fps = stats["frames"] / max(stats["seconds"], 1e-9)
    log.info("%s: %d videos, %d frames in %.1f s (%.0f frames/s) -> %s", stage, stats["videos"],
             stats["frames"], stats["seconds"], fps, out)
    for vid, why in stats["failed"]:
        log.warning("%s: video %s skipped: %s", stage, vid, why)
    log.info("reused: %d videos, decoded: %d videos", stats.get("reused", 0), stats["videos"])


DEVICE_HELP = "auto | cpu | cuda[:N] (default: the workflow's device setting, else auto)"
DECODERS = ("opencv", "torchcodec")
DECODER_HELP = ("opencv (CPU) or torchcodec (NVDEC on a CUDA device); default: the workflow's "
                "decoder setting, else opencv")
RUNTIME_ENV = "PIPELINE_RUNTIME"
SUMMARY_HELP = "the run's reports/summary.md, marked out of date while this job runs"
REUSE_HELP = ("the run's pool of extracted rows (features/.reuse): videos found there with the "
              "same content and settings are copied, not decoded")


def apply_runtime(args) -> None:
    """Fill unset speed-only options (device, batch sizes, workers) from the workflow's
    runtime settings, which the Snakefile passes in the environment: they change how fast a
    job runs, never its output, so they are kept out of the rules' params (no re-runs)."""
    runtime = runtime_settings()
    if hasattr(args, "device") and args.device is None:
        args.device = runtime.get("device", "auto")
    if hasattr(args, "decoder") and args.decoder is None:
        args.decoder = runtime.get("decoder", "opencv")
    section = {"clip": "clip", "flow": "flow", "moclip-train": "moclip"}.get(args.command)
    for key in ("batch_size", "decode_workers", "num_workers"):
        if section and getattr(args, key, "absent") is None:
            setattr(args, key, runtime.get(section, {}).get(key))


def runtime_settings() -> dict:
    return json.loads(os.environ.get(RUNTIME_ENV) or "{}")


def _with_runtime(a, name: str) -> dict:
    """The section from --params, plus the knobs that change speed, not features."""
    given = json.loads(a.params or "{}")
    given.update({k: v for k, v in (("batch_size", a.batch_size), ("decode_workers", a.decode_workers))
                  if v is not None})
    return _params(json.dumps(given), name)


def cmd_clip(a):
    from .features.clip import extract_clip
    probes, device = _stage_inputs(a)
    _report("clip", a.out, extract_clip(probes, a.out, _with_runtime(a, "clip"), device,
                                        sampling=_params(a.sampling, "sampling"), decoder=a.decoder,
                                        reuse=a.reuse))


def cmd_flow(a):
    from .features.flow import extract_flow
    probes, device = _stage_inputs(a)
    _report("flow", a.out, extract_flow(probes, a.out, _with_runtime(a, "flow"), device,
                                        sampling=_params(a.sampling, "sampling"), decoder=a.decoder,
                                        reuse=a.reuse))


def cmd_extract(a):
    from .features.extract import extract_both
    probes, device = _stage_inputs(a)
    runtime = runtime_settings()

    def cfg(name: str, given: str | None) -> dict:  # a section plus its speed-only knobs
        knobs = {k: v for k, v in runtime.get(name, {}).items() if v is not None}
        return _params(json.dumps({**json.loads(given or "{}"), **knobs}), name)
    stats = extract_both(probes, a.clip_out, a.flow_out, cfg("clip", a.clip), cfg("flow", a.flow),
                         device, sampling=_params(a.sampling, "sampling"), decoder=a.decoder,
                         reuse=a.reuse)
    _report("extract (clip + flow, one decode per video)", f"{a.clip_out}, {a.flow_out}", stats)


def cmd_text(a):
    from .annotations import read_classes, read_species
    from .features.common import pick_device
    from .features.text import extract_text
    classes = [r["name"] for r in read_classes(a.classes)]
    species, relation = read_species(*a.species) if a.species else (None, None)
    info = extract_text(classes, a.out, _params(a.text, "text"), _params(a.clip, "clip"),
                        pick_device(a.device), species, relation)
    log.info("text: %d prompts for %d classes (up to %d per class) -> %s", info["prompts"],
             info["classes"], info["max_per_class"], a.out)


def cmd_describe(a):
    from .describe import describe, read_names, write_descriptions
    kind = "species" if a.species else "action"
    found = describe(read_names(a.classes), a.endpoint, a.model, a.n, kind, a.cache, a.retries,
                     a.timeout, a.api_key_env)
    path = write_descriptions(found, a.out)
    log.info("describe: %d %s descriptions -> %s", sum(map(len, found.values())), kind, path)


def cmd_bench(a):
    from .bench import format_table, run_bench, write_csv
    from .features.common import pick_device
    device = pick_device(a.device)
    clip = _params({"model": a.clip_model, "pretrained": a.pretrained, "batch_size": a.batch_size,
                    "decode_workers": a.decode_workers}, "clip")
    flow = {"backend": "ptlflow", "model": a.flow_model, "checkpoint": a.flow_checkpoint}
    if a.flow_model in ("dis", "farneback", "tvl1"):
        flow = {"backend": a.flow_model}
    flow = _params({**flow, "work_size": a.flow_size, "size": a.flow_store_size,
                    "batch_size": a.flow_batch_size, "decode_workers": a.decode_workers}, "flow")
    sampling = _params({"mode": "all", "max_frames": a.max_frames}, "sampling")
    rows, bad, sampled = run_bench(a.videos, clip, flow, sampling, device, baseline=not a.no_baseline,
                                   repeats=a.repeats, baseline_flow_frames=a.baseline_flow_frames,
                                   decoder=a.decoder or "opencv", budget=a.budget)
    for p in bad:
        log.warning("skipped %s: %s", p.path, p.reason)
    name = torch_device_name(device)
    print(f"device: {name}; clip {a.clip_model} ({a.pretrained or 'random weights'}), "
          f"flow {a.flow_model} at {a.flow_size}px")
    print(format_table(rows))
    print(sampled)
    if a.csv:
        write_csv(rows, a.csv)


def torch_device_name(device) -> str:
    import torch
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def _dataset_info(a):
    from .annotations import read_classes, read_samples
    info = json.loads(Path(a.dataset_info).read_text())
    return read_samples(a.samples), len(read_classes(a.classes)), info["multilabel"]


def _mark_summary(a, why: str) -> None:
    if getattr(a, "summary", None):
        from .freshness import mark_out_of_date
        mark_out_of_date(a.summary, why)


def cmd_moclip_train(a):
    from .features.common import pick_device
    _mark_summary(a, "the motion student is being trained again: motion rows are from the "
                     "previous student")
    from .moclip.train import open_data, train_student
    params = json.loads(a.params)
    moclip = {**params.get("moclip", {}), **({"num_workers": a.num_workers} if a.num_workers is not None else {})}
    cfg, clip = _params(moclip, "moclip"), _params(params.get("clip"), "clip")
    samples, n_classes, multilabel = _dataset_info(a)
    data = open_data(a.clip_train, a.flow_train, a.clip_val or [], a.flow_val or [], samples,
                     n_classes, multilabel, clip)
    log.info("moclip: %d training and %d validation videos, %d classes (%s)",
             len(data["train_videos"]), len(data["val_videos"]), n_classes,
             "multi-label" if multilabel else "single-label")
    result = train_student(data, cfg, clip, a.out, pick_device(a.device))
    log.info("moclip: best epoch %d -> %s/student.pt", result["best_epoch"], a.out)


def cmd_moclip_export(a):
    from .features.common import pick_device
    from .moclip.export import export_motion
    cfg = _params(a.params, "moclip")
    info = export_motion(a.student, a.flow, a.out, pick_device(a.device),
                         after_adapter=cfg["export"] == "after_adapter")
    log.info("moclip export: %d videos, %d rows -> %s", info["videos"], info["rows"], a.out)


def cmd_flow_clip_model(a):
    from .moclip.export import save_flow_clip
    meta = save_flow_clip(_params(a.clip, "clip"), _params(a.params, "moclip"), a.flow, a.out)
    log.info("flow_clip: frozen %s on flow images (%s normalisation) -> %s", meta["clip_model"],
             meta["config"]["flow_norm"], a.out)


def cmd_moclip_probe(a):
    from .moclip.export import probe_report
    samples, n_classes, multilabel = _dataset_info(a)
    result = probe_report(a.clip_train, a.clip_eval, a.motion_train, a.motion_eval, samples,
                          n_classes, multilabel)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    if result.get("no_metrics"):
        return
    log.info("linear probe on time-pooled embeddings (%s, %d train / %d eval videos): "
             "CLIP frames %.3f, MoCLIP motion %.3f", result["metric"], result["n_train"],
             result["n_eval"], result["clip"], result["motion"])


def cmd_head(a):
    _mark_summary(a, f"head {a.name} is being trained again on changed inputs")
    from .annotations import read_classes
    from .features.common import pick_device
    from .heads.run import run_head
    samples, _, multilabel = _dataset_info(a)
    shards = {(kind, role): getattr(a, f"{kind}_{role}") for kind in ("clip", "motion")
              for role in ("train", "val", "eval") if getattr(a, f"{kind}_{role}")}
    splits = {"train": a.train_split, "val": a.val_split, "eval": a.eval_split}
    m = run_head(a.name, json.loads(a.params or "{}"), shards, samples, read_classes(a.classes),
                 multilabel, a.out, pick_device(a.device), splits, a.text)
    if m.get("no_metrics"):
        return
    keys = ("mAP", "mAP_micro") if multilabel else ("top1", "top5", "mean_class_accuracy")
    log.info("head %s on %s: %s", a.name, a.eval_split,
             ", ".join(f"{k} {100 * m[k]:.2f}" for k in keys if m.get(k) is not None))


def cmd_report(a):
    from .report import split_counts, summary
    info = json.loads(Path(a.dataset_info).read_text())
    metrics = json.loads(Path(a.metrics[0]).read_text())
    counts = split_counts(metrics["split"], a.missing, a.probes, a.features or ()) if a.probes else None
    lines = []
    if a.scores:
        from .analysis import analyse
        from .annotations import read_classes, read_samples
        by_head = {m["head"]: m for m in map(json.loads, (Path(f).read_text() for f in a.metrics))
                   if not m.get("no_metrics")}
        Path(a.out).mkdir(parents=True, exist_ok=True)
        lines = analyse(a.scores, by_head, read_classes(a.classes), read_samples(a.samples),
                        a.train_split, a.out, a.videos_root, a.run)
    path = summary(a.metrics, a.out, a.probe, info.get("segments_source"), counts, lines)
    print(path.read_text())


def cmd_bench_heads(a):
    import tempfile

    import numpy as np

    from .bench_heads import bench_heads, format_table, ragged_lengths, to_json
    lengths = ragged_lengths(a.lengths, a.videos)
    frames = a.frames if a.frames == "all" else int(a.frames)
    print(f"{a.videos} videos, rows per video: median {int(np.median(lengths))}, max {lengths.max()}, "
          f"{int((lengths > 3000).sum())} over 3000; {lengths.sum()} rows x {a.dim}-d x 2 streams "
          f"({lengths.sum() * a.dim * 2 * 2 / 2 ** 30:.1f} GB of float16, in memory or streamed); "
          f"frames {frames}, batch {a.batch_size}, {a.steps} timed steps per head")
    with tempfile.TemporaryDirectory(dir=a.work) as work:
        from .features.common import pick_device
        student_batch = a.student_batch or (32 if pick_device(a.device or "auto").type == "cuda" else 2)
        student = None if a.student_model == "none" else {
            "model": a.student_model, "batch_size": student_batch, "seq_len": a.seq_len, "steps": a.student_steps}
        rows = bench_heads(a.heads, lengths, Path(work), a.dim, a.classes, frames, a.batch_size,
                           a.steps, a.device, tuple(a.read), a.batch_rows, student)
    print(format_table(rows))
    if a.json:
        Path(a.json).write_text(to_json(rows))


def cmd_predict(a):
    from .features.common import pick_device
    from .predict import format_results, predict_videos
    extra = None
    if a.extra_classes:
        from .describe import read_names
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


def _add_data_commands(sub):
    """Commands of the data stages: the demo, the config, samples and probe."""
    p = _add(sub, "demo", cmd_demo, "write the synthetic demo data set (videos whose label is their motion)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--params", help="the demo: config section as JSON")

    p = _add(sub, "config", cmd_config, "print the config a run uses, each value marked with "
             "where it came from (a file, --config or the schema default), after validating it")
    p.add_argument("--configfile", nargs="+", action="extend", metavar="FILE",
                   help="config files, as given to snakemake --configfile (they replace the "
                        "default job's config.yaml); none: ./config.yaml")
    p.add_argument("--config", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="overrides, as snakemake --config (values are YAML: shards=8, "
                        "'clip={batch_size: 64}')")

    p = _add(sub, "weights", cmd_weights, "fetch every checkpoint a config needs (CLIP and flow "
             "tags) into the caches the stages read, on a node with network; --check lists each "
             "as cached or missing, with where it goes (exit 2 if one is missing)")
    p.add_argument("--configfile", nargs="+", action="extend", metavar="FILE",
                   help="config files, as given to snakemake --configfile; none: ./config.yaml")
    p.add_argument("--check", action="store_true", help="only say what is cached and missing")

    p = _add(sub, "demo-clip", cmd_demo_clip, "train the demo's tiny CLIP on frames of the demo's "
             "world and write an open_clip checkpoint (for clip.pretrained)")
    p.add_argument("--out", required=True, help="checkpoint file to write")
    p.add_argument("--params", help="the demo: config section as JSON (its clip: steps, batch_size, lr)")

    p = _add(sub, "samples", cmd_samples, "read a data set's annotation files into samples.tsv, "
             "classes.tsv, missing.tsv (+ species.tsv, relation.tsv)")
    p.add_argument("--params", required=True, help="the dataset: config section as JSON")
    p.add_argument("--shards", type=_positive_int, default=1, help="shards per split")
    p.add_argument("--out", required=True, help="results/<name> folder")

    p = _add(sub, "probe", cmd_probe, "decode every video of one shard: real frame count, fps, "
             "size, and the frame sampling plan; unreadable videos are recorded with the reason")
    p.add_argument("--samples", required=True)
    p.add_argument("--videos", required=True, help="folder the sample paths are relative to")
    p.add_argument("--split", required=True)
    p.add_argument("--shard", type=int, required=True)
    p.add_argument("--params", help="the sampling: config section as JSON")
    p.add_argument("--out", required=True, help="probe TSV to write")


def _add_feature_commands(sub):
    """Commands of per-frame features and the text bank."""
    for name, func, what in (("clip", cmd_clip, "frozen CLIP frame embeddings"),
                             ("flow", cmd_flow, "optical flow (quantised, CLIP's field of view)")):
        p = _add(sub, name, func, f"{what} of the planned frames of one probe shard -> HDF5")
        p.add_argument("--probe", required=True, help="probe shard TSV (stage probe)")
        p.add_argument("--out", required=True, help="feature shard (.h5) to write")
        p.add_argument("--params", help=f"the {name}: config section as JSON")
        p.add_argument("--sampling", help="the sampling: config section (recorded as provenance)")
        p.add_argument("--device", help=DEVICE_HELP)
        p.add_argument("--batch-size", type=_optional_int, help=f"{name}.batch_size (no effect "
                       "on the features, so not part of --params)")
        p.add_argument("--decode-workers", type=_optional_int, help="decoding threads")
        p.add_argument("--decoder", choices=DECODERS, help=DECODER_HELP)
        p.add_argument("--reuse", type=Path, help=REUSE_HELP)

    p = _add(sub, "extract", cmd_extract, "clip and flow of one probe shard from one decode of "
             "each video -> both HDF5 shards (the same as the clip and flow commands)")
    p.add_argument("--probe", required=True, help="probe shard TSV (stage probe)")
    p.add_argument("--clip-out", required=True, help="clip feature shard (.h5) to write")
    p.add_argument("--flow-out", required=True, help="flow feature shard (.h5) to write")
    p.add_argument("--clip", help="the clip: config section as JSON")
    p.add_argument("--flow", help="the flow: config section as JSON")
    p.add_argument("--sampling", help="the sampling: config section (recorded as provenance)")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--decoder", choices=DECODERS, help=DECODER_HELP)
    p.add_argument("--reuse", type=Path, help=REUSE_HELP)

    p = _add(sub, "text", cmd_text, "class prompt embeddings (templates + descriptions) -> text.h5")
    p.add_argument("--classes", required=True, help="classes.tsv (stage samples)")
    p.add_argument("--species", nargs="*", metavar="TSV",
                   help="species.tsv relation.tsv, for templates with {species} and the species bank")
    p.add_argument("--text", help="the text: config section as JSON")
    p.add_argument("--clip", help="the clip: config section (model, pretrained) as JSON")
    p.add_argument("--out", required=True)
    p.add_argument("--device", help=DEVICE_HELP)

    p = _add(sub, "describe", cmd_describe, "visual descriptions of each action (or species) from "
             "an OpenAI-compatible chat endpoint -> a description file for text.descriptions")
    p.add_argument("--classes", required=True,
                   help="class file (id,name CSV, classes.tsv or one name per line)")
    p.add_argument("--species", action="store_true", help="the file holds species: describe their looks")
    p.add_argument("--endpoint", required=True, help="API base, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", required=True, help="model name the server knows")
    p.add_argument("--n", type=int, default=10, help="descriptions per name")
    p.add_argument("--out", default="descriptions.yaml")
    p.add_argument("--cache", default=".cache/describe", help="answers already had (re-runs ask nothing twice)")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the API key (never written anywhere)")
    p.add_argument("--retries", type=int, default=3)
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")


def _add_student_commands(sub):
    """Commands of the MoCLIP student."""
    p = _add(sub, "moclip-train", cmd_moclip_train, "distil the motion student from cached flow "
             "and CLIP features (resumes from its last epoch checkpoint)")
    for name in ("clip-train", "flow-train"):
        p.add_argument(f"--{name}", nargs="+", required=True, help="feature shards")
    for name in ("clip-val", "flow-val"):
        p.add_argument(f"--{name}", nargs="*", help="validation shards (best-epoch selection)")
    for name in ("samples", "classes", "dataset-info"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--params", required=True, help='JSON {"moclip": {...}, "clip": {...}}')
    p.add_argument("--num-workers", type=_optional_int, help="DataLoader workers (moclip.num_workers)")
    p.add_argument("--out", required=True, help="output folder (student.pt, train_log.csv/png)")
    p.add_argument("--summary", help=SUMMARY_HELP)
    p.add_argument("--device", help=DEVICE_HELP)

    p = _add(sub, "moclip-export", cmd_moclip_export, "per-frame motion embeddings of one flow shard")
    p.add_argument("--student", required=True, help="student.pt (models/moclip or models/flow_clip)")
    p.add_argument("--flow", required=True, help="flow shard")
    p.add_argument("--out", required=True, help="motion shard to write")
    p.add_argument("--params", help="the moclip: config section as JSON")
    p.add_argument("--device", help=DEVICE_HELP)

    p = _add(sub, "flow-clip-model", cmd_flow_clip_model, "the frozen CLIP as an untrained student "
             "(its image tower on the flow images): what moclip-export turns into the flow_clip "
             "stream, AnimalMotionCLIP's flow input")
    p.add_argument("--flow", required=True, help="a flow shard (its settings are recorded)")
    p.add_argument("--clip", required=True, help="the clip: config section as JSON")
    p.add_argument("--params", help="the moclip: config section as JSON (flow_norm)")
    p.add_argument("--out", required=True, help="models/flow_clip/model.pt")

    p = _add(sub, "moclip-probe", cmd_moclip_probe, "linear probe: motion vs CLIP embeddings")
    for name in ("clip-train", "motion-train", "clip-eval", "motion-eval"):
        p.add_argument(f"--{name}", nargs="+", required=True)
    for name in ("samples", "classes", "dataset-info", "out"):
        p.add_argument(f"--{name}", required=True)


def _add_head_commands(sub):
    """Commands of heads, their report, and predict."""
    from .heads.streams import STREAMS
    p = _add(sub, "head", cmd_head, "train one head on cached features; write head.pt, "
             "train_log.csv, predictions/<split>.csv, metrics.json and plots")
    p.add_argument("--name", required=True, choices=sorted(STREAMS))
    p.add_argument("--params", help="the head's parameters (heads.<name> in config) as JSON")
    for kind in ("clip", "motion"):
        for role in ("train", "val", "eval"):
            p.add_argument(f"--{kind}-{role}", nargs="*", help=f"{kind} feature shards of the {role} split")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default=None, help="none: select on the training loss")
    p.add_argument("--eval-split", default="test")
    for name in ("samples", "classes", "dataset-info"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("--text", help="text.h5 (the prompt heads' text bank)")
    p.add_argument("--out", required=True, help="heads/<name> folder")
    p.add_argument("--summary", help=SUMMARY_HELP)
    p.add_argument("--device", help=DEVICE_HELP)

    p = _add(sub, "report", cmd_report, "summary table of all heads (reports/summary.md) and plots")
    p.add_argument("--metrics", nargs="+", required=True, help="heads/*/metrics.json")
    p.add_argument("--probe", help="models/moclip/probe.json")
    p.add_argument("--dataset-info", required=True)
    p.add_argument("--missing", help="missing.tsv (videos listed but not found)")
    p.add_argument("--probes", nargs="*", help="probe tables of the evaluation split (skipped videos)")
    p.add_argument("--features", nargs="*", help="feature shards of the evaluation split (videos "
                   "the extraction skipped)")
    p.add_argument("--scores", nargs="*", help="heads/*/scores.npz: the per-class comparison, "
                   "confusions, worst videos and agreement")
    p.add_argument("--samples", help="samples.tsv (training counts per class, video paths)")
    p.add_argument("--classes", help="classes.tsv")
    p.add_argument("--train-split", default="train")
    p.add_argument("--videos-root", default="", help="dataset.videos (for the predict commands)")
    p.add_argument("--run", default="results/NAME", help="the run folder (for the predict commands)")
    p.add_argument("--out", required=True, help="reports folder")

    p = _add(sub, "predict", cmd_predict, "label new videos with a trained run: decode, CLIP, "
             "flow, student and head in one process, with the run's own settings")
    p.add_argument("videos", nargs="+", help="video files or folders")
    p.add_argument("--run", required=True, help="a finished run: results/<name>")
    p.add_argument("--head", default="fusion", help="which trained head (default fusion)")
    p.add_argument("--top-k", type=_positive_int, default=5, help="classes shown per video")
    p.add_argument("--json", help="also write the results as JSON")
    p.add_argument("--timeline", action="store_true", help="score 1 s sliding windows and plot "
                   "a per-second action timeline (PNG) per video")
    p.add_argument("--window", type=float, default=2.0, help="timeline window (seconds)")
    p.add_argument("--extra-classes", help="open vocabulary (prompt heads): more classes to score, "
                   "a file (one name per line, or id,name) or a comma-separated list")
    p.add_argument("--timeline-dir", default=".", help="where timeline PNGs go")
    p.add_argument("--device", help=DEVICE_HELP)


def _add_bench_commands(sub):
    """Commands of benchmarks."""
    from .heads.streams import STREAMS
    p = _add(sub, "bench", cmd_bench, "frames/s and peak memory of decode, CLIP, flow and the "
             "student on the given videos, against the model alone (floor) and the "
             "straightforward path (baseline), on the current device")
    p.add_argument("videos", nargs="+", help="video files or folders")
    p.add_argument("--clip-model", default="ViT-B-32")
    p.add_argument("--pretrained", default=None, help="weights tag or file (default: random, "
                   "fine for timing)")
    p.add_argument("--batch-size", type=int, default=256, help="CLIP batch size")
    p.add_argument("--flow-model", default="raft", help="ptlflow model name, or dis / farneback")
    p.add_argument("--flow-checkpoint", default=None, help="default: random weights (timing only)")
    p.add_argument("--flow-size", type=int, default=256, help="flow working size (pixels)")
    p.add_argument("--flow-store-size", type=int, default=112)
    p.add_argument("--flow-batch-size", type=int, default=16)
    p.add_argument("--max-frames", type=int, default=64, help="frames per video")
    p.add_argument("--decode-workers", type=int, default=None,
                   help="decoding threads (default: 2 on CPU, up to 8 beside a GPU)")
    p.add_argument("--decoder", choices=DECODERS, help="how the stages decode: opencv (default) or "
                   "torchcodec (NVDEC on a CUDA device)")
    p.add_argument("--no-baseline", action="store_true", help="skip the straightforward path")
    p.add_argument("--repeats", type=int, default=3, help="each figure is the best of this many runs")
    p.add_argument("--budget", type=float, default=600, help="seconds the bench may take: frames, "
                   "then repeats, are cut to fit, timed on a few frames first (0: no limit)")
    p.add_argument("--baseline-flow-frames", type=int, default=128,
                   help="the pair-by-pair flow baseline is timed on this many frames")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--csv", help="also write the table as CSV")

    p = _add(sub, "bench-heads", cmd_bench_heads, "training samples/s, seconds per epoch and peak "
             "memory of each head on a synthetic store with a real length distribution, in memory "
             "and streamed")
    p.add_argument("--heads", nargs="+", default=[h for h in sorted(STREAMS) if h != "zero_shot"],
                   choices=sorted(STREAMS))
    p.add_argument("--lengths", default="ak", help="ak (Animal Kingdom's every-frame clips: median "
                   "about 300 rows, a few over 3000) or a file with one row count per line")
    p.add_argument("--videos", type=_positive_int, default=24000)
    p.add_argument("--classes", type=_positive_int, default=140)
    p.add_argument("--frames", default="all", help="all, or rows sampled per video")
    p.add_argument("--dim", type=_positive_int, default=512)
    p.add_argument("--batch-size", type=_positive_int, default=8)
    p.add_argument("--steps", type=_positive_int, default=10, help="timed training steps per head")
    p.add_argument("--batch-rows", type=_positive_int, help="the heads' batch_rows (most padded rows "
                   "per batch); default: batch-size videos whatever their length")
    p.add_argument("--read", nargs="+", default=["memory", "stream"], choices=["memory", "stream"])
    p.add_argument("--student-model", default="ViT-B-32", help="the student's CLIP (random weights), "
                   "or none to leave the student out")
    p.add_argument("--student-batch", type=_positive_int, help="the student's windows per step "
                   "(default: 32 on a GPU; 2 on a CPU, where a ViT-B-32 step on 8 windows of 8 "
                   "frames already peaks at 3.8 GB)")
    p.add_argument("--student-steps", type=_positive_int, default=3, help="the student's timed steps")
    p.add_argument("--seq-len", type=_positive_int, default=8, help="the student's rows per window")
    p.add_argument("--work", help="folder for the synthetic store (default: the system's temp)")
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--json")


# ---------------------------------------------------------------- parser

def _optional_int(text: str):
    """An integer, or None/null (a config value left unset)."""
    return None if text in ("None", "null", "") else int(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more; got {value}")
    return value


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

    for add in (_add_data_commands, _add_feature_commands, _add_student_commands,
                _add_head_commands, _add_bench_commands):
        add(sub)
    from .plan import add_command
    add_command(sub, _add)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    apply_runtime(args)
    if "PIPELINE_THREADS" in os.environ or "SLURM_CPUS_PER_TASK" in os.environ:
        from .devices import job_cpus  # a workflow job: torch's threads follow its allotment
        os.environ.setdefault("OMP_NUM_THREADS", str(job_cpus()))
    # Libraries log chatter at INFO on the root logger; ours is the "pipeline" logger.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    from .annotations import AnnotationError
    from .config import ConfigError
    from .features.common import WeightsError
    from .features.text import TextError
    from .describe import DescribeError
    from .predict import RunError
    from .store import StoreError
    from .devices import DeviceError
    try:
        args.func(args)
    except (PipelineError, AnnotationError, ConfigError, WeightsError, StoreError, TextError,
            RunError, DescribeError, DeviceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, an I/O error: say which file; finished outputs are kept
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"error: {where}{e.strerror or e} while running '{args.command}'. Outputs already "
              f"finished are kept and this one was not published; free space or fix the device "
              f"and re-run.", file=sys.stderr)
        return 3
    return 0
