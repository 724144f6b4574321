"""One GPU per job on a machine with several: concurrent GPU jobs of one run each hold their own
device, claimed from a pool of lock files in the run's folder.

``snakemake --cores 32 --resources gpu=4`` starts four GPU jobs at once; without a pool all four
would land on ``cuda:0``. A job claims the first device whose lock it can take (``flock``, so the
kernel gives it back when the job ends, however it ends, ``kill -9`` included) and keeps it for
its whole life. Under a scheduler that gives each job its own GPUs (SLURM sets
``CUDA_VISIBLE_DEVICES`` per job) the job's visible devices are used as they are.
"""
from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path
from .errors import PipelineError

log = logging.getLogger("pipeline")
POOL_ENV = "PIPELINE_DEVICE_POOL"  # the pool's folder, set by the workflow
_held: dict[str, object] = {}  # pool folder -> the open lock file (kept for the process's life)


def visible_gpus() -> int:
    """How many CUDA devices this machine shows, without importing torch (the workflow plans
    without it): ``CUDA_VISIBLE_DEVICES`` when set, else the GPUs ``nvidia-smi -L`` lists."""
    import shutil
    import subprocess
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        ids = [d for d in given.split(",") if d.strip()]
        return 0 if not ids or ids[0].strip() == "-1" else len(ids)
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.splitlines())


def job_cpus() -> int:
    """The CPUs this job may use: the least of Snakemake's threads for it (PIPELINE_THREADS,
    set by the rules), SLURM's allotment and the CPU affinity; never the node's core count."""
    counts = [len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1]
    for var in ("PIPELINE_THREADS", "SLURM_CPUS_PER_TASK"):
        try:
            counts.append(int(os.environ[var]))
        except (KeyError, ValueError):
            pass
    return max(1, min(counts))


class DeviceError(PipelineError, RuntimeError):
    """The device asked for cannot be had here; the message says what to set instead."""


def claim(pool: str | Path, devices: list[int], wait_s: float = 3600.0, poll_s: float = 0.5) -> int:
    """The device id this process holds from ``devices``; waits while all are held (Snakemake's
    ``gpu`` resource keeps that short). Claiming again from the same pool returns the same id."""
    pool = Path(pool)
    key = str(pool.resolve())
    if key in _held:
        return _held[key][1]
    pool.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    while True:
        for device in devices:
            f = open(pool / f"gpu-{device}.lock", "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            f.seek(0), f.truncate(), f.write(f"{os.getpid()}\n"), f.flush()
            _held[key] = (f, device)
            return device
        if time.monotonic() > deadline:
            raise DeviceError(f"no free GPU in {pool} after {wait_s:.0f} s: every device of "
                              f"{devices} is held by another job of this run; run fewer GPU "
                              f"jobs at once (--resources gpu=N) or delete {pool} if no run "
                              f"is using it")
        time.sleep(poll_s)


def pool_device(count: int) -> int | None:
    """The CUDA device index for this job when the workflow runs GPU jobs side by side on one
    machine (a pool folder is set and more than one device is visible), else None."""
    pool = os.environ.get(POOL_ENV)
    if not pool or count < 2 or "SLURM_JOB_ID" in os.environ:
        return None
    device = claim(pool, list(range(count)))
    log.info("GPU %d of %d claimed for this job (pool %s)", device, count, pool)
    return device
