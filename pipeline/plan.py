"""``python -m pipeline plan``: what a run will do and cost, before it runs.

Per stage and split: jobs, videos, rows, disk and device-hours, and what each job asks the
scheduler for. Rows come from the probe tables when the run has written them, else from
probing a sample of the listed videos (the same probe the run uses), else from an assumed
length that the plan states. Bytes per row are measured by writing real shards with the
configured sizes, dtypes and compression; flow's compression is read off the run's own flow
shards, or (``--measure-flow``) measured on flow computed from the sample videos (OpenCV's DIS
stands in for a flow model, which a login node cannot run quickly), or assumed, as it says.
Rates come from a ``bench`` CSV or from the figures it names. It imports neither torch nor
OpenCV unless ``--measure-flow`` asks, so it runs on a login node without the GPU stack.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from . import jobs
from .heads.entry import run_heads
from .layout import EXTRACTED, RunFolder
from .errors import PipelineError
from .plan_disk import shard_bytes, stream_layouts
from .plan_student import student_rate, training_precision

# frames/s on one H100 with random weights (docs/benchmarks.md, commit 8a26edf): CLIP ViT-B-32
# at 224 px, RAFT at a 256 px working size (its cost grows with the working pixels)
H100 = {"clip": {"ViT-B-32": 811.0}, "flow": {"raft": 97.0}, "flow_work_size": 256}
H100_SOURCE = "one H100 (docs/benchmarks.md, commit 8a26edf)"
# (the student's training, never timed on an H100 here, is modelled: pipeline/plan_student.py)


def _per_video(probes: list) -> tuple[list, float, float, float]:
    """(the readable probes, their share, their mean rows and mean frames per video)."""
    ok = [p for p in probes if p.readable]
    if not ok:
        return ok, 0.0, 0.0, 0.0
    return ok, len(ok) / len(probes), float(np.mean([len(p.sampled) for p in ok])), \
        float(np.mean([p.frames for p in ok]))


def _spread(items: list, n: int) -> list:
    """``n`` items spread evenly over the list (long data sets are often sorted by source)."""
    if len(items) <= n:
        return items
    return [items[round(i * (len(items) - 1) / (n - 1))] for i in range(n)] if n > 1 else items[:1]


def split_rows(config: dict, workdir: Path, sample: int, assume: tuple[int, float]) -> tuple[dict, list]:
    """Per split: videos (listed, present, readable), rows and frames, and how they are known;
    and the probes of the sample videos (for the flow measurement)."""
    from .annotations import listed_videos
    from .video import probe_video, read_probes, sampling_plan
    ds = config["dataset"]
    run = RunFolder.of_config(config, workdir)
    if ds["format"] == "demo" and not Path(ds["annotations"]).is_file():
        from .demo import demo_split  # the run writes the demo's videos: the config sizes them
        demo = config["demo"]
        listed = [{"split": demo_split(i), "present": False} for i in range(demo["n_videos"])]
        assume = (demo["frames"], float(demo.get("fps", 25)))
    else:
        listed = listed_videos(ds)
    out, probes = {}, []
    for split in sorted({v["split"] for v in listed}):
        videos = [v for v in listed if v["split"] == split]
        present = [v for v in videos if v["present"]]
        tables = run.shards("probe", split)  # those the run has written, for any shard count
        info = {"listed": len(videos), "present": len(present)}
        listed_ids = {v.get("video_id") for v in videos}
        got = [p for t in tables for p in read_probes(t) if p.video_id in listed_ids]
        if got:
            # the run's probe tables, for the videos still listed; new ones at their mean
            new = len(present) - len(got)
            ok, share, per_rows, per_frames = _per_video(got)
            extra = round(max(0, new) * share)
            info.update(videos=len(ok) + extra, rows=int(sum(len(p.sampled) for p in ok) + per_rows * extra),
                        frames=int(sum(p.frames for p in ok) + per_frames * extra),
                        source="probe tables (exact)" if new <= 0 else
                        f"probe tables for {len(got)} videos (exact), {new} new listed videos "
                        f"estimated from their mean")
            probes += _spread(ok, max(1, sample // 4))
        elif present:
            picked = [probe_video(Path(ds["videos"]) / v["path"], v["video_id"], config["sampling"])
                      for v in _spread(present, sample)]
            ok, share, per_rows, per_frames = _per_video(picked)
            n = round(len(present) * share)
            info.update(videos=n, rows=int(per_rows * n), frames=int(per_frames * n),
                        source=f"estimated from {len(picked)} probed videos ({len(ok)} readable)")
            probes += ok[:max(1, sample // 4)]
        else:
            frames, fps = assume
            per = len(sampling_plan(frames, fps, config["sampling"]))
            info.update(videos=len(videos), rows=per * len(videos), frames=frames * len(videos),
                        source=f"assumed: no video found, {frames} frames at {fps:g} fps each "
                               f"(--frames-per-video)")
        out[split] = info
    return out, probes


# ---------------------------------------------------------------- device time

class PlanError(PipelineError, ValueError):
    """A plan's input (a bench CSV) that cannot be used, named with its line."""


