"""The cache is a cache: each change to a finished run re-runs what it decides and nothing else,
nothing stale stays in place, looking changes no file, and rows are never lost but by `cache
prune` (real Snakemake runs on a copy of the session's small csv run).

End-to-end scenarios (one module-scoped copy, changed in order): a copied project probes again
and runs nothing else; a finished run has nothing to
do; looks (dry runs, lint, summary, list, unlock) leave results/ byte-identical; a second
invocation during a run leaves it green; a label fix, an added, replaced, removed or renamed
video; a same-size same-mtime replacement; damaged shards; a killed student; a new shard count;
a copied project and a deleted cache; runs of other names and concurrent runs sharing a cache;
the cache command."""
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml
from pathlib import Path

from conftest import (CSV_VIDEOS as N, copy_run, copy_workflow, csv_annotations, demo_labels, job_counts,
                      run_cli, snakemake)
from pipeline.annotations import read_samples, shard_of

pytestmark = pytest.mark.slow
RES = "results/csv"
EVAL = "hold out"  # the csv run's evaluation split (no val split: fewer jobs per re-run)


@pytest.fixture(scope="module")
def run(csv_run, tmp_path_factory):
    """A copy of the session's small csv run (12 videos, 2 shards per split, one quick head),
    its videos copied too: these tests change them. Copies are new files to the probe, so the
    copy is probed again (and nothing else runs, as a copied project's first run)."""
    work = copy_run(csv_run, tmp_path_factory.mktemp("cache") / "run", videos="-")
    assert set(jobs(snakemake(work))) <= {"probe", "samples", "all"}
    return work


def jobs(proc) -> list[str]:
    """The rules of the jobs a (real, not dry) run executed."""
    return re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):", proc.stdout + proc.stderr, re.M)


def decoded(work, since: float) -> dict:
    """split-shard -> (reused, decoded) of the extraction logs written after ``since``."""
    out = {}
    for log in (work / RES / "logs" / "extract").glob("*.log"):
        if log.stat().st_mtime >= since:
            last = log.read_text().strip().splitlines()[-1]
            m = re.search(r"reused: (\d+) videos, decoded: (\d+) videos$", last)
            assert m, (log, last)
            out[log.stem] = (int(m[1]), int(m[2]))
    return out


def rerun(work, *targets):
    """Run again (by default up to the features: what these tests are about, and the student
    and heads after them are the slow part); returns the run and its extraction counts."""
    since = time.time() - 0.01
    time.sleep(1.1)  # mtimes of the next writes are visibly newer
    proc = snakemake(work, *(targets or ("features",)))
    return proc, decoded(work, since)


def test_a_finished_run_has_nothing_to_do(run):
    out = snakemake(run, "-n")
    assert "Nothing to be done" in out.stdout + out.stderr


