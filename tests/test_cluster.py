"""The demo pipeline through a real SLURM (tests/cluster/slurm.sh) and interruption of a run.

End-to-end scenarios: the README's cluster command, on a copy of the session's demo run with one
evaluation shard and two heads gone, runs probe, extraction, motion export and heads as SLURM
jobs that ask for their rule's CPUs, memory and GPUs, and makes what the local run made, bit for
bit; an extraction job SIGKILLed mid-shard (in a copy of the demo run with one shard gone)
leaves no file under the final name and the re-run makes the demo's rows again."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from conftest import ROOT, copy_workflow, demo_config, snakemake

SLURM_SH = ROOT / "tests" / "cluster" / "slurm.sh"
HEADS = ("rgb_linear", "motion_linear")


def cluster_config() -> dict:
    """The demo run's config, as the user's file: the test node has this machine's few CPUs, so
    extraction asks for 2 of them (threads are no rerun trigger)."""
    cfg = demo_config()
    cfg["cluster"] = {**cfg.get("cluster", {}), "threads": {"default": 1, "extract": 2}}
    return cfg


def arrays(run: Path) -> dict:
    out = {}
    for f in sorted((run / "results" / "demo" / "features").rglob("*.h5")):
        if f.name == "text.h5" or ".reuse" in f.parts:  # the pool holds links to the same files
            continue
        with h5py.File(f) as h:
            out[str(f.relative_to(run))] = (h["data"][()], h["frame_index"][()])
    return out


# session-scoped: pytest makes wider fixtures first, and this one must skip before the demo run
@pytest.fixture(scope="session")
def slurm():
    if not (os.environ.get("CI") or os.environ.get("PIPELINE_TEST_SLURM")):
        pytest.skip("the SLURM test installs and configures SLURM on this machine: it runs in "
                    "CI, or when asked (make test-cluster, or PIPELINE_TEST_SLURM=1)")
    if os.geteuid() != 0 or shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("a local SLURM needs root and Debian's packages")
    before = subprocess.run(["pgrep", "-u", "munge", "munged"], capture_output=True, text=True).stdout.split()
    configs = {f: f.read_bytes() if f.is_file() else None
               for f in (Path("/etc/slurm/slurm.conf"), Path("/etc/slurm/gres.conf"))}
    proc = subprocess.run(["bash", str(SLURM_SH), "up"], capture_output=True, text=True)
    if proc.returncode != 0:
        print("\n" + "!" * 70 + "\nSLURM COULD NOT BE STARTED: the cluster test is SKIPPED\n"
              + proc.stderr[-2000:] + "\n" + "!" * 70, file=sys.stderr)
        pytest.skip("SLURM could not be installed or started (see the loud message above)")
    yield
    subprocess.run(["bash", str(SLURM_SH), "down"])
    for pid in before:  # a munged that ran before the test is not the test's to stop
        assert Path(f"/proc/{pid}").exists(), f"munged {pid} was running before and was stopped"
    for f, data in configs.items():  # as before: a config left behind slows every SLURM client
        assert (f.read_bytes() if f.is_file() else None) == data, f"{f} was not put back"


@pytest.mark.slurm
@pytest.mark.slow
def test_demo_through_slurm_equals_a_local_run(slurm, demo_run, tmp_path):
    """The README's cluster command on a copy of the session's demo run with one eval shard gone
    (its probe table, clip, flow and motion rows, and the cache) and two heads: SLURM runs the
    jobs that make them again, each asks for what its rule says, and the shards and metrics
    equal the local run's."""
    from conftest import copy_run
    cluster = copy_run(demo_run, tmp_path / "cluster")
    res = cluster / "results" / "demo"
    for path in [res / "probe/test/shard-0.tsv"] + [res / f"features/{kind}/test/shard-0.h5"
                                                    for kind in ("clip", "flow", "motion")]:
        path.unlink()
    shutil.rmtree(res / "features" / ".reuse")  # its rows are decoded again, on the cluster
    for head in HEADS:
        shutil.rmtree(res / "heads" / head)
    (cluster / "my.yaml").write_text(yaml.safe_dump(cluster_config()))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--workflow-profile", "workflow/profiles/slurm",
         "--configfile", "my.yaml",
         "--default-resources", "slurm_partition=test", "mem_mb=1000", "--slurm-no-account",
         "--slurm-status-command", "squeue", "--slurm-keep-successful-logs", "--jobs", "4",
         "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "3",
         *[f"results/demo/heads/{head}/metrics.json" for head in HEADS]],
        cwd=cluster, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    assert "SLURM" in text and ("jobid" in text.lower() or "Job " in text)
    logs = list((cluster / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert logs, "no SLURM job logs: the jobs did not go through SLURM"
    job_ids = {p.stem.split("_")[0] for p in logs}
    shown = subprocess.run(["scontrol", "show", "job", sorted(job_ids)[0]], capture_output=True, text=True)
    assert "JobState=COMPLETED" in shown.stdout, shown.stdout + shown.stderr
    asked = {}  # what SLURM recorded for one job of each rule: CPUs, memory, GPUs
    for p in logs:
        rule = next((part[len("rule_"):].split("_wildcards")[0] for part in p.parts
                     if part.startswith("rule_")), None)
        record = subprocess.run(["scontrol", "show", "job", "-o", p.stem.split("_")[0]],
                                capture_output=True, text=True).stdout
        if rule and "TRES=" in record:
            tres = dict(kv.split("=", 1) for kv in record.split("TRES=")[1].split()[0].split(","))
            gpus = re.search(r"TresPer(?:Job|Node|Task)=\S*gpu:(\d+)", record)  # --gpus / --gres
            asked[rule] = (int(tres["cpu"]), tres["mem"], int(gpus[1]) if gpus else 0)
    assert asked["extract"] == (2, "2000M", 1), asked  # threads, cluster.mem_mb, cluster.gpus
    assert asked["probe"] == (1, "2000M", 0), asked  # a CPU rule asks for no GPU
    assert set(asked) == {"probe", "extract", "moclip_export", "head"}, asked
    a, b = arrays(demo_run), arrays(cluster)
    assert a.keys() == b.keys() and "results/demo/features/flow/test/shard-0.h5" in a
    for k in a:
        assert np.array_equal(a[k][1], b[k][1]) and np.array_equal(a[k][0], b[k][0]), k
    for head in HEADS:
        m = [(w / "results" / "demo" / "heads" / head / "metrics.json").read_text() for w in (demo_run, cluster)]
        assert m[0] == m[1]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...)."""
    out, todo = [], [pid]
    while todo:
        kids = subprocess.run(["pgrep", "-P", str(todo.pop())], capture_output=True, text=True).stdout
        todo += map(int, kids.split())
        out += map(int, kids.split())
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_shard_then_rerun(tmp_path, demo_run):
    """An extraction job is SIGKILLed while writing its shards; the re-run redoes it and the features
    equal those of the uninterrupted default run. A copy of the demo run with one shard removed
    (and no cache to copy its rows from): one job decodes, not the whole demo."""
    from conftest import copy_run
    work = copy_run(demo_run, tmp_path / "w")
    gone = work / "results/demo/features/clip/train/shard-0.h5"
    gone.unlink()
    shutil.rmtree(work / "results/demo/features/.reuse")
    run = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "1", "features"], cwd=work,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed, deadline = None, time.time() + 300
    while time.time() < deadline and run.poll() is None and killed is None:
        partial = list((work / "results").rglob("shard-*.h5.partial"))
        if partial:
            for pid in descendants(run.pid):  # only this test's own jobs, never others'
                if re.search(r"pipeline (extract|flow|clip) --probe", cmdline(pid)):
                    os.kill(pid, signal.SIGKILL)
                    killed = partial[0]
        time.sleep(0.01)
    run.wait()
    assert killed is not None, "no shard was caught mid-write"
    final = Path(str(killed)[: -len(".partial")])
    assert not final.exists(), "a killed job left a file at the final name"
    snakemake(work, "features", "--rerun-incomplete")
    a, b = arrays(work), arrays(demo_run)
    assert a.keys() == b.keys() and str(gone.relative_to(work)) in a
    for k in a:
        assert np.array_equal(a[k][0], b[k][0]), k


def test_outside_ci_the_slurm_test_runs_only_when_asked(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PIPELINE_TEST_SLURM")}
    conf = Path("/etc/slurm/slurm.conf")
    stamp = conf.stat().st_mtime_ns if conf.exists() else None
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", str(Path(__file__)), "-k",
                           "demo_through_slurm", "-p", "no:cacheprovider"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert "1 skipped" in proc.stdout and "make test-cluster" in proc.stdout, proc.stdout[-1500:]
    assert (conf.stat().st_mtime_ns if conf.exists() else None) == stamp
