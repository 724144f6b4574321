"""The ground floor: which device a job computes on, in which precision, on batches that span
videos, and the memory it gives back. Every stage, the student, the heads and prediction use it;
it imports no stage."""
from __future__ import annotations

import contextlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

import numpy as np
import torch


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: a GPU if there is one; ``auto`` and ``cuda`` in a workflow job on a machine
    with several GPUs: the one this job claimed (:mod:`pipeline.devices`); ``cuda:N``: that one."""
    if name in ("auto", "cuda") and torch.cuda.is_available():
        from .devices import pool_device
        index = pool_device(torch.cuda.device_count())
        return torch.device("cuda" if index is None else f"cuda:{index}")
    if name == "auto":
        return torch.device("cpu")
    from .devices import DeviceError
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asked for, but no CUDA GPU is available here; "
                          f"set device: auto or cpu (or --device cpu)")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"device {name!r} is not a device name; use auto, cpu, cuda or "
                          f"cuda:N") from None
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"device {name!r} asked for, but this machine shows "
                          f"{torch.cuda.device_count()} GPU(s) (cuda:0 to "
                          f"cuda:{torch.cuda.device_count() - 1}); set device: auto")
    return device


PRECISIONS = {"float32": None, "float16": torch.float16, "bfloat16": torch.bfloat16}


def compute_precision(name: str, device: torch.device, gpu: str = "float16") -> str:
    """The one rule for what a model computes in: ``auto`` is ``gpu`` on CUDA (float16 for the
    frozen models, bfloat16 where a model trains) and float32 elsewhere (a CPU gains nothing
    from autocast); the others are taken as they are, on every device."""
    if name == "auto":
        return gpu if device.type == "cuda" else "float32"
    return name


def precision_context(name: str, device: torch.device):
    """Autocast to the precision :func:`compute_precision` named (none for float32)."""
    dtype = PRECISIONS[name]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def autocast(device: torch.device, gpu: str = "float16"):
    """The ``auto`` precision's context on ``device`` (float32 on a CPU)."""
    return precision_context(compute_precision("auto", device, gpu), device)


def return_freed_memory() -> None:
    """Give freed blocks of 1 MB or more back to the system at once (glibc; elsewhere nothing).
    glibc raises its mmap threshold after each large free, so the transient tensors of one long
    clip (attention chunks, activations) would stay in the heaps of the worker threads and the
    process's resident memory would keep the largest batch it ever saw."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def prefetch(items: Iterable, depth: int = 4) -> Iterator:
    """``items`` pulled on a background thread, up to ``depth`` ahead, so reading and
    decompressing the next block overlaps the model on this one. One thread keeps the order;
    an error in ``items`` is raised here."""
    it, end = iter(items), object()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = deque(pool.submit(next, it, end) for _ in range(depth))
        while (item := pending.popleft().result()) is not end:
            pending.append(pool.submit(next, it, end))
            yield item


def batched(segments: Iterable[tuple[object, torch.Tensor]], fn: Callable[[torch.Tensor], torch.Tensor],
            batch_size: int) -> Iterator[tuple[object, np.ndarray]]:
    """Run ``fn`` on batches of rows that span segment (video) boundaries.

    ``segments`` yields ``(key, rows)``; the output yields ``(key, fn(rows) as numpy)`` per key,
    in order, as soon as all of a key's rows have been through ``fn``. One device-to-host copy
    per batch, not per video.
    """
    queue: list[tuple[object, torch.Tensor]] = []   # rows waiting for a batch
    open_keys: deque = deque()                      # [key, n_rows, pieces] in order
    queued = 0

    def run(rows_needed_all: bool):
        nonlocal queued
        while queued >= batch_size or (rows_needed_all and queued):
            take, parts, owners = min(batch_size, queued), [], []
            while take:
                key, rows = queue[0]
                n = min(take, rows.shape[0])
                parts.append(rows[:n])
                owners.append((key, n))
                if n == rows.shape[0]:
                    queue.pop(0)
                else:
                    queue[0] = (key, rows[n:])
                take -= n
                queued -= n
            out = fn(torch.cat(parts)).float().cpu().numpy()
            pos = 0
            for key, n in owners:
                for entry in open_keys:
                    if entry[0] is key:
                        entry[2].append(out[pos:pos + n])
                        break
                pos += n
            yield from flush_done()

    def flush_done():
        while open_keys and sum(p.shape[0] for p in open_keys[0][2]) == open_keys[0][1]:
            key, _, pieces = open_keys.popleft()
            yield key, np.concatenate(pieces) if pieces else np.zeros((0,))

    for key, rows in segments:
        open_keys.append([key, rows.shape[0], []])
        if rows.shape[0]:
            queue.append((key, rows))
            queued += rows.shape[0]
        yield from run(False)
        yield from flush_done()
    yield from run(True)
    yield from flush_done()