def test_a_banner_left_by_a_job_that_did_not_finish_is_cleared(run):
    """A head job marked the summary out of date and never finished (failed, killed, its entry
    then removed): the next run makes the report again, and then has nothing to do."""
    from pipeline.freshness import OUT_OF_DATE, mark_out_of_date
    summary = run / RES / "reports" / "summary.md"
    mark_out_of_date(summary, "head bad2 is being trained again")
    assert set(jobs(snakemake(run, "-n"))) == {"stale", "report", "all"}
    snakemake(run)
    assert not summary.read_text().startswith(OUT_OF_DATE)
    dry = snakemake(run, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr, (dry.stdout + dry.stderr)[-3000:]


def tree(root) -> dict:
    """Every file under ``root``: size, mtime, inode and content hash."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino,
                                       hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def test_looking_changes_nothing(run):
    """A truncated shard and one outside the plan are named by every look and touched by none;
    the real run then makes the first again from the cache and sets the second aside."""
    feat = run / RES / "features"
    planted, extra = feat / "clip/hold out/shard-0.h5", feat / "flow/train/shard-7.h5"
    data = planted.read_bytes()
    planted.unlink()  # a new file: the cache's link keeps the rows
    planted.write_bytes(data[:len(data) // 2])
    shutil.copy(feat / "flow/train/shard-0.h5", extra)
    before = tree(run / "results")
    looks = [("-n",), ("--lint",), ("--summary",), ("--list-rules",), ("--unlock",),
             ("-n", "--config", "sampling={mode: uniform, frames: 4}"),
             ("-n", "features", "--config", "shards=1")]
    for pair in zip(looks[::2], looks[1::2] + [("--version",)]):  # two at a time, as users do
        procs = [subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", *args],
                                  cwd=run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for args in pair]
        for proc in procs:
            proc.wait(timeout=300)
        assert tree(run / "results") == before, f"snakemake {pair} changed a file"
    dry = snakemake(run, "-n")
    assert f"{planted.relative_to(run)}: " in dry.stderr and "a run makes it again" in dry.stderr
    assert f"{extra.relative_to(run)}: not in the run's plan" in dry.stderr
    assert re.search(r"^extract\s+1$", dry.stdout, re.M), dry.stdout[-1500:]
    proc, extracted = rerun(run)
    n = int(re.search(r"reused: (\d+)", (run / RES / "logs/extract" / f"{EVAL}-0.log").read_text())[1])
    assert extracted == {f"{EVAL}-0": (n, 0)} and n > 0, extracted
    assert not extra.exists() and f"set aside {extra.relative_to(run)}" in proc.stderr


def _descendants(pid: int) -> list[int]:
    """The processes started (directly or not) by ``pid``, from /proc."""
    children: dict = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _kill_descendant(proc, pattern: str) -> None:
    """SIGKILL the process of this test's ``proc`` tree whose command line has ``pattern``."""
    for pid in _descendants(proc.pid):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if pattern in cmd and "/bin/sh" not in cmd and "bash -c" not in cmd:
            os.kill(pid, signal.SIGKILL)


def test_a_second_invocation_leaves_a_running_run_green(run):
    """While a run re-extracts a trial setting, a dry run and a real run of another setting in
    the same folder change nothing; the run finishes; back on the config, nothing is decoded."""
    since = time.time()
    time.sleep(1.1)
    trial = "sampling={mode: uniform, frames: 6}"
    a = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", "features",
                          "--config", trial], cwd=run, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    feat = run / RES / "features" / "clip"
    deadline = time.time() + 300
    while time.time() < deadline and a.poll() is None and \
            not any(p.stat().st_mtime > since for p in feat.glob("*/shard-*.h5")):
        time.sleep(0.2)
    assert a.poll() is None, "the run ended before the second invocation could start"
    # A is paused (its own process group: nothing else is signalled) so that the second
    # invocation meets it running however fast this machine is.
    os.killpg(a.pid, signal.SIGSTOP)
    try:
        published = {p: p.stat().st_ino for p in feat.glob("*/shard-*.h5")
                     if p.stat().st_mtime > since}
        snakemake(run, "-n", "features", "--config", "shards=1", check=False)
        b = snakemake(run, "features", "--config", "shards=1", check=False)
    finally:
        os.killpg(a.pid, signal.SIGCONT)
    said = (b.stdout + b.stderr).lower()  # Snakemake refuses it: the lock, or A's running jobs
    assert b.returncode != 0 and ("lock" in said or "incomplete" in said), said[-2000:]
    assert all(p.exists() and p.stat().st_ino == ino for p, ino in published.items())
    out, _ = a.communicate(timeout=600)
    assert a.returncode == 0, out[-3000:]
    proc, extracted = rerun(run)
    assert extracted and all(d == 0 for _, d in extracted.values()), extracted


def test_a_label_fix_re_extracts_nothing(run, demo_dir):
    import csv
    old = next(r for r in read_samples(run / RES / "samples.tsv") if r["video_id"] == "v003")
    with open(demo_dir / "classes.csv") as f:
        names = [r["name"] for r in csv.DictReader(f)]
    new = next(n for n in names if n != demo_labels(demo_dir)[3])
    csv_annotations(run, demo_dir, range(N), relabel={3: new})
    dry = snakemake(run, "-n")  # behind the checkpoints, it says what a real run decodes
    assert f"decodes at most 0 of {N} listed videos" in dry.stderr, dry.stderr[-2000:]
    proc, extracted = rerun(run)
    ran = set(jobs(proc))
    assert not ran & {"probe", "extract", "clip", "flow"}, ran
    assert "samples" in ran and not extracted
    out = snakemake(run, "-n").stdout  # what the labels still change: the student, heads, report
    pending = set(job_counts(out))
    assert {"moclip_train", "head", "report"} <= pending and not pending & {"probe", "extract"}, pending
    now = next(r for r in read_samples(run / RES / "samples.tsv") if r["video_id"] == "v003")
    assert now["labels"] != old["labels"]


