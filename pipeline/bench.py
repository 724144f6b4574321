"""``python -m pipeline bench``: frames/s and peak memory of each extraction stage.

Runs the real stage code (the same functions the Snakemake rules call) on the given videos,
on the current device, and prints one row per stage.
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from .bench_budget import Costs, cap_frames, describe, fit_budget
from .bench_reference import (baseline_clip, baseline_flow, baseline_student, clip_floor, flow_floor,
                              half_precision_cost, peak_memory, reset_peak, student_floor, sync, timed)
from .features.clip import extract_clip
from .features.common import decode_ahead, decode_workers
from .features.decoding import FELL_BACK, torchcodec_decoder, video_decoder
from .features.extract import extract_both
from .features.flow import extract_flow
from .plan import BENCH_STAGES
from .video import DECODE_PASSES, count_by_decoding, expand_videos, probe_files, probe_video, read_frames

log = logging.getLogger("pipeline")

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


@dataclasses.dataclass
class _Session:
    """What every stage's measurement shares: the sampled videos, the device, the rounds, and
    each stage's peak memory and decoding passes."""
    probes: list
    device: torch.device
    repeats: int
    decoder: str
    baseline: bool
    tmp: Path
    few: list  # the first frames only: the slow pair-by-pair baselines
    peaks: dict = dataclasses.field(default_factory=lambda: {k: [] for k in STAGES})
    passes: dict = dataclasses.field(default_factory=lambda: {k: [] for k in STAGES})

    @property
    def frames(self) -> int:
        return sum(len(p.sampled) for p in self.probes)

    def rate(self, fn, n: int | None = None):
        """A measurement: frames/s of ``fn`` over ``n`` frames (default: every sampled frame)."""
        return lambda: (self.frames if n is None else n) / timed(fn, self.device)

    def measured(self, stage: str, fn):
        """``fn`` (a stage's own frames/s) that also records its peak memory and the full
        decoding passes it made per video."""
        def run():
            reset_peak(self.device)
            before = sum(DECODE_PASSES[p.path] for p in self.probes)
            fps = fn()
            self.peaks[stage].append(peak_memory(self.device))
            self.passes[stage].append((sum(DECODE_PASSES[p.path] for p in self.probes) - before)
                                      / max(len(self.probes), 1))
            return fps
        return run

    def stage_rate(self, extract, cfg: dict, name: str):
        """A stage's own clock (frames/s), as its extraction function reports it."""
        def run():
            st = extract(self.probes, self.tmp / f"{name}.h5", cfg, self.device, progress=False,
                         decoder=self.decoder)
            return st["frames"] / st["seconds"]
        return self.measured(name, run)


STAGES = BENCH_STAGES


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


def _bench_probe(b: _Session, sampling: dict) -> dict:
    every = sum(p.frames for p in b.probes)
    probe = {"frames_per_s": b.measured("probe", b.rate(
        lambda: [probe_video(p.path, p.video_id, sampling) for p in b.probes], every))}
    if b.baseline:  # what probing did before: decode every frame to count them
        probe["baseline"] = b.rate(lambda: [count_by_decoding(p.path) for p in b.probes], every)
    return {**_rounds(probe, b.repeats), "frames": every, "count_differences": count_differences(b.probes)}


def _bench_decode(b: _Session, clip_cfg: dict) -> dict:
    bare = video_decoder(b.decoder, b.device, lambda p: (  # decoded frames, nothing done with them
        sorted(set(p.sampled)), {"frames": (set(p.sampled), lambda f: 0, lambda c: [0] * len(c))}))
    workers = decode_workers(clip_cfg, b.device)
    decode = {"frames_per_s": b.measured("decode", b.rate(
        lambda: [None for _ in decode_ahead(b.probes, bare, workers=workers)]))}
    if b.baseline:
        decode["baseline"] = b.rate(lambda: [read_frames(p.path, p.sampled) for p in b.probes])
    return _rounds(decode, b.repeats)


def _bench_clip(b: _Session, clip_cfg: dict, model, size: int, transform) -> dict:
    from .features.clip import batch_size_for
    bs = batch_size_for(clip_cfg["batch_size"], b.device)
    clip = {"frames_per_s": b.stage_rate(extract_clip, clip_cfg, "clip"),
            "floor": lambda: clip_floor(model, size, b.frames, bs, b.device)}
    if b.baseline:
        clip["baseline"] = b.rate(lambda: baseline_clip(b.probes, model, transform, b.device))
    return _rounds(clip, b.repeats)


