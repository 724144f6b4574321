"""What each extraction stage is measured against in ``bench``: the model alone on ready-made
input (its floor) and the straightforward path a researcher writes first (its baseline); and
the clock and memory readings every measurement uses."""
from __future__ import annotations

import resource
import time
from pathlib import Path

import numpy as np
import torch

from .features.common import decode_workers
from .video import read_frames


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(device) -> tuple[float, str]:
    sync(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "GPU peak allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"


def reset_peak(device):
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
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
        return frames / timed(lambda: [model.encode_image(x[:b]) for b in _batches(frames, bs)], device)


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
        return frames / timed(lambda: [ptlflow_pairs(model, pairs[:n], device, half)
                                        for n in _batches(frames, cfg["batch_size"])], device)
    # the stage runs classical flow on its decode threads, so its floor gets as many threads;
    # its input is grey
    from concurrent.futures import ThreadPoolExecutor
    reps = -(-frames // len(a))
    ga, gb = np.ascontiguousarray(a[..., 0]), np.ascontiguousarray(b[..., 0])
    with ThreadPoolExecutor(decode_workers(cfg, device)) as pool:
        sec = timed(lambda: list(pool.map(lambda _: classical_flow(ga, gb, cfg["backend"]), range(reps))), device)
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
        sec = timed(lambda: flows.extend(ptlflow_pairs(model, batch[s:s + cfg["batch_size"]], device, half)
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
        return frames / timed(lambda: [student.embed(x[:b]) for b in _batches(frames, bs)], device)


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