def test_the_plan_works_from_the_current_lists_and_the_stages_the_run_makes(run, demo_dir, tmp_path):
    """One video dropped and one added since the probe tables were written; heads that read no
    motion: no student, no motion features in the plan."""
    import json
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    lines = (run / "ann.csv").read_text().splitlines()
    (run / "plan.csv").write_text("\n".join(lines[:1] + lines[2:] + ["v100.mp4,train," + lines[1].split(",")[2]]) + "\n")
    shutil.copy(demo_dir / "videos" / "clip_020.mp4", run / "videos" / "v100.mp4")
    cfg["dataset"]["annotations"] = "plan.csv"
    cfg["heads"] = {"rgb_linear": {"epochs": 1}}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "plan.json"
    run_cli("plan", "--configfile", tmp_path / "plan.yaml", "--json", out, cwd=run)
    plan = json.loads(out.read_text())
    (run / "videos" / "v100.mp4").unlink()
    assert plan["splits"]["train"]["videos"] == 8  # v000 gone, v100 new
    assert "1 new listed videos estimated" in plan["splits"]["train"]["source"]
    assert plan["splits"][EVAL]["source"] == "probe tables (exact)"
    stages = {r["stage"] for r in plan["stages"]}
    assert not stages & {"moclip_train", "moclip_export"} and "head" in stages
    assert plan["streams"]["motion"]["disk_bytes"] == 0


def test_adding_a_video_decodes_that_video_only(run, demo_dir):
    shutil.copy(demo_dir / "videos" / "clip_020.mp4", run / "videos" / "v100.mp4")
    csv_annotations(run, demo_dir, list(range(N)) + [100])
    assert f"decodes at most 1 of {N + 1} listed" in snakemake(run, "-n").stderr
    proc, extracted = rerun(run)
    shard = shard_of("v100", 2)
    assert list(extracted) == [f"train-{shard}"], extracted
    assert extracted[f"train-{shard}"][1] == 1 and extracted[f"train-{shard}"][0] >= 1
    assert jobs(proc).count("probe") == 1 and jobs(proc).count("extract") == 1


def test_replacing_a_video_under_its_name_re_extracts_it(run, demo_dir):
    target = run / "videos" / "v010.mp4"
    shutil.copy(demo_dir / "videos" / "clip_021.mp4", target)
    proc, extracted = rerun(run)
    assert list(extracted) == [f"{EVAL}-{shard_of('v010', 2)}"] and \
        list(extracted.values())[0][1] == 1, extracted
    os.utime(target)  # touched, same content: probed again, nothing extracted
    proc, extracted = rerun(run)
    assert "probe" in jobs(proc) and not extracted


def test_removing_and_renaming_decode_nothing(run, demo_dir):
    (run / "videos" / "v009.mp4").rename(run / "videos" / "v109.mp4")  # now a train video
    csv_annotations(run, demo_dir, [i for i in range(N) if i not in (5, 9)] + [100, 109])
    proc, extracted = rerun(run)
    moved = {f"train-{shard_of('v005', 2)}", f"train-{shard_of('v109', 2)}",
             f"{EVAL}-{shard_of('v009', 2)}"}
    assert set(extracted) == moved and all(d == 0 for _, d in extracted.values()), extracted