def _bench_flow(b: _Session, flow_cfg: dict, flow_model, half_pairs: int) -> dict:
    row = _rounds({"frames_per_s": b.stage_rate(extract_flow, flow_cfg, "flow"),
                   "floor": lambda: flow_floor(flow_cfg, b.frames, b.device, flow_model)}, b.repeats)
    if flow_model is not None and b.device.type == "cuda":  # the stage's half precision is CUDA's
        row["half_cost"] = half_precision_cost(flow_model, b.probes, flow_cfg, b.device, half_pairs)
    n_few = sum(len(p.sampled) for p in b.few)
    if b.baseline and n_few:  # pair by pair, timed once; it also writes the student's mp4s
        row["baseline"] = b.rate(lambda: baseline_flow(b.few, flow_cfg, b.device, flow_model, b.tmp), n_few)()
    return row


def _bench_extract(b: _Session, clip_cfg: dict, flow_cfg: dict, clip_row: dict, flow_row: dict) -> dict:
    def fused():  # clip and flow from one decode of each video (extraction: fused)
        st = extract_both(b.probes, b.tmp / "fc.h5", b.tmp / "ff.h5", clip_cfg, flow_cfg, b.device,
                          progress=False, decoder=b.decoder)
        return st["frames"] / st["seconds"]
    row = _rounds({"frames_per_s": b.measured("extract", fused)}, b.repeats)
    row["floor"] = 1 / (1 / clip_row["floor"] + 1 / flow_row["floor"])
    row["separate"] = 1 / (1 / clip_row["frames_per_s"] + 1 / flow_row["frames_per_s"])
    return row


def _bench_student(b: _Session, clip_cfg: dict, flow_cfg: dict, transform) -> dict:
    """The student's export on the flow shard the flow stage wrote: the frozen CLIP on flow
    images stands in for a trained student (the same network, so the same cost)."""
    from .config import section
    from .features.clip import batch_size_for
    from .moclip.export import export_motion, load_student, save_flow_clip
    save_flow_clip(clip_cfg, section("moclip"), b.tmp / "flow.h5", b.tmp / "student.pt")
    student, _ = load_student(b.tmp / "student.pt", b.device)

    def export():  # the stage's own clock: rows/s after the student is loaded
        st = export_motion(b.tmp / "student.pt", b.tmp / "flow.h5", b.tmp / "motion.h5", b.device)
        sync(b.device)
        return st["rows"] / st["seconds"]
    measures = {"frames_per_s": b.measured("student", export),
                "floor": lambda: student_floor(student, flow_cfg["size"], b.frames,
                                               batch_size_for(256, b.device), b.device)}
    n_few = sum(len(p.sampled) for p in b.few)
    if b.baseline and n_few:
        measures["baseline"] = b.rate(lambda: baseline_student(b.few, student, transform, b.device, b.tmp), n_few)
    return _rounds(measures, b.repeats)


def _bench_student_training(b: _Session, clip_cfg: dict, flow_cfg: dict, precision: str = "auto") -> dict:
    """The student's training, as ``plan`` needs it: a training step's images/s (forward and
    backward of the tower and the adapter in ``precision``, moclip.precision's values, optimiser
    step included) on a batch of moclip.batch_size windows of the flow shard (4 on a CPU), and
    the flow rows/s one data-loading worker reads and batches (the student's DataLoader
    inflates nothing else: colours come on the device)."""
    from .compute import compute_precision, precision_context
    from .config import section
    from .moclip.train import build_student
    from .moclip.windows import Windows, collate
    from .store import FeatureReader
    cfg = section("moclip")
    flow = FeatureReader([b.tmp / "flow.h5"], kind="flow")
    clip = FeatureReader([b.tmp / "clip.h5"], kind="clip")
    videos = [v for v in flow.video_ids if v in clip]
    student = build_student(clip_cfg["model"], clip_cfg["pretrained"], flow.attrs, 2, cfg).to(b.device)
    opt = torch.optim.AdamW([q for q in student.parameters() if q.requires_grad], lr=1e-5)
    precision = compute_precision(precision, b.device, "bfloat16")
    seq = cfg["seq_len"]
    items = [(v, s) for v in videos for s in range(0, max(1, flow.n_rows(v)), seq)]
    targets = {v: np.zeros(2, np.float32) for v in videos}
    windows = cfg["batch_size"] if b.device.type == "cuda" else 4  # the bench videos' windows, cycled
    ds = Windows(items, flow, clip, targets, seq)
    batch = collate([ds[i % len(items)] for i in range(windows)], seq)
    x, mask = batch[0].to(b.device), batch[2].to(b.device)

    def step():
        with precision_context(precision, b.device):
            emb, adapted, logits = student(x, mask)
        loss = adapted.float().pow(2).mean() + logits.float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    step()  # warm-up

    def read():  # one worker: every window of the shard read and batched
        ds = Windows(items, flow, clip, targets, seq)
        for start in range(0, len(items), 8):
            collate([ds[i] for i in range(start, min(start + 8, len(items)))], seq)
    rows_read = sum(min(seq, flow.n_rows(v) - s) for v, s in items)
    trained = 3 * int(mask.sum())
    return {"student_train": {**_rounds({"frames_per_s": b.measured("student_train", b.rate(
                lambda: [step() for _ in range(3)], trained))}, b.repeats), "frames": trained},
            "student_read": {**_rounds({"frames_per_s": b.measured("student_read", b.rate(read, rows_read))},
                                       b.repeats), "frames": rows_read}}