BENCH_STAGES = ("probe", "decode", "clip", "flow", "extract", "student", "student_train", "student_read")
BENCH_COLUMNS = ["stage", "frames", "frames_per_s", "floor_frames_per_s", "baseline_frames_per_s",
                 "floor_fraction", "speedup", "peak_mem_mb", "limit", "decoder", "decodes_per_video",
                 "settings"]


def write_bench(rows: list[dict], path, clip_model: str, flow_model: str, flow_work_size: int,
                student_precision: str = "bfloat16") -> None:
    """``bench``'s table as CSV, each row with the settings that decide its rate, which
    :func:`read_bench` reads back for a plan (one place for the file's format)."""
    rows = [{**r, "settings": json.dumps(stage_settings(r["stage"], clip_model, flow_model,
                                                         flow_work_size, None, student_precision),
                                         sort_keys=True)}
            for r in rows]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=BENCH_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def stage_settings(stage: str, clip_model: str, flow_model: str, flow_work_size: int,
                   student_model: str | None = None, student_precision: str = "bfloat16") -> dict:
    """What decides a bench stage's rate: the models (and flow's working size, the student's
    training precision) it ran. A bench CSV records it per row; a plan uses a rate only where
    its config's are the same."""
    clip = {"clip_model": clip_model}
    flow = {"flow_model": flow_model, "flow_work_size": int(flow_work_size)}
    return {"clip": clip, "flow": flow, "extract": {**clip, **flow},
            "student": {"student_model": student_model or clip_model},
            "student_train": {"student_model": student_model or clip_model,
                              "student_precision": student_precision},
            "student_read": {"flow_work_size": int(flow_work_size)}}.get(stage, {})


def config_settings(stage: str, config: dict) -> dict:
    flow = config["flow"]
    return stage_settings(stage, config["clip"]["model"],
                          flow["model"] if flow["backend"] == "ptlflow" else flow["backend"],
                          flow["work_size"], config["moclip"].get("model"),
                          training_precision(config["moclip"].get("precision", "auto")))