def test_a_same_size_same_mtime_replacement_is_probed_again(run):
    """One byte of a video changed in place, its size and mtime put back (cp -p, rsync -a)."""
    from pipeline.video import read_probes
    target = run / "videos" / "v011.mp4"
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[-len(data) // 3] ^= 0xFF
    fresh = target.with_name("new.tmp")
    fresh.write_bytes(bytes(data))
    os.utime(fresh, ns=(st.st_atime_ns, st.st_mtime_ns))
    fresh.replace(target)
    table = run / RES / "probe" / EVAL / f"shard-{shard_of('v011', 2)}.tsv"
    old = {p.video_id: p.fingerprint for p in read_probes(table)}["v011"]
    proc, extracted = rerun(run)
    assert "probe" in jobs(proc)
    assert {p.video_id: p.fingerprint for p in read_probes(table)}["v011"] != old
    # its shard is made again: the changed video decoded, the others' rows copied
    assert list(extracted) == [f"{EVAL}-{shard_of('v011', 2)}"] and \
        list(extracted.values())[0][1] == 1, extracted


def test_damaged_shards_are_made_again_alone(run):
    """Truncated in place, replaced by a text file, made by another model: the next run makes
    these shards again, and only these."""
    import h5py
    feat = run / RES / "features"
    truncated, text, other = feat / "clip/hold out/shard-0.h5", feat / "flow/hold out/shard-1.h5", \
        feat / "clip/train/shard-1.h5"
    n_videos = {}
    for path in (truncated, text, other):
        with h5py.File(path) as f:
            n_videos[path] = len(f["video_ids"])
    os.truncate(truncated, truncated.stat().st_size // 2)  # in place: its pooled link too
    text.unlink()
    text.write_text("not a feature file\n")
    copy = other.with_name("copy.h5")
    shutil.copy(other, copy)
    with h5py.File(copy, "a") as f:
        f.attrs["model"] = "ViT-L-14"
    copy.replace(other)
    proc, extracted = rerun(run)
    for path in (truncated, text, other):
        assert f"{path.relative_to(run)}: " in proc.stderr, proc.stderr[-2000:]
    assert jobs(proc).count("extract") == 3
    # a shard damaged in place (its cache link too) takes its rows from older cache entries where
    # they are there (earlier versions of the shard) and decodes the rest; a new file in its
    # place leaves the cached rows intact, and they are copied (a fused job copies a video only
    # if both kinds are cached)
    assert sum(extracted[f"{EVAL}-0"]) == n_videos[truncated], extracted
    assert extracted == {f"{EVAL}-0": extracted[f"{EVAL}-0"], f"{EVAL}-1": (n_videos[text], 0),
                         "train-1": (n_videos[other], 0)}, extracted


def test_a_killed_student_retraining_leaves_nothing_stale(run):
    """Change the student's settings, kill its re-training (SIGKILL), run again: it re-trains."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["moclip"]["epochs"] = 3
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    student = run / RES / "models" / "moclip" / "student.pt"
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2"], cwd=run,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log, start = run / RES / "logs" / "moclip_train.log", time.time()
    deadline = start + 300
    while time.time() < deadline and not (log.exists() and log.stat().st_mtime > start
                                          and "epoch 1:" in log.read_text()):
        time.sleep(0.5)  # this run's training, one epoch in
    _kill_descendant(proc, "pipeline moclip-train")  # this test's own job, no other
    proc.wait(timeout=120)
    assert not student.exists()
    summary = (run / RES / "reports" / "summary.md").read_text()
    assert summary.startswith("> **Out of date.**") and "motion student" in summary
    again = snakemake(run)
    ran = jobs(again)
    assert "moclip_train" in ran and "moclip_export" in ran and "report" in ran, ran
    assert student.exists()
    assert not (run / RES / "reports" / "summary.md").read_text().startswith("> **Out of date")
    # a student that goes missing takes its motion features with it (planned by a dry run: the
    # real run that follows is the one just checked)
    student.unlink()
    dry = snakemake(run, "-n")
    assert re.search(r"^moclip_train\s+1$", dry.stdout, re.M) and "its student" in dry.stderr
    assert re.search(r"^moclip_export\s+4$", dry.stdout, re.M), dry.stdout[-1500:]


def test_a_new_shard_count_copies_every_row(run):
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["shards"] = 3
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc, extracted = rerun(run)
    assert len(extracted) == 6 and all(d == 0 for _, d in extracted.values()), extracted
    left = sorted(p.name for p in (run / RES / "features" / "clip" / "train").glob("*.h5"))
    assert left == ["shard-0.h5", "shard-1.h5", "shard-2.h5"]
    from pipeline.store import read_attrs
    cached = {p.stem for p in (run / RES / "features" / ".reuse" / "clip").glob("*.h5")}
    current = {read_attrs(p)["content_sha256"][:32]
               for p in (run / RES / "features" / "clip").glob("*/shard-*.h5")}
    # every current shard's rows are cached, and nothing is pruned but by `cache prune`: the
    # two-shard rows stay beside the three-shard ones
    assert current <= cached and len(cached) > len(current), (current, cached)


def _set(work, **changes):
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    for key, value in changes.items():
        cfg[key] = value
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    return cfg


def test_a_copied_project_and_a_lost_cache_decode_nothing(run, tmp_path):
    """cp -r turns the cache's hard links into copies: a no-op run keeps (and re-links) every
    row, a shard change decodes nothing; with the cache deleted, the current shards still do."""
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, symlinks=True)  # as cp -r: each link becomes a file of its own
    pool = copy / RES / "features" / ".reuse"
    n_pool = len(list(pool.rglob("*.h5")))
    assert all(p.stat().st_nlink == 1 for p in pool.rglob("*.h5"))
    proc, extracted = rerun(copy)  # re-probes (new inodes), extracts nothing
    assert not extracted and len(list(pool.rglob("*.h5"))) == n_pool
    _set(copy, shards=2)
    proc, extracted = rerun(copy)
    assert len(extracted) == 4 and all(d == 0 for _, d in extracted.values()), extracted
    shutil.rmtree(pool)
    _set(copy, shards=3)
    proc, extracted = rerun(copy)
    assert len(extracted) == 6 and all(d == 0 for _, d in extracted.values()), extracted
    assert "cache" in proc.stderr and "hard-linked" in proc.stderr  # said once, on the console
    # the new shards' jobs recorded a param read behind the probe checkpoint as '<TBD>' (made
    # in the same invocation), so the next run makes them again, copying their rows (a known
    # issue); after it the run has nothing to do
    proc, extracted = rerun(copy)
    assert all(d == 0 for _, d in extracted.values()), extracted
    shutil.rmtree(pool)  # and a run that has nothing else to do fills it again
    proc, extracted = rerun(copy)
    from pipeline.store import read_attrs
    held = {read_attrs(p)["content_sha256"][:32] for p in (copy / RES / "features" / "clip").glob("*/shard-*.h5")}
    assert not extracted and {p.stem for p in (pool / "clip").glob("*.h5")} == held, proc.stderr[-2000:]
    dry = snakemake(copy, "features", "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    cached = run_cli("cache", cwd=copy).stdout
    assert "empty (no run" not in cached and "run csv (results/csv): 10 current shard(s), 10 of them in the cache" in cached, cached


def test_a_run_of_another_name_decodes_nothing(run):
    """Another name, other labels and a subset of the same videos: rows come from the first
    run's shards beside it."""
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["dataset"] = {**cfg["dataset"], "name": "cache-subset", "annotations": "sub.csv"}
    lines = (run / "ann.csv").read_text().splitlines()
    (run / "sub.csv").write_text("\n".join(lines[:1] + lines[1:10]) + "\n")
    (run / "other.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(run, "features", "--configfile", "other.yaml")
    logs = list((run / "results/cache-subset/logs/extract").glob("*.log"))
    assert logs and all(log.read_text().strip().endswith("decoded: 0 videos") for log in logs)


def test_concurrent_runs_share_one_cache(run, tmp_path):
    """Two projects extract into one cache at once and both finish; a third decodes nothing."""
    from pipeline.cache.reuse import read_index
    cache = tmp_path / "shared"
    works = []
    for name in ("first", "second", "third"):
        (tmp_path / name).mkdir()
        work = copy_workflow(tmp_path / name)
        shutil.copytree(run / "videos", work / "videos")
        for file in ("ann.csv", "classes.csv"):
            shutil.copy(run / file, work / file)
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        cfg["dataset"]["name"], cfg["cache"], cfg["shards"] = name, str(cache), 1
        (work / "config.yaml").write_text(yaml.safe_dump(cfg))
        works.append(work)
    procs = [subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "1", "features"],
                              cwd=w, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for w in works[:2]]
    for p in procs:
        out, _ = p.communicate(timeout=900)
        assert p.returncode == 0, out[-3000:]
    files = list(cache.rglob("*.h5"))
    assert files and all(read_index(f) is not None for f in files)
    snakemake(works[2], "features")
    logs = list((works[2] / "results/third/logs/extract").glob("*.log"))
    assert logs and all(log.read_text().strip().endswith("decoded: 0 videos") for log in logs)
    _the_cache_knows_its_users(works, cache)


def _the_cache_knows_its_users(works, cache):
    """`cache` shows every project that put rows into the shared cache, whichever config it is
    given, and `prune` keeps what any of them uses: from a project that has extracted nothing
    yet (its config merged from two files, as Snakemake reads several --configfile), nothing is
    deleted; counting the given config alone (--only-given), every file would be."""
    files = sorted(str(f) for f in cache.glob("*/*.h5"))
    (works[0] / "renamed.yaml").write_text("dataset: {name: renamed}\n")
    given = ("--configfile", "config.yaml", "renamed.yaml")
    shown = run_cli("cache", *given, cwd=works[0]).stdout
    for name in ("first", "second", "third"):
        assert f"run {name} (" in shown, shown
    assert "run renamed (" in shown and "0 current shard(s)" in shown, shown
    dry = run_cli("cache", "prune", "--dry-run", *given, cwd=works[0]).stdout
    assert files and not [f for f in files if f in dry] and "would free 0 bytes" in dry, dry
    alone = run_cli("cache", "prune", "--dry-run", "--only-given", *given, cwd=works[0]).stdout
    assert all(f in alone for f in files), alone  # what the record of its users saves


def test_the_cache_command_prunes_only_what_no_run_uses(run):
    shown = run_cli("cache", cwd=run).stdout
    assert "cache results/csv/features/.reuse" in shown and "would free" in shown
    before = tree(run / "results")
    dry = run_cli("cache", "prune", "--dry-run", cwd=run).stdout
    assert tree(run / "results") == before and "would delete" in dry
    done = run_cli("cache", "prune", cwd=run).stdout
    assert int(re.search(r"freed ([\d,]+) bytes", done)[1].replace(",", "")) > 0
    assert tree(run / "results") != before
    proc, extracted = rerun(run)  # what the config uses is still there
    assert not extracted
