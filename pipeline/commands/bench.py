"""Commands that measure and plan: bench (the extraction stages on real videos), bench-heads
(training on a synthetic store of a real length distribution) and plan (a run's cost before it
runs)."""
from __future__ import annotations

import logging
from pathlib import Path

from . import (CONFIG_FILES, CONFIG_OVERRIDES, DECODERS, DEVICE, PipelineError, arg, command,
               head_names, params, positive_int)

log = logging.getLogger("pipeline")


@command("bench", "frames/s and peak memory of decode, CLIP, flow and the student on the given "
         "videos, against the model alone (floor) and the straightforward path (baseline), on the "
         "current device",
         arg("videos", nargs="+", help="video files or folders"),
         arg("--clip-model", default="ViT-B-32"),
         arg("--pretrained", default=None, help="weights tag or file (default: random, fine for timing)"),
         arg("--batch-size", type=int, default=256, help="CLIP batch size"),
         arg("--flow-model", default="raft", help="ptlflow model name, or dis / farneback / tvl1"),
         arg("--flow-checkpoint", default=None, help="default: random weights (timing only)"),
         arg("--flow-size", type=int, default=256, help="flow working size (pixels)"),
         arg("--flow-store-size", type=int, default=112),
         arg("--flow-batch-size", type=int, default=16),
         arg("--max-frames", type=int, default=64, help="frames per video"),
         arg("--decode-workers", type=int, default=None,
             help="decoding threads (default: 2 on CPU, up to 8 beside a GPU)"),
         arg("--decoder", choices=DECODERS, help="how the stages decode: opencv (default) or "
             "torchcodec (NVDEC on a CUDA device)"),
         arg("--no-baseline", action="store_true", help="skip the straightforward path"),
         arg("--repeats", type=int, default=3, help="each figure is the best of this many runs"),
         arg("--budget", type=float, default=600, help="seconds the bench may take: frames, then "
             "repeats, are cut to fit, timed on a few frames first (0: no limit)"),
         arg("--baseline-flow-frames", type=int, default=128,
             help="the pair-by-pair flow baseline is timed on this many frames"),
         DEVICE,
         arg("--student-precision", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
             help="the student's training step's precision (moclip.precision; auto: bfloat16 on a "
             "GPU, float32 on a CPU); a plan uses the rate for configs of the same"),
         arg("--csv", help="also write the table as CSV"))
def cmd_bench(a):
    from ..bench import device_name, format_table, run_bench
    from ..plan import write_bench
    from ..compute import pick_device
    device = pick_device(a.device)
    clip = params({"model": a.clip_model, "pretrained": a.pretrained, "batch_size": a.batch_size,
                   "decode_workers": a.decode_workers}, "clip")
    flow = {"backend": "ptlflow", "model": a.flow_model, "checkpoint": a.flow_checkpoint}
    if a.flow_model in ("dis", "farneback", "tvl1"):
        flow = {"backend": a.flow_model}
    flow = params({**flow, "work_size": a.flow_size, "size": a.flow_store_size,
                   "batch_size": a.flow_batch_size, "decode_workers": a.decode_workers}, "flow")
    sampling = params({"mode": "all", "max_frames": a.max_frames}, "sampling")
    rows, bad, sampled = run_bench(a.videos, clip, flow, sampling, device, baseline=not a.no_baseline,
                                   repeats=a.repeats, baseline_flow_frames=a.baseline_flow_frames,
                                   decoder=a.decoder or "opencv", budget=a.budget,
                                   student_precision=a.student_precision)
    for p in bad:
        log.warning("skipped %s: %s", p.path, p.reason)
    print(f"device: {device_name(device)}; clip {a.clip_model} ({a.pretrained or 'random weights'}), "
          f"flow {a.flow_model} at {a.flow_size}px")
    print(format_table(rows))
    print(sampled)
    if a.csv:
        from ..compute import compute_precision
        write_bench(rows, a.csv, a.clip_model, a.flow_model, a.flow_size,
                    compute_precision(a.student_precision, device, "bfloat16"))


@command("bench-storage", "bytes a row and one core's encode and decode rows/s of each lossless "
         "layout of flow rows (the pipeline's and candidates), on DIS flow of the given videos",
         arg("videos", nargs="+", help="video files"),
         arg("--rows", type=positive_int, default=48, help="flow rows spread over each video"),
         arg("--work-size", type=positive_int, default=360, help="short side flow is computed at"),
         arg("--size", type=positive_int, default=224, help="side of the stored square flow"))
