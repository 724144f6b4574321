"""What decides whether outputs are current: a probe shard's members, files that cannot be
current (named while the DAG is planned, never removed then), the summary's out-of-date banner,
and one definition of what decides extracted rows.

End-to-end scenario: each setting changed once on a copy of the session's small csv run,
judged by Snakemake's dry run (its planned jobs and their commands against its record), the
DAG's freshness notes and the writers' row identity."""
import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.freshness import shard_members, stale_outputs
from pipeline.store import FeatureWriter

def test_a_summary_is_marked_out_of_date_once_per_reason(tmp_path):
    from pipeline.freshness import OUT_OF_DATE, mark_out_of_date
    summary = tmp_path / "summary.md"
    mark_out_of_date(summary, "nothing to mark")  # no summary yet: nothing written
    assert not summary.exists()
    summary.write_text("# Heads compared\n\n| fusion | 70.00 |\n")
    for why in ("head fusion is being trained again", "head fusion is being trained again",
                "head rgb_only is being trained again"):
        mark_out_of_date(summary, why)
    text = summary.read_text()
    assert text.startswith(OUT_OF_DATE) and text.count("head fusion is being trained") == 1
    assert "head rgb_only" in text and text.endswith("# Heads compared\n\n| fusion | 70.00 |\n")