def read_bench(path) -> dict:
    """stage -> (frames/s, the settings it was measured with or None) from a ``bench --csv``
    file; every rate a finite number above zero, every stage one bench times."""
    import math
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"stage", "frames_per_s"} <= set(reader.fieldnames):
                raise PlanError(f"{path}: not a bench CSV (it needs the columns stage and "
                                f"frames_per_s; its first line is {','.join(reader.fieldnames or [])!r}); "
                                f"write one with `python -m pipeline bench VIDEOS --csv {path}`")
            rows = {}
            for line, r in enumerate(reader, start=2):
                text = (r.get("frames_per_s") or "").strip()
                if r["stage"] not in BENCH_STAGES:
                    raise PlanError(f"{path}, line {line}: stage {r['stage']!r} is not one bench "
                                    f"times ({', '.join(BENCH_STAGES)})")
                if not text:
                    continue
                try:
                    rate = float(text)
                except ValueError:
                    raise PlanError(f"{path}, line {line}: frames_per_s is {text!r}, not a "
                                    f"number") from None
                if not (math.isfinite(rate) and rate > 0):
                    raise PlanError(f"{path}, line {line}: frames_per_s of {r['stage']!r} is "
                                    f"{text}; a rate is a number above zero (re-run bench)")
                settings = (r.get("settings") or "").strip()
                try:
                    rows[r["stage"]] = (rate, json.loads(settings) if settings else None)
                except ValueError:
                    raise PlanError(f"{path}, line {line}: settings {settings[:60]!r} are not the "
                                    f"JSON bench writes (re-run bench)") from None
    except FileNotFoundError:
        raise PlanError(f"{path}: bench CSV not found") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise PlanError(f"{path}: not a text CSV file ({e.__class__.__name__}); give the file "
                        f"`python -m pipeline bench VIDEOS --csv FILE` wrote") from None
    if not rows:
        raise PlanError(f"{path}: no stage rows with frames_per_s; write one with "
                        f"`python -m pipeline bench VIDEOS --csv {path}`")
    return rows


def rates(config: dict, bench: dict | None) -> tuple[dict, str]:
    """frames/s of clip, flow, extract and the student's export, and where they come from. A
    bench CSV's rate serves only a stage measured with this config's models and sizes."""
    if bench:
        got, said = {}, []
        for stage in ("clip", "flow", "extract", "student", "student_train", "student_read"):
            rate, measured = bench.get(stage, (None, None))
            want = config_settings(stage, config)
            if rate is not None and measured is not None and measured != want:
                said.append(f"{stage} not used (measured with {_differ(measured, want)})")
                rate = None
            elif rate is not None and measured is None:
                said.append(f"{stage} assumed measured with this config's models (the CSV does not say)")
            got[stage] = rate
        if not got["student_train"]:  # not timed at this config's model and precision
            got["student_train"], how = student_rate(_student_model(config), _precision(config))
            said.append(how)
        return got, "; ".join(["the bench CSV given (its device, models and sizes)"] + said)
    clip = H100["clip"].get(config["clip"]["model"])
    flow_cfg = config["flow"]
    flow = None
    if flow_cfg["backend"] == "ptlflow" and flow_cfg["model"] in H100["flow"]:
        flow = H100["flow"][flow_cfg["model"]] * (H100["flow_work_size"] / flow_cfg["work_size"]) ** 2
    train, how = student_rate(_student_model(config), _precision(config))
    got = {"clip": clip, "flow": flow, "student": clip, "student_train": train,
           "student_read": None, "extract": 1 / (1 / clip + 1 / flow) if clip and flow else None}
    return got, (f"{H100_SOURCE}; flow scaled by working pixels; the student's export at CLIP's "
                 f"extraction rate; {how}; no figure for other models: pass --bench")


def _student_model(config: dict) -> str:
    return config["moclip"].get("model") or config["clip"]["model"]


def _precision(config: dict) -> str:
    return config["moclip"].get("precision", "auto")


def _differ(measured: dict, want: dict) -> str:
    return ", ".join(f"{k} {measured.get(k)!r} where this config has {v!r}"
                     for k, v in want.items() if measured.get(k) != v)


def _hours(rows: int, rate: float | None, factor: float = 1.0) -> float | None:
    return rows * factor / rate / 3600 if rate else None


# ---------------------------------------------------------------- the plan