def run_bench(videos, clip_cfg: dict, flow_cfg: dict, sampling: dict, device, baseline: bool = True,
              repeats: int = 3, baseline_flow_frames: int = 128, decoder: str = "opencv",
              budget: float | None = 600, student_precision: str = "auto"):
    """Rows of the benchmark table, the unreadable videos, and what was sampled. The
    pair-by-pair flow baseline (and the student baseline that reads its mp4s) is timed on the
    first ``baseline_flow_frames`` frames only: at the videos' own resolution it runs at a few
    frames/s, and its rate is what is compared. ``budget`` (seconds) cuts the frames, then the
    repeats, so that slow models on a CPU still finish (:mod:`pipeline.bench_budget`)."""
    from .factory import load_clip, open_clip_module, preprocess_cfg
    from .features.flow import load_flow_model
    probes, bad = readable_probes(videos, sampling)
    planned = sum(len(p.sampled) for p in probes)
    model = load_clip(clip_cfg["model"], clip_cfg["pretrained"], device)
    pcfg = preprocess_cfg(model)
    transform = open_clip_module().image_transform(pcfg["size"], is_train=False, mean=pcfg["mean"], std=pcfg["std"])
    flow_model = (load_flow_model(flow_cfg["model"], flow_cfg["checkpoint"], device)[0]
                  if flow_cfg["backend"] == "ptlflow" else None)
    choice = fit_budget(calibrate(model, pcfg["size"], flow_cfg, flow_model, probes, device), planned,
                        repeats, baseline, baseline_flow_frames, 32, budget)
    probes = cap_frames(probes, choice.frames)
    sampled = describe(choice, probes, planned, budget)
    log.info("bench %s", sampled)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # warm-up on one video: model load, cudnn autotune and lazy init are not throughput
        extract_clip(probes[:1], tmp / "w-clip.h5", clip_cfg, device, progress=False, decoder=decoder)
        extract_flow(probes[:1], tmp / "w-flow.h5", flow_cfg, device, progress=False, decoder=decoder)
        b = _Session(probes, device, choice.repeats, decoder, baseline, tmp,
                     _first_frames(probes, choice.baseline_flow_frames))
        rows = {"probe": _bench_probe(b, sampling), "decode": _bench_decode(b, clip_cfg),
                "clip": _bench_clip(b, clip_cfg, model, pcfg["size"], transform)}
        _log_rows(rows)
        rows["flow"] = _bench_flow(b, flow_cfg, flow_model, choice.half_pairs)
        _log_rows(rows)
        rows["extract"] = _bench_extract(b, clip_cfg, flow_cfg, rows["clip"], rows["flow"])
        rows["student"] = _bench_student(b, clip_cfg, flow_cfg, transform)
        rows.update(_bench_student_training(b, clip_cfg, flow_cfg, student_precision))
        for stage, r in rows.items():
            r["peak"] = max(b.peaks[stage])
            r["passes"] = max(b.passes[stage])
        _log_rows(rows)
    used = ("torchcodec (NVDEC)" if device.type == "cuda" else "torchcodec (CPU)") \
        if decoder == "torchcodec" and torchcodec_decoder(device) is not None else "OpenCV (CPU)"
    fell_back = sum(p.path in FELL_BACK for p in probes)
    if used.startswith("torchcodec") and fell_back:
        used = "OpenCV (CPU)" if fell_back == len(probes) else used + f" + {fell_back} on OpenCV"
    return table_rows(rows, b.frames, device, used), bad, sampled


def readable_probes(videos, sampling: dict):
    """(readable probes, unreadable ones) of the given files and folders; none readable stops."""
    probes = probe_files(expand_videos(videos), sampling)
    bad = [p for p in probes if not p.readable]
    probes = [p for p in probes if p.readable]
    if not probes:
        raise RuntimeError("none of the videos could be read: " +
                           "; ".join(f"{p.path}: {p.reason}" for p in bad))
    return probes, bad


STAGE_DECODERS = {"probe": "PyAV demux", "student": "- (flow store)",  # stages no video decoder feeds
                  "student_train": "- (flow store)", "student_read": "- (flow store, one worker)"}


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


def device_name(device) -> str:
    """The GPU's name, or the CPU's cores and torch's threads: what a bench table was timed on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
