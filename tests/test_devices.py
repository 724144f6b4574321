"""One GPU per job: concurrent jobs claim distinct devices from the run's pool, simulated here
with device ids (no GPU needed); a killed job's device is free again.

End-to-end scenario: a real Snakemake run of four extraction jobs on two simulated GPUs and
four cores holds at most two of them at once."""
import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT

HOLD = """
import json, sys, time
from pipeline.devices import claim
pool, devices, hold, out = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
device = claim(pool, devices, wait_s=60, poll_s=0.05)
start = time.time()
time.sleep(hold)
print(json.dumps({"device": device, "start": start, "end": time.time()}))
"""


def _job(pool, devices, hold):
    return subprocess.Popen([sys.executable, "-c", HOLD, str(pool), json.dumps(devices), str(hold), ""],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)


def test_concurrent_jobs_hold_distinct_devices_and_never_share_one(tmp_path):
    jobs = [_job(tmp_path, [0, 1, 2, 3], 1.0) for _ in range(6)]  # six jobs, four devices
    runs = [json.loads(j.communicate(timeout=60)[0]) for j in jobs]
    first = sorted(runs, key=lambda r: r["start"])[:4]
    assert sorted(r["device"] for r in first) == [0, 1, 2, 3]  # four at once, each its own
    for d in range(4):  # the two late jobs waited for a device: no two held one at a time
        spans = sorted((r["start"], r["end"]) for r in runs if r["device"] == d)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))


def test_a_killed_job_gives_its_device_back(tmp_path):
    holder = _job(tmp_path, [0], 60)
    time.sleep(1.5)  # it holds device 0
    waiter = _job(tmp_path, [0], 0)
    time.sleep(1.0)
    assert waiter.poll() is None  # waiting for device 0
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert json.loads(waiter.communicate(timeout=30)[0])["device"] == 0


def test_no_pool_under_a_scheduler_or_with_one_device(tmp_path, monkeypatch):
    from pipeline import devices
    monkeypatch.setenv(devices.POOL_ENV, str(tmp_path))
    assert devices.pool_device(1) is None  # one device: nothing to share
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert devices.pool_device(4) is None  # the scheduler chose this job's devices
    monkeypatch.delenv("SLURM_JOB_ID")
    assert devices.pool_device(4) == 0 and devices.pool_device(4) == 0  # claimed once, kept


def most_at_once(log: str, rule: str) -> int:
    """The most jobs of ``rule`` running at once, from Snakemake's log (starts and finishes in
    the order they happened)."""
    running, most, current = set(), 0, None
    for line in log.splitlines():
        if line.startswith(("localrule ", "rule ")):
            current = line.split()[1].rstrip(":")
        elif line.strip().startswith("jobid:") and current == rule:
            running.add(line.split(":")[1].strip())
            most = max(most, len(running))
        elif line.startswith("Finished jobid:"):
            running.discard(line.split()[2])
    return most


@pytest.mark.slow
def test_a_run_holds_one_gpu_job_per_visible_gpu(tmp_path, demo_dir):
    """Two simulated GPUs, four cores, four extraction jobs of one CPU each: at most two at
    once (--resources gpu=N says otherwise)."""
    import os
    import shutil
    import subprocess
    import sys
    import yaml
    from conftest import copy_workflow, demo_config
    work = copy_workflow(tmp_path)
    (work / "videos").mkdir()
    rows = ["video,split,labels"]
    for i in range(8):
        shutil.copy(demo_dir / "videos" / f"clip_{i:03d}.mp4", work / "videos" / f"v{i}.mp4")
        rows.append(f"v{i}.mp4,{'train' if i < 4 else 'test'},rotating")
    (work / "ann.csv").write_text("\n".join(rows) + "\n")
    cfg = demo_config()
    cfg["dataset"] = {"name": "gpus", "format": "csv", "videos": "videos", "annotations": "ann.csv",
                      "classes": str(demo_dir / "classes.csv"), "eval_split": "test", "val_split": None}
    cfg.update(shards=2, text={}, device="auto")
    cfg["cluster"] = {"threads": {"default": 1}, "mem_mb": {"default": 500}}
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1"}  # no CUDA here: the jobs run on the CPU
    targets = [f"results/gpus/features/clip/{s}/shard-{k}.h5" for s in ("train", "test") for k in range(2)]
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "4", *targets], cwd=work,
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "note: at most 2 GPU job(s) at once (2 visible GPU(s))" in proc.stderr
    assert most_at_once(proc.stderr, "extract") == 2
