"""What a run's feature files cost on disk, for ``plan``: each stream's bytes per empty file,
per video and per row, measured by writing real shards with the configured sizes, dtypes and
compression. Flow's compression is read off the run's own flow shards, or (``measure``) flow
computed from sample videos (OpenCV's DIS stands in for a flow model, which a login node cannot
run quickly), or assumed, as the source says. Imports neither torch nor OpenCV unless
``measure`` asks."""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from .layout import RunFolder

SAMPLE_ROWS = 16  # flow rows computed per sample video to measure compression
# What a flow row keeps of its raw bytes per storage where nothing was measured: DIS at 224 px on
# real clips (`bench-storage`, docs/benchmarks.md)
ASSUMED_OF_RAW = {"jpegls": 0.065, "gzip": 0.13}


def _file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _write(path: Path, kind: str, shape, dtype, compression, videos: int, rows: int) -> int:
    from .store import FeatureWriter
    rng = np.random.default_rng(0)
    with FeatureWriter(path, kind, shape, dtype, compression=compression) as w:
        for v in range(videos):
            data = rng.integers(0, 255, (rows, *shape)).astype(dtype)
            w.add(f"video-{v:06d}", np.arange(rows), np.arange(rows, dtype=np.float32), data,
                  "sha256:" + "0" * 64)
        chunk = w.chunks[0]
    return _file_size(path), chunk


def index_bytes(rows: float) -> float:
    """/frame_index and /timestamps: 4 bytes a row each, written whole."""
    return 2 * 4 * rows


def measure_layout(kind: str, shape, dtype, tmp: Path) -> dict:
    """What a shard of this layout costs, measured by writing real ones: the empty file, each
    video's entry (id, offsets, fingerprint) and each row, stored in whole chunks of ``chunk``
    rows (HDF5 allocates an uncompressed chunk whole)."""
    empty, chunk = _write(tmp / f"{kind}-0.h5", kind, shape, dtype, None, 0, 0)
    few, _ = _write(tmp / f"{kind}-1.h5", kind, shape, dtype, None, 256, 1)
    more, _ = _write(tmp / f"{kind}-2.h5", kind, shape, dtype, None, 512, 1)
    per_video = (more - few) / 256  # the same chunks: only the video entries grew
    rows = 4 * chunk if chunk > 1 else 256  # chunk records (B-tree nodes) come in groups
    full, _ = _write(tmp / f"{kind}-3.h5", kind, shape, dtype, None, 1, rows)
    return {"file": empty, "per_video": per_video, "chunk": chunk,
            "per_row": (full - empty - per_video - index_bytes(rows)) / rows}


def shard_bytes(layout: dict, videos: float, rows: float) -> float:
    """One shard's size: its rows fill whole chunks."""
    stored = np.ceil(rows / layout["chunk"]) * layout["chunk"]
    return layout["file"] + videos * layout["per_video"] + index_bytes(rows) + stored * layout["per_row"]


def _run_flow_rows(config: dict, workdir: Path, layout: dict) -> tuple[float, int, str] | None:
    """(bytes of rows, rows, backend) of the run's own current flow shards (their files, video
    entries and index left out, as ``layout`` measured them), or None when it has none."""
    from .freshness import stale_reason
    from .recipes import expected_attrs
    expect = expected_attrs(config)["flow"]
    data, rows = 0.0, 0
    for path in RunFolder.of_config(config, workdir).shards("flow"):
        if stale_reason(path, expect) is None:
            import h5py
            from .row_codecs import storage_of
            with h5py.File(path, "r") as f:
                if storage_of(f)[0] != config["flow"].get("storage", "jpegls"):
                    continue  # another layout (made before flow.storage changed): not what a run writes
                n, videos = int(f["offsets"][-1]), len(f["offsets"]) - 1
            data += _file_size(path) - layout["file"] - layout["per_video"] * videos - index_bytes(n)
            rows += n
    return (data, rows, expect["model"]) if rows else None


def measure_flow(config: dict, probes: list, tmp: Path, workdir: Path, measure: bool) -> dict:
    """Flow's layout: bytes per row from the run's own flow shards when it has them, else (with
    ``measure``) flow computed on the sample videos, else an assumed compression. Only
    ``measure`` loads OpenCV."""
    cfg = config["flow"]
    size, storage = cfg["size"], cfg.get("storage", "jpegls")
    raw = 2 * size * size
    layout = measure_layout("flow", (2, size, size), np.uint8, tmp)
    if own := _run_flow_rows(config, workdir, layout):
        data, rows, backend = own
        layout["per_row"] = data / rows
        layout["source"] = (f"measured: the run's own {backend} flow shards ({rows} rows, {size} "
                            f"px, {layout['per_row'] / raw:.1%} of raw)")
        return layout
    stand_in = cfg["backend"] if cfg["backend"] != "ptlflow" else "dis"
    short = [dataclasses.replace(p, sampled=p.sampled[:SAMPLE_ROWS]) for p in probes]
    short = [p for p in short if p.sampled]
    if measure and short:
        from .compute import pick_device
        from .features.flow import extract_flow
        out = tmp / "flow-sample.h5"
        stats = extract_flow(short, out, {**cfg, "backend": stand_in}, pick_device("cpu"), progress=False)
        rows, done = stats["frames"], stats["videos"]
        if rows > 0:
            layout["per_row"] = (_file_size(out) - layout["file"] - layout["per_video"] * done
                                 - index_bytes(rows)) / rows
            what = cfg["backend"] if stand_in == cfg["backend"] else f"{cfg['model']} (DIS stands in)"
            layout["source"] = (f"measured: {rows} rows of {what} flow from {len(short)} videos, "
                                f"{size} px, {storage} ({layout['per_row'] / raw:.1%} of raw)")
            return layout
    layout["per_row"] += (ASSUMED_OF_RAW[storage] - 1) * raw
    layout["source"] = (f"assumed: {storage} keeps {ASSUMED_OF_RAW[storage]:.1%} of raw (DIS at "
                        f"224 px on real clips, docs/benchmarks.md); "
                        + ("no video to measure" if measure else "--measure-flow measures it "
                           "on the sample videos (OpenCV)"))
    return layout


def stream_layouts(config: dict, probes: list, workdir: Path = Path("."),
                   measure: bool = False) -> dict:
    """Per stream (clip, flow, motion): bytes per empty file, per video and per row."""
    from .factory import embed_dim
    dim = embed_dim(config["clip"]["model"])
    if dim is None:
        raise ValueError(f"clip.model {config['clip']['model']!r} is not an open_clip model")
    clip_dtype = np.float16 if config["clip"]["dtype"] == "float16" else np.float32
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip = measure_layout("clip", (dim,), clip_dtype, tmp)
        clip["source"] = f"measured: {dim}-d {np.dtype(clip_dtype).name}, uncompressed"
        motion = measure_layout("motion", (dim,), np.float16, tmp)
        motion["source"] = f"measured: {dim}-d float16, uncompressed"
        flow = measure_flow(config, probes, tmp, workdir, measure)
    return {"clip": clip, "flow": flow, "motion": motion}
