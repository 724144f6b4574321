"""Shared machinery of the extraction stages: decode-ahead, failed videos, progress and timing."""
from __future__ import annotations

import contextlib
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import torch

log = logging.getLogger("pipeline")


def skip_failed(decoded: Iterable, stats: dict) -> Iterator:
    """Pass on ``(probe, frames)`` from :func:`decode_ahead`; a video whose decoding raised is
    logged and listed in ``stats["failed"]``, and the others go on."""
    for probe, got in decoded:
        if isinstance(got, Exception):
            log.warning("skipping %s: %s", probe.path, got)
            stats["failed"].append((probe.video_id, str(got)))
            continue
        yield probe, got


@contextlib.contextmanager
def stage_run(probes, desc: str, progress: bool = True):
    """An extraction stage's bookkeeping: yields ``(stats, done)``, ``done(probe)`` counting a
    finished video in ``stats`` and on a progress bar of the planned frames; ``stats["seconds"]``
    is the stage's own clock when the block ends."""
    import time
    from tqdm import tqdm
    stats = {"videos": 0, "frames": 0, "failed": []}
    bar = tqdm(total=sum(len(p.sampled) for p in probes), desc=desc, unit="frame",
               disable=not progress, smoothing=0.1)

    def done(probe) -> None:
        stats["videos"] += 1
        stats["frames"] += len(probe.sampled)
        bar.update(len(probe.sampled))
    start = time.perf_counter()
    try:
        yield stats, done
    finally:
        bar.close()
    stats["seconds"] = time.perf_counter() - start


def _lower_priority() -> None:
    """Decode at the lowest CPU priority (this thread and the codec threads it starts): on a
    CPU-bound model, decoding must fill idle cycles, not stall the model's thread barriers."""
    import os
    import threading
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError, PermissionError):
        pass


def decode_ahead(jobs: Iterable, decode: Callable, workers: int = 2, depth: int = 8) -> Iterator:
    """``(job, decode(job))`` in input order, decoding up to ``depth`` jobs ahead on threads.

    OpenCV releases the GIL while decoding, so threads overlap decoding with the model.
    A job whose decode raises yields ``(job, exception)`` instead of stopping the others.
    """
    def safe(job):
        _lower_priority()
        try:
            return decode(job)
        except Exception as e:  # noqa: BLE001 - reported per video by the caller
            return e

    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        it = iter(jobs)
        for job in it:
            pending.append((job, pool.submit(safe, job)))
            if len(pending) >= depth:
                break
        while pending:
            job, fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(safe, nxt)))
            yield job, fut.result()


def decode_workers(cfg: dict, device: torch.device) -> int:
    """``decode_workers`` of a stage's config; null = 2 beside a CPU model (which needs the
    cores itself), up to 8 feeding a GPU, within the job's own CPUs (:func:`job_cpus`)."""
    from ..devices import job_cpus
    if cfg.get("decode_workers"):
        return int(cfg["decode_workers"])
    return 2 if device.type != "cuda" else max(2, min(8, job_cpus() - 1))