def student_hours(config: dict, splits: dict, rate: dict) -> float | None:
    """The student's training: each epoch's training rows at the slower of the timed training
    step and what its data-loading workers read (bench's one-worker rate times the workers a
    GPU job gets), plus a validation pass (a forward, at the export's rate) per epoch."""
    ds, m = config["dataset"], config["moclip"]
    train = splits.get(ds["train_split"], {"rows": 0})["rows"]
    val = splits.get(ds.get("val_split") or "", {"rows": 0})["rows"]
    step = rate.get("student_train")
    if rate.get("student_read") and step:  # moclip.num_workers, or what the job's CPUs allow
        workers = m["num_workers"] if m.get("num_workers") is not None else \
            min(8, jobs.threads(config["cluster"], "moclip_train") - 1)
        step = min(step, rate["student_read"] * max(1, workers))
    hours = _hours(train * m["epochs"], step)
    check = _hours(val * m["epochs"], rate.get("student"))
    return None if hours is None else hours + (check or 0.0)


def stage_rows(config: dict, splits: dict, layouts: dict, rate: dict) -> list[dict]:
    """One row per stage (and split for the per-shard stages)."""
    cluster, shards = config["cluster"], config["shards"]
    fused = config["extraction"] == "fused"
    gpu_flow = config["flow"]["backend"] == "ptlflow"
    out = []

    def row(stage, split, jobs_, videos, rows, kinds=(), hours=None, gpu=False, parts=()):
        disk = sum(shards * shard_bytes(layouts[k], videos / shards, rows / shards) for k in kinds)
        asked = jobs.runtime_min(cluster, stage, *parts, videos=videos // jobs_) / 60
        out.append({"stage": stage, "split": split, "jobs": jobs_, "videos": videos, "rows": rows,
                    "disk_bytes": int(disk), "device_hours": hours, "gpu": gpu,
                    "hours_per_job": hours / jobs_ if hours is not None else None,
                    "runtime_hours_asked": asked,
                    "mem_mb": jobs.mem_mb(cluster, stage, *parts),
                    "threads": jobs.threads(cluster, stage, *parts)})

    row("samples", "all", 1, sum(s["videos"] for s in splits.values()), 0)
    for split, s in splits.items():
        row("probe", split, shards, s["videos"], 0)
    for split, s in splits.items():
        v, r = s["videos"], s["rows"]
        if fused:
            row("extract", split, shards, v, r, EXTRACTED, _hours(r, rate["extract"]), True,
                EXTRACTED)
        else:
            row("clip", split, shards, v, r, ("clip",), _hours(r, rate["clip"]), True)
            row("flow", split, shards, v, r, ("flow",), _hours(r, rate["flow"]), gpu_flow)
    heads = run_heads(config)  # the stages this config's run makes, as the workflow decides
    sources = {h.motion_source for h in heads.values() if h.motion}
    if "student" in sources:
        row("moclip_train", "all", 1, 0, 0, (), student_hours(config, splits, rate), True)
    for source in sorted(sources):
        stage = "moclip_export" if source == "student" else "flow_clip_export"
        for split, s in splits.items():
            row(stage, split, shards, s["videos"], s["rows"], ("motion",),
                _hours(s["rows"], rate["student"]), True, ("moclip_export",))
    for head in heads:
        row("head", head, 1, 0, 0, (), None, True)
    row("report", "all", 1, 0, 0)
    return out


def make_plan(config: dict, workdir=".", bench: str | None = None, sample: int = 16,
              assume: tuple[int, float] = (300, 30.0), measure_flow: bool = False) -> dict:
    workdir = Path(workdir)
    splits, probes = split_rows(config, workdir, sample, assume)
    layouts = stream_layouts(config, probes, workdir, measure_flow)
    rate, rate_source = rates(config, read_bench(bench) if bench else None)
    stages = stage_rows(config, splits, layouts, rate)
    streams = {k: {"bytes_per_row": round(v["per_row"], 1), "source": v["source"],
                   "disk_bytes": sum(r["disk_bytes"] for r in stages
                                     if r["stage"] in {"clip": ("clip", "extract"), "flow": ("flow",),
                                                       "motion": ("moclip_export", "flow_clip_export")}[k])}
               for k, v in layouts.items()}
    # extract rows hold clip and flow together: split them again per stream
    for k in EXTRACTED:
        n = config["shards"]
        streams[k]["disk_bytes"] = int(sum(n * shard_bytes(layouts[k], s["videos"] / n, s["rows"] / n)
                                           for s in splits.values()))
    hours = [r["device_hours"] for r in stages if r["device_hours"] is not None]
    return {"name": config["dataset"]["name"], "shards": config["shards"], "device": config["device"],
            "train_split": config["dataset"]["train_split"], "eval_split": config["dataset"]["eval_split"],
            "splits": splits, "stages": stages, "streams": streams,
            "disk_bytes": sum(r["disk_bytes"] for r in stages),
            "device_hours": sum(hours) if hours else None, "rates": rate, "rates_source": rate_source}


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def format_plan(plan: dict) -> str:
    lines = [f"plan of {plan['name']}: {plan['shards']} shards per split, device {plan['device']}"]
    for split, s in plan["splits"].items():
        lines.append(f"  {split}: {s['listed']} listed, {s['present']} found, {s['videos']} videos, "
                     f"{s['rows']:,} rows; {s['source']}")
    width = max([12] + [len(r["split"]) for r in plan["stages"]]) + 1  # a head's whole name
    lines.append(f"{'stage':<15}{'split':<{width}}{'jobs':>5}{'videos':>9}{'rows':>12}{'disk':>11}"
                 f"{'dev-hours':>11}{'h/job':>8}{'asked':>8}{'mem/job':>10}{'cpus':>6}  gpu")
    over = []
    for r in plan["stages"]:
        hours = "-" if r["device_hours"] is None else f"{r['device_hours']:.2f}"
        per_job = "-" if r["hours_per_job"] is None else f"{r['hours_per_job']:.1f}"
        if r["hours_per_job"] is not None and r["hours_per_job"] > r["runtime_hours_asked"]:
            over.append(f"{r['stage']} ({r['split']})")
        lines.append(f"{r['stage']:<15}{r['split']:<{width}}{r['jobs']:>5}{r['videos'] or '-':>9}"
                     f"{r['rows'] or '-':>12}{_size(r['disk_bytes']) if r['disk_bytes'] else '-':>11}"
                     f"{hours:>11}{per_job:>8}{r['runtime_hours_asked']:>8.1f}"
                     f"{r['mem_mb'] / 1000:>8.1f}GB{r['threads']:>6}  {'yes' if r['gpu'] else '-'}")
    total_h = plan["device_hours"]
    lines.append(f"features on disk: {_size(plan['disk_bytes'])} "
                 + "(" + ", ".join(f"{k} {_size(v['disk_bytes'])}" for k, v in plan["streams"].items()) + ")"
                 + (f"; device-hours: {total_h:.1f}" if total_h is not None else ""))
    for k, v in plan["streams"].items():
        lines.append(f"  {k}: {_size(v['bytes_per_row'])} per row, {v['source']}")
    known = ", ".join(f"{k} {v:.0f}" for k, v in plan["rates"].items() if v)
    lines.append(f"rates (frames/s): {known or 'none known for these models'}; from {plan['rates_source']}")
    for split, s in plan["splits"].items():
        if not s["videos"]:
            lines.append(f"WARNING: split {split!r} has no readable video ({s['listed']} listed, "
                         f"{s['present']} found under dataset.videos): check the paths and files")
    for role in ("train_split", "eval_split"):
        if plan.get(role) and plan[role] not in plan["splits"]:
            lines.append(f"WARNING: dataset.{role} {plan[role]!r} has no listed video")
    if over:
        lines.append(f"WARNING: jobs of {', '.join(over)} would run longer than the runtime they ask "
                     f"for (cluster.runtime_min + cluster.runtime_per_video_s x videos per job): raise "
                     f"those, or the shards, before submitting to a scheduler")
    lines.append("h/job: device-hours per job at these rates; asked: the runtime a job asks the "
                 "scheduler for (hours); device-hours: the student's training counts 3x its forward pass per frame per epoch; "
                 "the heads' cost is `python -m pipeline bench-heads`' to measure; mem/job: the "
                 "first attempt's request (cluster.mem_mb)")
    return "\n".join(lines)