def cmd_bench_storage(a):
    from ..bench_storage import format_table, run
    print(f"DIS flow at {a.work_size} px stored at {a.size} px, {a.rows} rows per video of "
          f"{', '.join(Path(v).name for v in a.videos)}; one core")
    print(format_table(run(a.videos, a.rows, a.work_size, a.size)))


@command("bench-heads", "training samples/s, seconds per epoch and peak memory of each head on a "
         "synthetic store with a real length distribution, in memory and streamed",
         arg("--heads", nargs="+", default=head_names(trained_only=True), choices=head_names()),
         arg("--lengths", default="ak", help="ak (Animal Kingdom's every-frame clips: median about "
             "300 rows, a few over 3000) or a file with one row count per line"),
         arg("--videos", type=positive_int, default=24000),
         arg("--classes", type=positive_int, default=140),
         arg("--frames", default="all", help="all, or rows sampled per video"),
         arg("--dim", type=positive_int, default=512),
         arg("--batch-size", type=positive_int, default=8),
         arg("--steps", type=positive_int, default=10, help="timed training steps per head"),
         arg("--batch-rows", type=positive_int, help="the heads' batch_rows (most padded rows per "
             "batch); default: batch-size videos whatever their length"),
         arg("--read", nargs="+", default=["memory", "stream"], choices=["memory", "stream"]),
         arg("--student-model", default="ViT-B-32", help="the student's CLIP (random weights), or "
             "none to leave the student out"),
         arg("--student-batch", type=positive_int, help="the student's windows per step (default: "
             "32 on a GPU; 2 on a CPU, where a ViT-B-32 step on 8 windows of 8 frames already "
             "peaks at 3.8 GB)"),
         arg("--student-steps", type=positive_int, default=3, help="the student's timed steps"),
         arg("--seq-len", type=positive_int, default=8, help="the student's rows per window"),
         arg("--work", help="folder for the synthetic store (default: the system's temp)"),
         DEVICE,
         arg("--json"))
def cmd_bench_heads(a):
    import tempfile

    import numpy as np

    from ..bench_heads import bench_heads, format_table, ragged_lengths, to_json
    from ..compute import pick_device
    lengths = ragged_lengths(a.lengths, a.videos)
    frames = a.frames if a.frames == "all" else int(a.frames)
    print(f"{a.videos} videos, rows per video: median {int(np.median(lengths))}, max {lengths.max()}, "
          f"{int((lengths > 3000).sum())} over 3000; {lengths.sum()} rows x {a.dim}-d x 2 streams "
          f"({lengths.sum() * a.dim * 2 * 2 / 2 ** 30:.1f} GB of float16, in memory or streamed); "
          f"frames {frames}, batch {a.batch_size}, {a.steps} timed steps per head")
    with tempfile.TemporaryDirectory(dir=a.work) as work:
        student_batch = a.student_batch or (32 if pick_device(a.device or "auto").type == "cuda" else 2)
        student = None if a.student_model == "none" else {
            "model": a.student_model, "batch_size": student_batch, "seq_len": a.seq_len, "steps": a.student_steps}
        rows = bench_heads(a.heads, lengths, Path(work), a.dim, a.classes, frames, a.batch_size,
                           a.steps, a.device, tuple(a.read), a.batch_rows, student)
    print(format_table(rows))
    if a.json:
        Path(a.json).write_text(to_json(rows))


@command("plan", "what a run will do and cost before it runs: jobs, videos, rows, disk and "
         "device-hours per stage and split, and each job's resources",
         CONFIG_FILES, CONFIG_OVERRIDES,
         arg("--bench", help="a `bench --csv` file: device-hours at its measured rates"),
         arg("--sample", type=int, default=16, help="videos probed when the run has no probe "
             "tables yet"),
         arg("--measure-flow", action="store_true", help="measure flow's compression on the "
             "sample videos when the run has no flow shards yet (loads OpenCV; otherwise an "
             "assumed ratio, which the plan names)"),
         arg("--frames-per-video", type=int, default=300, help="assumed length when no listed "
             "video is found (at --fps)"),
         arg("--fps", type=float, default=30.0),
         arg("--json", help="also write the plan as JSON (disk_bytes: all feature files)"))
def cmd_plan(a):
    import json

    from ..config import parse_overrides, resolve_config
    from ..plan import PlanError, format_plan, make_plan
    config, _ = resolve_config(a.configfile or [], parse_overrides(a.config))
    try:
        plan = make_plan(config, ".", a.bench, a.sample, (a.frames_per_video, a.fps), a.measure_flow)
    except PlanError as e:
        raise PipelineError(str(e)) from None
    print(format_plan(plan))
    if a.json:
        Path(a.json).write_text(json.dumps(plan, indent=2))
