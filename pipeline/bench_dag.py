"""How the samples stage and the DAG scale with the data set: ``python -m pipeline.bench_dag``.

Writes an Animal Kingdom-style list of N placeholder videos (empty files: what is timed is
listing, stat-ing, sharding and Snakemake's planning, not video), then times the samples
command, a dry run of a new run, and a dry run once every probe table exists (each extraction
job's trigger then reads its table), and prints a table.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from .files import copy_workflow


def write_dataset(folder: Path, n: int) -> dict:
    """N placeholder videos in an Animal Kingdom list, 80% train, 20% val."""
    videos = folder / "videos"
    videos.mkdir(parents=True)
    classes = folder / "ak_action.csv"
    classes.write_text("id,name\n" + "".join(f"{i},action {i}\n" for i in range(140)))
    lists = {"train": [], "val": []}
    for i in range(n):
        name = f"V{i:07d}.mp4"
        (videos / name).touch()
        lists["train" if i % 5 else "val"].append(f" {name} {i % 140} {(i * 7) % 140}\n")
    splits = {}
    for split, lines in lists.items():
        splits[split] = str(folder / f"{split}.txt")
        Path(splits[split]).write_text("".join(lines))
    return {"name": "scale", "format": "animal_kingdom", "videos": str(videos),
            "classes": str(classes), "splits": splits, "eval_split": "val", "val_split": None}


def timed(cmd, cwd) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, nargs="+", default=[30000, 300000])
    p.add_argument("--shards", type=int, default=64)
    p.add_argument("--work", help="folder for the placeholder data set (default: temp)")
    a = p.parse_args(argv)
    rows = []
    for n in a.videos:
        with tempfile.TemporaryDirectory(dir=a.work) as tmp:
            work = Path(tmp)
            copy_workflow(work)
            cfg = {"dataset": write_dataset(work / "data", n), "shards": a.shards, "heads": {}}
            (work / "config.yaml").write_text(yaml.safe_dump(cfg))
            py = sys.executable
            t_samples = timed([py, "-m", "pipeline", "samples", "--params",
                               json.dumps(cfg["dataset"]), "--shards", str(a.shards),
                               "--out", "results/scale"], work)
            t_new = timed([py, "-m", "snakemake", "-n", "--cores", "2"], work)
            timed([py, "-m", "snakemake", "--cores", "2", "--until", "probe"], work)  # empty files: probed as unreadable, quickly
            t_probed = timed([py, "-m", "snakemake", "-n", "--cores", "2"], work)
            rows.append((n, a.shards, t_samples, t_new, t_probed))
    print("| videos | shards per split | samples (s) | snakemake -n, new run (s) | "
          "snakemake -n, all probed (s) |\n|---:|---:|---:|---:|---:|")
    for n, shards, s, new, probed in rows:
        print(f"| {n:,} | {shards} | {s:.1f} | {new:.1f} | {probed:.1f} |")


if __name__ == "__main__":
    main()
