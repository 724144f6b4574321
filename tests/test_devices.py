"""One GPU per job: concurrent jobs claim distinct devices from the run's pool, simulated here
with device ids (no GPU needed); a killed job's device is free again."""
import json
import signal
import subprocess
import sys
import time

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
