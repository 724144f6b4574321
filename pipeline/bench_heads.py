"""``python -m pipeline bench-heads``: what training the heads and the student costs at a data
set's real length distribution, read from memory and streamed from the shards.

A synthetic feature store (clip and motion shards of random float16 rows, lengths drawn from
Animal Kingdom's every-frame distribution by default) is written once; then each head trains
for a few steps with the real trainer (:func:`pipeline.heads.trainer.train_head`), once with
the split in memory and once streamed, each in its own child process so that its peak resident
memory is its own. The student (:func:`pipeline.moclip.train.train_student`) always streams
windows of ``seq_len`` rows, so its cost per window does not depend on the lengths: it trains
one epoch on windows of random flow, and its epoch time is the every-window epoch of the
length distribution at that rate.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import resource
import time
from pathlib import Path

import numpy as np

COLUMNS = ["head", "read", "videos", "rows", "samples_per_s", "epoch_s", "peak_rss_mb", "peak_device_mb"]


def ragged_lengths(spec: str, n_videos: int, seed: int = 0) -> np.ndarray:
    """Rows per video. ``ak``: long-tailed like Animal Kingdom's every-frame clips (log-normal,
    median 300, clipped to 16..6000, so a few exceed 3000); else a file with one length per line
    (cycled or cut to ``n_videos``)."""
    rng = np.random.default_rng(seed)
    if spec == "ak":
        return np.clip(rng.lognormal(np.log(300), 0.8, n_videos), 16, 6000).astype(np.int64)
    values = np.array([int(x) for x in Path(spec).read_text().split()], np.int64)
    if not len(values) or values.min() < 1:
        raise ValueError(f"{spec}: expected one positive row count per line")
    return np.resize(values, n_videos)


def _store(out: Path, lengths, dim: int, n_classes: int, seed: int = 0) -> dict:
    """Clip and motion shards of random rows with these lengths, and the samples table."""
    from .store import FeatureWriter
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"clip": out / "clip.h5", "motion": out / "motion.h5"}
    samples = {}
    attrs = {"clip": {"model": "bench", "weights": "random"},
             "motion": {"model": "bench", "teacher": "bench", "student": "random", "embedding": "bench"}}
    writers = {k: FeatureWriter(p, k, (dim,), np.float16, attrs[k]) for k, p in paths.items()}
    try:
        for i, n in enumerate(lengths):
            vid = f"v{i:06d}"
            frames = np.arange(n)
            for w in writers.values():
                w.add(vid, frames, frames / 30.0, rng.standard_normal((n, dim), dtype=np.float32).astype(np.float16))
            samples[vid] = {"video_id": vid, "labels": sorted(set(rng.integers(0, n_classes, 2).tolist()))}
    finally:
        for w in writers.values():
            w.close()
    return {"paths": {k: str(v) for k, v in paths.items()}, "samples": samples}


def _run_one(args: dict, queue) -> None:
    """In a child process: train ``head`` for ``steps`` batches, report rate and peaks."""
    import os
    os.environ["PIPELINE_FEATURE_MEMORY_MB"] = "0"  # open streamed; the timed videos are read below
    import torch

    from .compute import pick_device
    from .heads.data import load_split
    from .heads.entry import resolve_head
    from .heads.trainer import train_head
    device = pick_device(args["device"])
    name = args["head"]
    head = resolve_head(name, {"epochs": 1, "frames": args["frames"], "batch_size": args["batch_size"],
                               "warmup_epochs": 0, "batch_rows": args["batch_rows"]})
    need_rgb, need_motion = head.rgb, head.motion
    store = args["store"]
    split = load_split([store["paths"]["clip"]], [store["paths"]["motion"]], store["samples"],
                       args["classes"], True, need_rgb, need_motion)
    # the timed epoch sees steps x batch videos drawn over the whole length distribution, the
    # same ones for both reads; "memory" holds just them (the whole split's size is reported)
    keep = np.random.default_rng(1).permutation(len(split))[: args["steps"] * args["batch_size"]]
    sub = split.subset(keep)
    if args["read"] == "memory":
        sub = sub.in_memory()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    train_head(head, sub, None, args["classes"], True, device, progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    rate = len(sub) / seconds
    queue.put({"head": name, "read": args["read"], "videos": len(split), "rows": int(split.lengths.sum()),
               "samples_per_s": rate, "epoch_s": len(split) / rate,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "peak_device_mb": torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None})


def _run_student(args: dict, queue) -> None:
    """In a child process: one epoch of the real student trainer on ``steps x batch`` windows
    of random flow (no validation split), timed from the first window to the last checkpoint."""
    import torch

    from .config import section
    from .factory import load_clip, weights_identity
    from .compute import pick_device
    from .moclip.train import open_data, train_student
    from .store import FeatureWriter
    device = pick_device(args["device"])
    clip_cfg = section("clip", {"model": args["model"], "pretrained": None})
    cfg = section("moclip", {"epochs": 1, "batch_size": args["batch_size"], "seq_len": args["seq_len"],
                             "warmup_epochs": 0, "epoch": "all_windows"})
    dim = load_clip(args["model"], None, quiet=True).visual.output_dim  # only its width
    flow_cfg = section("flow", {})
    work, rng = Path(args["work"]), np.random.default_rng(0)
    n, t, size = args["steps"] * cfg["batch_size"], cfg["seq_len"], flow_cfg["size"]
    flow_attrs = {"model": "bench", "weights": "random", "backend": "bench", "bound": flow_cfg["bound"],
                  "size": size, "step": 1, "work_size": flow_cfg["work_size"]}
    with FeatureWriter(work / "s-clip.h5", "clip", (dim,), np.float16,
                       {"model": args["model"], "weights": weights_identity(None)}) as wc, \
            FeatureWriter(work / "s-flow.h5", "flow", (2, size, size), np.uint8, flow_attrs) as wf:
        for i in range(n):
            frames = np.arange(t)
            wc.add(f"w{i}", frames, frames / 30.0, rng.standard_normal((t, dim)).astype(np.float16))
            wf.add(f"w{i}", frames, frames / 30.0, rng.integers(0, 256, (t, 2, size, size), np.uint8))
    samples = [{"video_id": f"w{i}", "labels": [int(rng.integers(args["classes"]))]} for i in range(n)]
    data = open_data([work / "s-clip.h5"], [work / "s-flow.h5"], [], [], samples, args["classes"], True, clip_cfg)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    train_student(data, cfg, clip_cfg, work / "student", device, progress=False)
    rate = n / (time.perf_counter() - start)
    windows = int(sum(-(-int(x) // t) for x in args["lengths"]))
    queue.put({"head": f"student {args['model']}", "read": "stream", "videos": len(args["lengths"]),
               "rows": int(sum(args["lengths"])), "samples_per_s": rate, "epoch_s": windows / rate,
               "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               "peak_device_mb": torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None})


def _in_child(target, args: dict) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(args, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"bench-heads: {args.get('head') or 'the student'} failed in its child process")
    return queue.get()


def bench_heads(heads, lengths: np.ndarray, work: Path, dim: int = 512, n_classes: int = 140,
                frames="all", batch_size: int = 8, steps: int = 10, device: str | None = None,
                reads=("memory", "stream"), batch_rows: int | None = None,
                student: dict | None = None) -> list[dict]:
    """``student``: ``{"model", "batch_size", "seq_len", "steps"}`` adds the student's row."""
    store = _store(Path(work), lengths, dim, n_classes)
    from .heads.registry import trains
    rows = []
    for read in reads:
        for head in heads:
            if not trains(head):
                continue
            rows.append(_in_child(_run_one, {
                "head": head, "read": read, "store": store, "classes": n_classes, "frames": frames,
                "batch_size": batch_size, "steps": steps, "device": device or "auto",
                "batch_rows": batch_rows}))
    if student:
        rows.append(_in_child(_run_student, {**student, "lengths": [int(x) for x in lengths],
                                             "classes": n_classes, "work": str(work),
                                             "device": device or "auto"}))
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'head':<22}{'read':<8}{'samples/s':>10}{'s/epoch':>10}{'peak RSS MB':>13}{'device MB':>11}"]
    for r in rows:
        dev = "-" if r["peak_device_mb"] is None else f"{r['peak_device_mb']:.0f}"
        lines.append(f"{r['head']:<22}{r['read']:<8}{r['samples_per_s']:>10.1f}{r['epoch_s']:>10.0f}"
                     f"{r['peak_rss_mb']:>13.0f}{dev:>11}")
    return "\n".join(lines)


def to_json(rows) -> str:
    return json.dumps(rows, indent=1)
