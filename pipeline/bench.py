"""``python -m pipeline bench``: frames/s and peak memory of each extraction stage.

Runs the real stage code (the same functions the Snakemake rules call) on the given videos,
on the current device, and prints one row per stage.
"""
from __future__ import annotations

import csv
import logging
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .bench_budget import Costs, cap_frames, describe, fit_budget
from .features.clip import extract_clip
from .features.common import decode_ahead, decode_workers
from .features.decoding import FELL_BACK, torchcodec_decoder, video_decoder
from .features.extract import extract_both
from .features.flow import extract_flow
from .video import DECODE_PASSES, count_by_decoding, expand_videos, probe_files, probe_video, read_frames

log = logging.getLogger("pipeline")
COLUMNS = ["stage", "frames", "frames_per_s", "floor_frames_per_s", "baseline_frames_per_s",
           "floor_fraction", "speedup", "peak_mem_mb", "limit", "decoder", "decodes_per_video"]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak(device) -> tuple[float, str]:
    _sync(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "GPU peak allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"


def _reset(device):
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _timed(fn, device):
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


# ---------------------------------------------------------------- floors: the model alone

def _batches(n: int, bs: int):
    return [min(bs, n - s) for s in range(0, n, bs)]


@torch.inference_mode()
def clip_floor(model, size: int, frames: int, bs: int, device) -> float:
    from .compute import autocast
    x = torch.randn(bs, 3, size, size, device=device)
    with autocast(device):
        model.encode_image(x[:2])
        return frames / _timed(lambda: [model.encode_image(x[:b]) for b in _batches(frames, bs)], device)


@torch.inference_mode()
def flow_floor(cfg: dict, frames: int, device, model=None) -> float:
    """Flow model alone on ready-made frames, in the stage's batches (``batch_size`` pairs that
    span videos) and its precision."""
    from .features.flow import classical_flow, ptlflow_pairs
    w = cfg["work_size"]
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (min(frames, cfg["batch_size"]), w, w, 3), dtype=np.uint8)
    b = np.roll(a, 2, axis=2)
    if cfg["backend"] == "ptlflow":
        pairs = torch.from_numpy(np.stack([a, b], 1)).to(device)
        half = cfg["half"] and device.type == "cuda"
        ptlflow_pairs(model, pairs[:1], device, half)
        return frames / _timed(lambda: [ptlflow_pairs(model, pairs[:n], device, half)
                                        for n in _batches(frames, cfg["batch_size"])], device)
    # the stage runs classical flow on its decode threads, so its floor gets as many threads;
    # its input is grey
    from concurrent.futures import ThreadPoolExecutor
    reps = -(-frames // len(a))
    ga, gb = np.ascontiguousarray(a[..., 0]), np.ascontiguousarray(b[..., 0])
    with ThreadPoolExecutor(decode_workers(cfg, device)) as pool:
        sec = _timed(lambda: list(pool.map(lambda _: classical_flow(ga, gb, cfg["backend"]), range(reps))), device)
    return reps * len(a) / sec


def half_precision_cost(model, probes, cfg: dict, device, pairs: int = 32) -> dict:
    """What half precision costs RAFT-style models on these videos' real frames: the mean
    end-point error (working pixels) of float16 flow against float32, the mean float32 flow
    length beside it, and both rates on the same batch. CUDA only: the flow stage computes in
    float32 on a CPU (where bfloat16 RAFT took minutes a pair on this project's CI machine)."""
    from .features.flow import centre_square, pair_partners, ptlflow_pairs
    firsts, seconds = [], []
    for p in probes:
        for t, u in zip(p.sampled, pair_partners(p.sampled, p.frames, cfg["step"])):
            if len(firsts) < pairs:
                a, b = read_frames(p.path, [min(t, u), max(t, u)], lambda f: centre_square(f, cfg["work_size"]))
                firsts.append(a)
                seconds.append(b)
    batch = torch.from_numpy(np.stack([np.stack(firsts), np.stack(seconds)], 1)).to(device)
    ptlflow_pairs(model, batch[:1], device, True)
    out = {}
    for name, half in (("float32", False), ("half", True)):
        flows = []
        sec = _timed(lambda: flows.extend(ptlflow_pairs(model, batch[s:s + cfg["batch_size"]], device, half)
                                          for s in range(0, len(batch), cfg["batch_size"])), device)
        out[name] = torch.cat(flows)
        out[f"{name}_frames_per_s"] = len(batch) / sec
    return {"epe": float((out["half"] - out["float32"]).norm(dim=1).mean()),
            "magnitude": float(out["float32"].norm(dim=1).mean()), "pairs": len(batch),
            "dtype": "float16",
            "float32_frames_per_s": out["float32_frames_per_s"], "half_frames_per_s": out["half_frames_per_s"]}


@torch.inference_mode()
def student_floor(student, size: int, frames: int, bs: int, device) -> float:
    from .compute import autocast
    x = torch.randint(0, 256, (bs, 2, size, size), dtype=torch.uint8, device=device)
    with autocast(device):
        student.embed(x[:2])
        return frames / _timed(lambda: [student.embed(x[:b]) for b in _batches(frames, bs)], device)


# ---------------------------------------------------------------- the straightforward baseline
# What a researcher writes first: per-frame PIL preprocessing through the model's own
# transform, one model call per video; flow one pair at a time at the video's own resolution,
# written out as a colour-wheel mp4 and decoded again for the student. Kept here only, as the
# reference the pipeline is measured against.

@torch.no_grad()
def baseline_clip(probes, model, transform, device) -> int:
    from PIL import Image
    n = 0
    for p in probes:
        frames = read_frames(p.path, p.sampled)
        x = torch.stack([transform(Image.fromarray(f)) for f in frames]).to(device)
        model.encode_image(x)
        n += len(frames)
    return n


@torch.no_grad()
def baseline_flow(probes, cfg, device, model, out_dir: Path) -> int:
    import cv2
    from .features.flow import classical_flow, pair_partners
    from .moclip.model import flow_to_rgb
    n = 0
    for p in probes:
        partners = pair_partners(p.sampled, p.frames, cfg["step"])
        writer = None
        for t, u in zip(p.sampled, partners):
            a, b = read_frames(p.path, [min(t, u), max(t, u)])
            if cfg["backend"] == "ptlflow":
                pair = torch.from_numpy(np.stack([a, b])[None]).to(device).permute(0, 1, 4, 2, 3)
                flow = model({"images": pair.flip(2).float() / 255})["flows"][0, 0]
            else:
                flow = torch.from_numpy(classical_flow(a[None], b[None], cfg["backend"])[0])
            rgb = (flow_to_rgb(flow[None].float(), cfg["bound"])[0].permute(1, 2, 0) * 255).byte().cpu().numpy()
            if writer is None:
                writer = cv2.VideoWriter(str(out_dir / f"{p.video_id}.mp4"),
                                         cv2.VideoWriter_fourcc(*"mp4v"), 10, rgb.shape[1::-1])
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            n += 1
        writer.release()
    return n


@torch.no_grad()
def baseline_student(probes, student, transform, device, flow_dir: Path) -> int:
    from PIL import Image
    n = 0
    for p in probes:
        path = flow_dir / f"{p.video_id}.mp4"
        frames = read_frames(path, list(range(len(p.sampled))))
        x = torch.stack([transform(Image.fromarray(f)) for f in frames]).to(device)
        student.visual(x)
        n += len(frames)
    return n


# ---------------------------------------------------------------- the whole benchmark

def _log_rows(rows: dict) -> None:
    for stage, r in rows.items():
        rates = (f"{k} {v:.1f} frames/s" for k, v in r.items()
                 if k in ("frames_per_s", "floor", "baseline", "separate"))
        log.info("bench %s: %s", stage, ", ".join(rates))


def _first_frames(probes, n: int) -> list:
    """The probes cut down to their first ``n`` planned frames in all (for slow baselines)."""
    from dataclasses import replace
    out = []
    for p in probes:
        if n <= 0:
            break
        out.append(replace(p, sampled=p.sampled[:n]))
        n -= len(out[-1].sampled)
    return out


def _rounds(measures: dict, repeats: int) -> dict:
    """The best frames/s of each measurement over ``repeats`` rounds. A round runs the stage,
    its floor and its baseline one after the other, so all three see the same machine state:
    shared machines drift by tens of per cent over minutes, and interference only ever slows
    a run down (the timeit convention)."""
    best: dict = {}
    for _ in range(max(1, repeats)):
        for key, measure in measures.items():
            best[key] = max(best.get(key, 0.0), measure())
    return best


def _stage_run(fn, device, peaks: list, passes: list | None = None, probes=()):
    """A measurement of a stage's own clock (frames/s) that also records its peak memory and
    the full decoding passes it made per video (``passes``)."""
    def run():
        _reset(device)
        before = sum(DECODE_PASSES[p.path] for p in probes)
        fps = fn()
        peaks.append(_peak(device))
        if passes is not None:
            passes.append((sum(DECODE_PASSES[p.path] for p in probes) - before) / max(len(probes), 1))
        return fps
    return run


def calibrate(model, size: int, flow_cfg: dict, flow_model, probes, device) -> Costs:
    """Seconds per frame of each model alone on a few frames: what the time budget plans with.
    The pair-by-pair baseline runs at the videos' own resolution: the floor scaled by the
    pixels, squared for a flow model (RAFT-style models correlate every pixel with every other
    at 1/8 resolution: a 720p pair costs about 200 of a 256 px one, not 14)."""
    clip = 1 / clip_floor(model, size, 4, 4, device)
    flow = 1 / flow_floor({**flow_cfg, "batch_size": 2}, 2, device, flow_model)
    pixels = max(1.0, max(p.width * p.height for p in probes) / flow_cfg["work_size"] ** 2)
    return Costs(clip, flow, flow * pixels ** (2 if flow_model is not None else 1),
                 flow_model is not None and device.type == "cuda")


def run_bench(videos, clip_cfg: dict, flow_cfg: dict, sampling: dict, device, baseline: bool = True,
              repeats: int = 3, baseline_flow_frames: int = 128, decoder: str = "opencv",
              budget: float | None = 600):
    """Rows of the benchmark table, the unreadable videos, and what was sampled. The
    pair-by-pair flow baseline (and the student baseline that reads its mp4s) is timed on the
    first ``baseline_flow_frames`` frames only: at the videos' own resolution it runs at a few
    frames/s, and its rate is what is compared. ``budget`` (seconds) cuts the frames, then the
    repeats, so that slow models on a CPU still finish (:mod:`pipeline.bench_budget`)."""
    from .factory import load_clip, open_clip_module, preprocess_cfg
    from .features.clip import batch_size_for
    from .features.flow import load_flow_model
    from .moclip.export import export_motion
    from .moclip.model import MotionStudent
    probes, bad = readable_probes(videos, sampling)
    frames = sum(len(p.sampled) for p in probes)
    model = load_clip(clip_cfg["model"], clip_cfg["pretrained"], device)
    pcfg = preprocess_cfg(model)
    transform = open_clip_module().image_transform(pcfg["size"], is_train=False, mean=pcfg["mean"], std=pcfg["std"])
    flow_model = (load_flow_model(flow_cfg["model"], flow_cfg["checkpoint"], device)[0]
                  if flow_cfg["backend"] == "ptlflow" else None)
    planned = frames
    choice = fit_budget(calibrate(model, pcfg["size"], flow_cfg, flow_model, probes, device), frames,
                        repeats, baseline, baseline_flow_frames, 32, budget)
    probes = cap_frames(probes, choice.frames)
    frames, repeats = sum(len(p.sampled) for p in probes), choice.repeats
    baseline_flow_frames = choice.baseline_flow_frames
    sampled = describe(choice, probes, planned, budget)
    log.info("bench %s", sampled)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # warm-up on one video: model load, cudnn autotune and lazy init are not throughput
        extract_clip(probes[:1], tmp / "w-clip.h5", clip_cfg, device, progress=False, decoder=decoder)
        extract_flow(probes[:1], tmp / "w-flow.h5", flow_cfg, device, progress=False, decoder=decoder)
        few = _first_frames(probes, baseline_flow_frames)
        n_few = sum(len(p.sampled) for p in few)

        def rate(fn, n=frames):
            return lambda: n / _timed(fn, device)

        def stage_rate(fn, cfg, name):
            def run():
                st = fn(probes, tmp / f"{name}.h5", cfg, device, progress=False, decoder=decoder)
                return st["frames"] / st["seconds"]
            return run

        peaks = {k: [] for k in ("probe", "decode", "clip", "flow", "extract", "student")}
        passes = {k: [] for k in peaks}

        def measured(stage, fn):
            return _stage_run(fn, device, peaks[stage], passes[stage], probes)
        all_frames = sum(p.frames for p in probes)
        probe = {"frames_per_s": measured("probe", rate(lambda: [probe_video(p.path, p.video_id, sampling)
                                                                  for p in probes], all_frames))}
        if baseline:  # what probing did before: decode every frame to count them
            probe["baseline"] = rate(lambda: [count_by_decoding(p.path) for p in probes], all_frames)
        rows["probe"] = _rounds(probe, repeats)
        rows["probe"]["frames"] = all_frames
        rows["probe"]["count_differences"] = count_differences(probes)
        bare = video_decoder(decoder, device, lambda p: (  # decoded frames, nothing done with them
            sorted(set(p.sampled)), {"frames": (set(p.sampled), lambda f: 0, lambda c: [0] * len(c))}))
        decode = {"frames_per_s": measured("decode", rate(lambda: [None for _ in decode_ahead(
            probes, bare, workers=decode_workers(clip_cfg, device))]))}
        if baseline:
            decode["baseline"] = rate(lambda: [read_frames(p.path, p.sampled) for p in probes])
        rows["decode"] = _rounds(decode, repeats)
        clip_bs = batch_size_for(clip_cfg["batch_size"], device)
        clip = {"frames_per_s": measured("clip", stage_rate(extract_clip, clip_cfg, "clip")),
                "floor": lambda: clip_floor(model, pcfg["size"], frames, clip_bs, device)}
        if baseline:
            clip["baseline"] = rate(lambda: baseline_clip(probes, model, transform, device))
        rows["clip"] = _rounds(clip, repeats)
        _log_rows(rows)
        rows["flow"] = _rounds({"frames_per_s": measured("flow", stage_rate(extract_flow, flow_cfg, "flow")),
                                "floor": lambda: flow_floor(flow_cfg, frames, device, flow_model)}, repeats)
        if flow_model is not None and device.type == "cuda":  # the stage's half precision is CUDA's
            rows["flow"]["half_cost"] = half_precision_cost(flow_model, probes, flow_cfg, device,
                                                            choice.half_pairs)
        if baseline and n_few:  # pair by pair, timed once; it also writes the student's mp4s
            rows["flow"]["baseline"] = rate(lambda: baseline_flow(few, flow_cfg, device, flow_model, tmp), n_few)()
        _log_rows(rows)

        def fused():  # clip and flow from one decode of each video (extraction: fused)
            st = extract_both(probes, tmp / "fc.h5", tmp / "ff.h5", clip_cfg, flow_cfg, device, progress=False,
                              decoder=decoder)
            return st["frames"] / st["seconds"]
        rows["extract"] = _rounds({"frames_per_s": measured("extract", fused)}, repeats)
        rows["extract"]["floor"] = 1 / (1 / rows["clip"]["floor"] + 1 / rows["flow"]["floor"])
        rows["extract"]["separate"] = 1 / (1 / rows["clip"]["frames_per_s"] + 1 / rows["flow"]["frames_per_s"])
        _log_rows(rows)
        student = MotionStudent(load_clip(clip_cfg["model"], clip_cfg["pretrained"], device).visual, 2,
                                pcfg["size"], pcfg["mean"], pcfg["std"], flow_cfg["bound"]).to(device).eval()
        torch.save({"state_dict": student.state_dict(), "clip_pretrained": clip_cfg["pretrained"],
                    "meta": _student_meta(tmp / "flow.h5", clip_cfg, pcfg, student)}, tmp / "student.pt")

        def export():  # the stage's own clock: rows/s after the student is loaded
            st = export_motion(tmp / "student.pt", tmp / "flow.h5", tmp / "motion.h5", device)
            _sync(device)
            return st["rows"] / st["seconds"]
        measures = {"frames_per_s": measured("student", export),
                    "floor": lambda: student_floor(student, flow_cfg["size"], frames,
                                                   batch_size_for(256, device), device)}
        if baseline and n_few:
            measures["baseline"] = rate(lambda: baseline_student(few, student, transform, device, tmp), n_few)
        rows["student"] = _rounds(measures, repeats)
        for stage, r in rows.items():
            r["peak"] = max(peaks[stage])
            r["passes"] = max(passes[stage])
        _log_rows(rows)
    used = ("torchcodec (NVDEC)" if device.type == "cuda" else "torchcodec (CPU)") \
        if decoder == "torchcodec" and torchcodec_decoder(device) is not None else "OpenCV (CPU)"
    fell_back = sum(p.path in FELL_BACK for p in probes)
    if used.startswith("torchcodec") and fell_back:
        used = "OpenCV (CPU)" if fell_back == len(probes) else used + f" + {fell_back} on OpenCV"
    return table_rows(rows, frames, device, used), bad, sampled


def readable_probes(videos, sampling: dict):
    """(readable probes, unreadable ones) of the given files and folders; none readable stops."""
    probes = probe_files(expand_videos(videos), sampling)
    bad = [p for p in probes if not p.readable]
    probes = [p for p in probes if p.readable]
    if not probes:
        raise RuntimeError("none of the videos could be read: " +
                           "; ".join(f"{p.path}: {p.reason}" for p in bad))
    return probes, bad


STAGE_DECODERS = {"probe": "PyAV demux", "student": "- (flow store)"}  # stages no video decoder feeds


def table_rows(rows: dict, frames: int, device, decoder: str = "OpenCV (CPU)") -> list[dict]:
    """One row per stage: its rate against its floor and baseline, its peak memory, what limits
    it, which decoder fed it and how many full decoding passes it made per video."""
    out = []
    for stage, r in rows.items():
        fps, floor, base = r["frames_per_s"], r.get("floor"), r.get("baseline")
        # the student reads the flow shard, it decodes no video; probing demuxes
        decode_fps = rows["decode"]["frames_per_s"] if stage in ("clip", "flow", "extract") else None
        limit = {"decode": "decode", "probe": "demux"}.get(stage) or stage_limit(fps, floor, decode_fps, device)
        out.append({"stage": stage, "frames": r.get("frames", frames), "frames_per_s": fps,
                    "floor_frames_per_s": floor, "baseline_frames_per_s": base,
                    "floor_fraction": fps / floor if floor else None,
                    "speedup": fps / base if base else None,
                    "peak_mem_mb": r["peak"][0], "limit": limit, "memory": r["peak"][1],
                    "decoder": STAGE_DECODERS.get(stage, decoder), "decodes_per_video": r["passes"],
                    "separate": r.get("separate"), "count_differences": r.get("count_differences"),
                    "half_cost": r.get("half_cost")})
    return out


def stage_limit(fps: float, floor: float | None, decode: float | None, device) -> str:
    """What holds a stage back. The decode threads also resize (clip) or compute classical flow,
    so a stage within 1.5x of bare decoding is fed as fast as it can be. On a CPU, decoding and
    the model share the cores: a stage near 1 / (1/decode + 1/floor) wastes nothing, it pays
    for both."""
    if floor and fps >= 0.85 * floor:
        return "model"
    if decode is None:
        return "pipeline overhead"
    if decode < 1.5 * fps:
        return "decode"
    if floor and device.type == "cpu" and fps >= 0.85 / (1 / decode + 1 / floor):
        return "decode + model (shared cores)"
    return "pipeline overhead"


def _student_meta(flow_shard, clip_cfg, pcfg, student) -> dict:
    from .factory import weights_identity
    from .moclip.train import FLOW_KEYS
    from .store import read_attrs
    attrs = read_attrs(flow_shard)
    return {"teacher": {"model": clip_cfg["model"], "weights": weights_identity(clip_cfg["pretrained"])},
            "flow": {k: attrs.get(k) for k in FLOW_KEYS}, "clip_model": clip_cfg["model"],
            "n_classes": 2, "multilabel": True, "config_hash": "bench", "embed_dim": student.visual.output_dim,
            "config": {"train_blocks": "all", "adapter_alpha": 1.0, "export": "before_adapter"}}


def _f(v, spec):
    return format("-", spec.rstrip(".1f2f")) if v is None else format(v, spec)


def count_differences(probes) -> dict:
    """path -> (the probe's count, a full decode's count) of the videos where they differ."""
    return {p.path: (p.frames, n) for p in probes if (n := count_by_decoding(p.path)) != p.frames}


def probe_check(differences: dict) -> str:
    """The probe's frame counts against a full decode: equal, or the videos that differ."""
    if not differences:
        return "probe: frame counts equal a full decode on every video"
    return (f"probe: frame counts DIFFER FROM a full decode on {len(differences)} video(s): "
            + "; ".join(f"{path} (probe {a}, decode {b})" for path, (a, b) in differences.items()))


def format_table(rows: list[dict]) -> str:
    lines = [f"{'stage':<9}{'frames/s':>10}{'floor':>10}{'baseline':>10}{'of floor':>10}"
             f"{'speedup':>9}{'peak MB':>9}{'decodes':>9}  {'decoder':<20}limited by"]
    for r in rows:
        lines.append(f"{r['stage']:<9}{r['frames_per_s']:>10.1f}{_f(r['floor_frames_per_s'], '>10.1f')}"
                     f"{_f(r['baseline_frames_per_s'], '>10.1f')}{_f(r['floor_fraction'], '>10.2f')}"
                     f"{_f(r['speedup'], '>8.1f') + 'x' if r['speedup'] else format('-', '>9')}"
                     f"{r['peak_mem_mb']:>9.0f}{r['decodes_per_video']:>9.1f}  {r['decoder']:<20}{r['limit']}")
    lines.append(f"floor: the model alone on ready-made tensors; baseline: per-frame PIL preprocessing, "
                 f"one call per video, flow pair by pair via an mp4; memory: {rows[0]['memory']}")
    lines.append("decodes: full decoding passes per video; frames of the probe row: every frame of the "
                 "videos, against a probe that decodes them all (the baseline)")
    for r in rows:
        if r["stage"] == "probe" and r["count_differences"] is not None:
            lines.append(probe_check(r["count_differences"]))
        if r.get("half_cost"):
            h = r["half_cost"]
            lines.append(f"flow in {h['dtype']} autocast on {h['pairs']} real frame pairs: "
                         f"{h['half_frames_per_s']:.1f} frames/s against {h['float32_frames_per_s']:.1f} in "
                         f"float32; end-point error against float32 {h['epe']:.3f} px (mean flow "
                         f"{h['magnitude']:.3f} px, working pixels)")
        if r["stage"] == "extract" and r["separate"]:
            lines.append(f"extract: clip and flow from one decode per video; the clip then flow stages "
                         f"together: {r['separate']:.1f} frames/s")
    if any(r["limit"].endswith("(shared cores)") for r in rows):
        lines.append("decode + model (shared cores): decoding and the model take turns on the same "
                     "CPU cores; the stage wastes nothing beyond paying for both")
    return "\n".join(lines)


def write_csv(rows: list[dict], path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def device_name(device) -> str:
    """The GPU's name, or the CPU's cores and torch's threads: what a bench table was timed on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
