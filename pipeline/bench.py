"""``python -m pipeline bench``: frames/s and peak memory of each extraction stage.

Runs the real stage code (the same functions the Snakemake rules call) on the given videos,
on the current device, and prints one row per stage.
"""
from __future__ import annotations

import csv
import resource
import tempfile
import time
from pathlib import Path

import torch

from .features.clip import extract_clip
from .features.common import decode_ahead
from .features.flow import extract_flow
from .video import VIDEO_SUFFIXES, probe_video, read_frames

COLUMNS = ["stage", "frames", "seconds", "frames_per_s", "peak_mem_mb", "memory"]


def expand_videos(paths) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in VIDEO_SUFFIXES)
        else:
            out.append(p)
    if not out:
        raise FileNotFoundError("no video found in the given paths")
    return out


def _peak(device) -> tuple[float, str]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20, "GPU peak allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"


def _reset(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def run_bench(videos, clip_cfg: dict, flow_cfg: dict, sampling: dict, device, warmup: bool = True):
    probes = [probe_video(v, v.stem, sampling) for v in expand_videos(videos)]
    bad = [p for p in probes if not p.readable]
    probes = [p for p in probes if p.readable]
    if not probes:
        raise RuntimeError("none of the videos could be read: " +
                           "; ".join(f"{p.path}: {p.reason}" for p in bad))
    frames = sum(len(p.sampled) for p in probes)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        _reset(device)
        t = time.perf_counter()
        for _p, got in decode_ahead(probes, lambda p: read_frames(p.path, p.sampled),
                                    workers=clip_cfg.get("decode_workers", 2)):
            del got
        rows.append(("decode", frames, time.perf_counter() - t, *_peak(device)))
        for stage, fn, cfg in (("clip", extract_clip, clip_cfg), ("flow", extract_flow, flow_cfg)):
            if warmup:  # model load, cudnn autotune and lazy init are not throughput
                fn(probes[:1], Path(tmp) / f"warm-{stage}.h5", cfg, device, progress=False)
            _reset(device)
            stats = fn(probes, Path(tmp) / f"{stage}.h5", cfg, device, progress=False)
            rows.append((stage, stats["frames"], stats["seconds"], *_peak(device)))
    return [dict(zip(COLUMNS, (s, n, sec, n / max(sec, 1e-9), mem, kind)))
            for s, n, sec, mem, kind in rows], bad


def format_table(rows: list[dict]) -> str:
    lines = [f"{'stage':<8}{'frames':>8}{'seconds':>10}{'frames/s':>11}{'peak MB':>10}  memory"]
    for r in rows:
        lines.append(f"{r['stage']:<8}{r['frames']:>8}{r['seconds']:>10.2f}{r['frames_per_s']:>11.1f}"
                     f"{r['peak_mem_mb']:>10.0f}  {r['memory']}")
    return "\n".join(lines)


def write_csv(rows: list[dict], path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)


# ---------------------------------------------------------------- heads

HEAD_COLUMNS = ["head", "params_m", "samples_per_s", "epoch_s", "peak_mem_mb", "memory"]


def bench_heads(heads, n_videos=24000, n_classes=140, frames=32, dim=512, steps=20,
                batch_size=64, device=None, seed=0) -> list[dict]:
    """Training throughput of each head at data-set scale, on synthetic random features held
    in memory like the real ones (float16, one padded array per stream)."""
    import numpy as np

    from .heads.data import SplitFeatures, batches
    from .heads.trainer import _amp, head_params, loss_fn, model_kwargs
    from .heads.models import build_head
    rng = np.random.default_rng(seed)
    shape = (n_videos, frames, dim)
    feats = SplitFeatures([f"v{i}" for i in range(n_videos)],
                          rng.standard_normal(shape, dtype=np.float32).astype(np.float16),
                          rng.standard_normal(shape, dtype=np.float32).astype(np.float16),
                          rng.integers(frames // 2, frames + 1, n_videos),
                          (rng.random((n_videos, n_classes)) < 0.03).astype(np.float32), {})
    rows = []
    for name in heads:
        params = head_params(name, {"frames": frames, "batch_size": batch_size})
        model = build_head(name, dim, dim, n_classes, model_kwargs(params)).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        order = rng.permutation(n_videos)[: batch_size * (steps + 2)]
        _reset(device)
        it = batches(feats, frames, batch_size, rng, order, device)
        for i, (rgb, motion, mask, y) in enumerate(it):
            if i == 2:  # first steps warm up kernels and the allocator
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t = time.perf_counter()
            with _amp(device):
                logits = model(rgb, motion, mask)
            loss = loss_fn(logits, y, True, params)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        sec = time.perf_counter() - t
        sps = steps * batch_size / sec
        mem, kind = _peak(device)
        rows.append(dict(zip(HEAD_COLUMNS, (name, sum(p.numel() for p in model.parameters()) / 1e6,
                                            sps, n_videos / sps, mem, kind))))
        del model, opt
    return rows


def format_heads_table(rows: list[dict]) -> str:
    lines = [f"{'head':<15}{'params (M)':>11}{'samples/s':>11}{'s/epoch':>10}{'peak MB':>10}  memory"]
    for r in rows:
        lines.append(f"{r['head']:<15}{r['params_m']:>11.2f}{r['samples_per_s']:>11.0f}"
                     f"{r['epoch_s']:>10.1f}{r['peak_mem_mb']:>10.0f}  {r['memory']}")
    return "\n".join(lines)