def test_a_probe_shard_is_decided_by_its_videos_not_their_labels(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (videos / name).write_bytes(b"x" * 10)
    table = tmp_path / "samples.tsv"

    def write(labels_of_a):
        table.write_text("video_id\tpath\tsplit\tshard\tlabels\tspecies\n"
                         f"a\ta.mp4\ttrain\t0\t{labels_of_a}\t\nb\tb.mp4\ttrain\t0\t2\t\n")
        os.utime(table, ns=(time_ns[0], time_ns[0]))
        time_ns[0] += 10**9
    time_ns = [10**18]
    write("1")
    before = shard_members(table, videos, "train", 0)
    write("3")  # a label fix
    assert shard_members(table, videos, "train", 0) == before
    (videos / "b.mp4").write_bytes(b"y" * 11)  # replaced content
    assert shard_members(table, videos, "train", 0) != before


def test_a_same_size_same_mtime_replacement_is_probed_again(tmp_path):
    """cp -p, rsync -a and tar x keep size and mtime: the inode and ctime still tell."""
    import shutil
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(b"x" * 10)
    table = tmp_path / "samples.tsv"
    table.write_text("video_id\tpath\tsplit\tshard\tlabels\tspecies\na\ta.mp4\ttrain\t0\t1\t\n")
    before = shard_members(table, videos, "train", 0)
    assert shard_members(table, videos, "train", 0) == before
    (tmp_path / "new.mp4").write_bytes(b"y" * 10)
    shutil.copystat(videos / "a.mp4", tmp_path / "new.mp4")
    os.replace(tmp_path / "new.mp4", videos / "a.mp4")
    st = (videos / "a.mp4").stat()
    assert st.st_size == 10
    assert shard_members(table, videos, "train", 0) != before


def _shard(path, kind="clip", model="m", complete=True):
    w = FeatureWriter(path, kind, (4,), np.float16, {"model": model, "sampling": {"mode": "uniform"}})
    w.add("v", [0], [0.0], np.zeros((1, 4)))
    if complete:
        w.close()
    else:
        w.abort()


def test_files_that_cannot_be_current_are_named(tmp_path):
    cfg = {"clip": {"model": "m"}, "sampling": {"mode": "uniform"},
           "flow": {"backend": "dis", "model": "raft", "step": 1, "size": 32, "work_size": 64,
                    "bound": 4, "half": False}}
    feat = tmp_path / "features" / "clip"
    _shard(feat / "train" / "shard-0.h5")
    _shard(feat / "train" / "shard-1.h5", model="other")
    _shard(feat / "train" / "shard-7.h5")
    (feat / "test").mkdir(parents=True)
    (feat / "test" / "shard-0.h5").write_text("not hdf5")
    good = feat / "test" / "shard-1.h5"
    _shard(good)
    with open(good, "r+b") as f:
        f.truncate(good.stat().st_size // 2)
    _shard(tmp_path / "features" / "motion" / "train" / "shard-0.h5", kind="motion")
    before = sorted((p, p.stat().st_size) for p in tmp_path.rglob("*"))
    stale = stale_outputs(tmp_path, cfg, ["train", "test"], 2)
    assert sorted((p, p.stat().st_size) for p in tmp_path.rglob("*")) == before  # reads only
    found = {str(p.relative_to(tmp_path)): why for p, why, _ in stale}
    assert {str(p.relative_to(tmp_path)) for p, _, in_plan in stale if not in_plan} == \
        {"features/clip/train/shard-7.h5"}
    assert set(found) == {"features/clip/train/shard-1.h5", "features/clip/train/shard-7.h5",
                          "features/clip/test/shard-0.h5", "features/clip/test/shard-1.h5",
                          "features/motion/train/shard-0.h5"}, found
    assert "its student" in found["features/motion/train/shard-0.h5"]
    assert "made with model='other'" in found["features/clip/train/shard-1.h5"]
    assert "not in the run's plan" in found["features/clip/train/shard-7.h5"]
    assert "not a readable HDF5" in found["features/clip/test/shard-0.h5"]


# One change per setting of the sections that decide extracted rows and of the top level
# (None: the setting's own alternative below). Speed settings must re-run and re-decode nothing.
SETTING_CHANGES = {
    "clip.model": None, "clip.pretrained": None, "clip.dtype": "float32", "clip.precision": "bfloat16",
    "clip.batch_size": 7, "clip.decode_workers": 3,
    "flow.backend": "farneback", "flow.model": "raft_small", "flow.checkpoint": "sintel",
    "flow.step": 2, "flow.work_size": 48, "flow.size": 16, "flow.bound": 8, "flow.batch_size": 3,
    "flow.half": False, "flow.decode_workers": 3, "flow.storage": "gzip",
    "sampling.mode": "all", "sampling.frames": 8, "sampling.stride": 2, "sampling.fps": 2,
    "sampling.max_frames": 10,
    "device": "cpu", "decoder": "torchcodec", "tracking": "tensorboard", "shards": 3,
    "cache": "elsewhere", "extraction": "separate",
}
LAYOUT = ("shards", "cache", "extraction")  # where rows lie, not what they are


@pytest.mark.slow
def test_each_setting_re_extracts_alike_in_the_rules_the_freshness_check_and_the_cache(
        csv_run, tmp_path, monkeypatch, micro_clip):
    """Change each setting once on a finished run and ask each part what it does, not the
    function they share: Snakemake (a dry run: the jobs it plans because their recorded params
    differ), the DAG's freshness notes (shards it names stale) and the cache's
    row identity (the writers' own, on the config's device) and ``plan`` (it measures flow on
    the run's current flow shards only). Speed settings move none of them.
    A setting that decides rows makes Snakemake re-run exactly the jobs of the shards named
    stale (a fused job makes a clip and a flow shard: both are re-made, the other's rows from
    the cache). Layout settings (shards, cache, extraction) name nothing stale and move no
    row's identity: Snakemake may make the shards again (other videos in a shard, another rule),
    from the cache. The cache may call two settings alike that the others tell apart (weights at
    another path, a precision "auto" resolves to), never the reverse."""
    import ast
    import base64
    import copy
    import json
    import re
    import shlex
    import torch
    import yaml
    from conftest import copy_run, snakemake
    from pipeline.compute import pick_device
    from pipeline.config import schema, section, validate_config
    from pipeline.runtime import runtime_keys
    from pipeline.features.clip import clip_encoder, clip_writer
    from pipeline.features.flow import flow_computer
    from pipeline.plan import make_plan
    work = copy_run(csv_run, tmp_path / "run", videos="videos")
    monkeypatch.chdir(work)  # the config's relative paths
    raw = yaml.safe_load((work / "config.yaml").read_text())
    props = schema()["properties"]
    listed = {f"{s}.{k}" for s in ("clip", "flow", "sampling") for k in props[s]["properties"]} | \
        {k for k in props if "properties" not in props[k] and k != "heads"}
    assert listed == set(SETTING_CHANGES), f"classify each setting: {listed ^ set(SETTING_CHANGES)}"
    other = work / "other_clip.pt"  # other weights, and the same weights at another path
    state = torch.load(raw["clip"]["pretrained"], map_location="cpu", weights_only=True)
    torch.save({k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}, other)
    moved = work / "moved_clip.pt"
    moved.write_bytes(Path(raw["clip"]["pretrained"]).read_bytes())
    cases = {name: value for name, value in SETTING_CHANGES.items() if value is not None}
    cases.update({"clip.model": {"model": micro_clip, "pretrained": None},
                  "clip.pretrained": str(other), "clip.pretrained (moved)": str(moved)})
    shards = {kind: f"results/csv/features/{kind}/train/shard-0.h5" for kind in ("clip", "flow")}

    def changed(name, value):
        cfg = copy.deepcopy(raw)
        key = name.split(" ")[0]
        if "." in key:
            part, leaf = key.split(".")
            cfg[part] = {**cfg.get(part, {}), **(value if isinstance(value, dict) else {leaf: value})}
        else:
            cfg[key] = value
        return cfg

    def identity(cfg):
        """The rows' identity as the writers compute it, on the device the config picks."""
        cfg = validate_config(cfg)
        device = pick_device(cfg["device"])
        enc = clip_encoder(section("clip", cfg["clip"]), device, cfg["sampling"])
        w = [clip_writer(tmp_path / "c.h5", enc),
             flow_computer(section("flow", cfg["flow"]), device, cfg["sampling"]).writer(tmp_path / "f.h5")]
        for writer in w:
            writer.abort()
        return {"clip": w[0].settings, "flow": w[1].settings}

    def recorded(path) -> set:
        """The params Snakemake recorded for the job that made ``path`` (its metadata)."""
        name = base64.b64encode(path.encode()).decode()
        meta = json.loads((work / ".snakemake" / "metadata" / name).read_text())
        return {ast.literal_eval(v) for v in meta["params"]}

    def look(cfg) -> tuple[set, set]:
        """(shards Snakemake re-runs for their params, shards the DAG names stale) under ``cfg``,
        given as a user's --configfile. A shard's job planned by the dry run re-runs for its
        params when the settings its printed command passes are not those Snakemake recorded
        for it (its reason lists params only when nothing else made it run); a job behind a
        probe table planned again for changed params runs after it, on that table."""
        (work / "changed.yaml").write_text(yaml.safe_dump(cfg))
        out = snakemake(work, "features", "-n", "-p", "--configfile", "changed.yaml")
        jobs = {}  # output -> (reason, shell command) of each planned job
        for block in re.split(r"^\[[^\]\n]+\]$", out.stdout, flags=re.M):  # each job's "[date]" line
            outputs, why, cmd = (re.search(rf"^\s*{k}: (.+)$", block, re.M)
                                 for k in ("output", "reason", "Shell command"))
            if outputs and why:
                jobs.update(dict.fromkeys(outputs.group(1).split(", "), (why.group(1), cmd and cmd.group(1))))

        def rerun(path):
            if path in jobs:
                if "Params have changed" in jobs[path][0]:
                    return True
                words = shlex.split(jobs[path][1])
                given = {words[i + 1] for i, w in enumerate(words) if w in ("--clip", "--flow", "--params", "--sampling")}
                return not given <= recorded(path)
            return "Params have changed" in jobs.get("results/csv/probe/train/shard-0.tsv", ("",))[0]

        stale = {k for k, path in shards.items()
                 if re.search(rf"^note: {re.escape(path)}: .*; a run makes it again$", out.stderr, re.M)}
        return {k for k, path in shards.items() if rerun(path)}, stale

    def plan(cfg) -> set:
        """{"flow"} when ``plan`` no longer measures flow on the run's own flow shards (it
        measures only current ones); it computes nothing and writes no file."""
        source = make_plan(validate_config(cfg), work)["streams"]["flow"]["source"]
        return set() if source.startswith("measured: the run's own") else {"flow"}

    assert look(raw) == (set(), set()) and plan(raw) == set()  # the finished run is current
    base = identity(raw)
    table, wrong = [], []
    for name, value in cases.items():
        cfg = changed(name, value)
        rules, fresh = look(cfg)
        cache = {k for k, h in identity(cfg).items() if h != base[k]}
        planned = plan(cfg)
        table.append(f"{name:26} rules {sorted(rules)!s:18} freshness {sorted(fresh)!s:18} "
                     f"cache {sorted(cache)!s:18} plan {sorted(planned)}")
        speed = name in runtime_keys()[""] or name.split(".")[-1] in runtime_keys().get(name.split(".")[0], ())
        fused = cfg.get("extraction", "fused") == "fused"
        if name == "flow.storage":  # plan measures flow's bytes in the storage it will write
            planned = set()
        if speed:
            ok = not (rules or fresh or cache or planned)
        elif name in LAYOUT:
            ok = not (fresh or cache or planned)
        else:
            ok = rules == ({"clip", "flow"} if fused and fresh else fresh) and cache <= fresh
            ok = ok and planned == fresh & {"flow"}
        if not ok:
            wrong.append(table[-1])
    print("\n".join(table))
    assert not wrong, "\n".join(wrong)
    assert "clip.dtype" in "".join(t for t in table if "cache ['clip']" in t)
