"""``bench-storage``: what flow rows cost on disk and to read, per lossless layout, measured on
real videos. The rows are the flow stage's own (OpenCV's DIS at ``work_size``, stored at
``size``, quantised as every flow shard is); each layout is written as a real shard where it is
one of :data:`pipeline.store.STORAGES`, and as one row a chunk (HDF5 filters of hdf5plugin) or
one row an image (imagecodecs, when it is installed) otherwise. Every figure is on one core:
encode rows/s, and decode rows/s reading 30-row windows (the student's) of a shard."""
from __future__ import annotations

import os
import tempfile
import time
import zlib
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from .row_codecs import STORAGES
from .store import FeatureReader, FeatureWriter

WINDOW = 30  # rows the student reads at once


def flow_rows(videos, rows: int, work_size: int, size: int) -> list[tuple[str, np.ndarray]]:
    """(video id, uint8 flow rows (R, 2, size, size)) of each readable video: ``rows`` frames
    spread over it, DIS flow as the flow stage computes it."""
    import torch
    from .config import section
    from .features.flow import extract_flow
    from .video import probe_video
    cfg = section("flow", {"backend": "dis", "work_size": work_size, "size": size, "storage": "gzip"})
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in map(Path, videos):
            probe = probe_video(path, path.stem, {"mode": "uniform", "frames": rows, "max_frames": 100000})
            if not probe.readable:
                raise ValueError(f"{path}: {probe.reason}")
            shard = Path(tmp) / f"{path.stem}.h5"
            extract_flow([probe], shard, cfg, torch.device("cpu"), progress=False)
            out.append((path.stem, FeatureReader([shard]).video(path.stem).data))
    return out


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _shard(path: Path, storage, rows, tiled=False, **filters) -> tuple[int, float, float]:
    """(file bytes, encode s, decode s) of the rows as one shard of the pipeline's layout
    (``storage``), or as a plain one-row-a-chunk dataset with ``filters`` (an image filter:
    ``tiled``, each row's planes stacked into one image)."""
    stored = rows.reshape(len(rows), -1, rows.shape[-1]) if tiled else rows
    def write():
        if storage is not None:
            with FeatureWriter(path, "flow", rows.shape[1:], np.uint8, {}, compression=storage) as w:
                w.add("v", np.arange(len(rows)), np.zeros(len(rows), np.float32), rows, "fp")
        else:
            with h5py.File(path, "w") as f:
                f.create_dataset("data", data=stored, chunks=(1, *stored.shape[1:]), **filters)

    def read():
        if storage is not None:
            r = FeatureReader([path])
            got = [r.window("v", s, WINDOW).data for s in range(0, len(rows), WINDOW)]
        else:
            with h5py.File(path, "r") as f:
                got = [f["data"][s:s + WINDOW] for s in range(0, len(rows), WINDOW)]
        if not np.array_equal(np.concatenate(got).reshape(rows.shape), rows):
            raise AssertionError(f"{path.name}: rows do not decode bit-identical")
    encode = _timed(write)
    return path.stat().st_size, encode, min(_timed(read) for _ in range(3))


def _images(rows, encode, decode) -> tuple[int, float, float]:
    """(bytes, encode s, decode s) of the rows coded one image each (planes stacked)."""
    tiles = rows.reshape(len(rows), -1, rows.shape[-1])
    coded = []
    enc = _timed(lambda: coded.extend(encode(t) for t in tiles))
    dec = min(_timed(lambda: [decode(c) for c in coded]) for _ in range(3))
    if not all(np.array_equal(np.asarray(decode(c)).reshape(t.shape), t) for c, t in zip(coded, tiles)):
        raise AssertionError("rows do not decode bit-identical")
    return sum(map(len, coded)), enc, dec


def candidates() -> dict:
    """name -> ("shard", storage) | ("filter", h5py filter kwargs) | ("image", encode, decode)."""
    found = {f"{s} shard": ("shard", s) for s in STORAGES}
    found.update({
        "zstd 22 (hdf5plugin)": ("filter", dict(hdf5plugin.Zstd(clevel=22))),
        "blosc2 zstd 9 + shuffle": ("filter", dict(hdf5plugin.Blosc2(
            cname="zstd", clevel=9, filters=hdf5plugin.Blosc2.SHUFFLE))),
        "blosc2 zstd 9 + bitshuffle": ("filter", dict(hdf5plugin.Blosc2(
            cname="zstd", clevel=9, filters=hdf5plugin.Blosc2.BITSHUFFLE))),
        "HTJ2K (hdf5plugin)": ("filter", dict(hdf5plugin.Htj2k(), tiled=True)),
    })
    try:
        import imagecodecs as ic
    except ImportError:
        return found
    found.update({
        "PNG 9 (imagecodecs)": ("image", lambda t: ic.png_encode(t, level=9), ic.png_decode),
        "WebP lossless (imagecodecs)": ("image", lambda t: ic.webp_encode(
            np.stack([t, t, t], -1), lossless=True, level=100), lambda c: ic.webp_decode(c)[..., 0]),
        "JPEG-XL e1 (imagecodecs)": ("image", lambda t: ic.jpegxl_encode(t, lossless=True, effort=1),
                                     ic.jpegxl_decode),
        "JPEG-XL e3 (imagecodecs)": ("image", lambda t: ic.jpegxl_encode(t, lossless=True, effort=3),
                                     ic.jpegxl_decode),
    })
    return found


def run(videos, rows: int = 48, work_size: int = 360, size: int = 224) -> list[dict]:
    """One table row per layout: bytes a row, its ratio to zlib level 6 of each row alone, and
    encode and decode rows/s on one core, over the rows of all ``videos``."""
    os.environ.setdefault("BLOSC_NTHREADS", "1")
    flows = flow_rows(videos, rows, work_size, size)
    n = sum(len(r) for _, r in flows)
    zlib_bytes = sum(len(zlib.compress(row.tobytes(), 6)) for _, r in flows for row in r)
    table = [{"layout": "zlib 6, row by row (reference)", "bytes_per_row": zlib_bytes / n,
              "of_zlib": 1.0, "encode_rows_s": None, "decode_rows_s": None}]
    with tempfile.TemporaryDirectory() as tmp:
        for name, (how, *spec) in candidates().items():
            total = [0, 0.0, 0.0]
            for vid, r in flows:
                path = Path(tmp) / f"{vid}.h5"
                if how == "shard":
                    got = _shard(path, spec[0], r)
                elif how == "filter":
                    got = _shard(path, None, r, **spec[0])
                else:
                    got = _images(r, *spec)
                total = [a + b for a, b in zip(total, got)]
            table.append({"layout": name, "bytes_per_row": total[0] / n, "of_zlib": total[0] / zlib_bytes,
                          "encode_rows_s": n / total[1], "decode_rows_s": n / total[2]})
    return table


def format_table(table: list[dict]) -> str:
    lines = ["| layout | KB a row | of zlib 6 | encode rows/s | decode rows/s (30-row windows) |",
             "|---|---:|---:|---:|---:|"]
    for r in table:
        rate = lambda v: "-" if v is None else f"{v:,.0f}"
        lines.append(f"| {r['layout']} | {r['bytes_per_row'] / 1024:.2f} | {r['of_zlib']:.2f} | "
                     f"{rate(r['encode_rows_s'])} | {rate(r['decode_rows_s'])} |")
    return "\n".join(lines)
