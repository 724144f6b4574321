"""How a store's /data lies on disk: the row codecs (flow.storage). Layout only, never what the
rows hold: a shard of either codec serves the same rows to every reader, and the cache copies
rows between them (pipeline/cache/reuse.py)."""
from __future__ import annotations

import json

import h5py
import hdf5plugin  # registers the JPEG-LS filter (FCIDECOMP) that flow shards use
import numpy as np

# One row a chunk (a window reads only its rows). "jpegls": a row's planes stacked into one (C*H, W) grey
# image, lossless JPEG-LS (CharLS, through hdf5plugin's FCIDECOMP filter): about half of
# gzip's bytes on real flow, decoded at thousands of rows a second on one core
# (docs/benchmarks.md, "Flow on disk"). "gzip": HDF5's deflate, as shards made before it.
STORAGES = ("jpegls", "gzip")


def on_disk(storage: str | None, row_shape: tuple, dtype) -> tuple[tuple, dict]:
    """The shape of a row in /data and the dataset's filters, for a storage."""
    if storage == "jpegls":
        if len(row_shape) != 3 or np.dtype(dtype) != np.uint8:
            raise ValueError(f"jpegls stores uint8 rows (C, H, W), not {np.dtype(dtype).name} {row_shape}")
        return (row_shape[0] * row_shape[1], row_shape[2]), dict(hdf5plugin.FciDecomp())
    if storage not in (None, "gzip"):
        raise ValueError(f"storage {storage!r}: one of {STORAGES} or None")
    return row_shape, {"compression": storage, "shuffle": storage is not None}


def storage_of(f: h5py.File) -> tuple[str | None, tuple]:
    """(storage, row shape) of an open store: how /data lies on disk, what a row is."""
    data = f["data"]
    shape = f.attrs.get("row_shape")
    storage = f.attrs.get("storage")
    storage = storage.decode() if isinstance(storage, bytes) else storage
    return (storage or data.compression), (tuple(int(s) for s in json.loads(shape)) if shape is not None
                                           else tuple(data.shape[1:]))


def read_rows(f: h5py.File, start: int, stop: int, shape: tuple | None = None) -> np.ndarray:
    """Rows start:stop of an open store's /data, each of its row shape whatever the layout."""
    shape = shape or storage_of(f)[1]
    data = f["data"][start:stop]
    return data.reshape(len(data), *shape)
