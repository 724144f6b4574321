"""The feature store: ragged per-frame features in HDF5, the one module that knows the layout.

Layout (CSR style; no group per video, which is slow with tens of thousands of videos)::

    /video_ids   (N,)      utf-8
    /offsets     (N+1,)    int64, rows of video i are offsets[i]:offsets[i+1]
    /frame_index (R,)      int32, source frame of each row
    /timestamps  (R,)      float32 seconds
    /data        (R, ...)  features
    /fingerprints (N,)     utf-8, each video file's content identity (extraction shards)
    attrs storage, row_shape: how /data lies on disk when not as (R, *row_shape) (:data:`STORAGES`)
    attrs: kind, schema_version, producer, complete, content_sha256, settings_sha256, +
           provenance given by the producer (content_sha256 covers ids, frame indices and data:
           a later stage can tell "same features" from "re-extracted, different" without
           reading them; settings_sha256 covers what decides a video's rows, so rows with the
           same settings and fingerprint can be copied instead of computed again)

A writer appends one video at a time into ``<name>.partial`` and renames it to the final name
only when complete, so an interrupted job never leaves a file that looks finished.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import h5py
import numpy as np

from . import __version__
from .errors import PipelineError
from .recipes import differs, settings_sha256
from .row_codecs import on_disk, read_rows, storage_of

SCHEMA_VERSION = 1
KINDS = ("clip", "flow", "motion", "text")


class StoreError(PipelineError, RuntimeError):
    pass


def encode_attr(value):
    if isinstance(value, (dict, list, tuple)) or value is None:
        return json.dumps(value, sort_keys=True)
    return value


def header_attrs(kind: str, complete: bool, attrs: dict) -> dict:
    """The attributes every store starts with, then its own."""
    return {"kind": kind, "schema_version": SCHEMA_VERSION, "producer": f"pipeline {__version__}",
            "complete": complete, **attrs}


def file_attrs(f) -> dict:
    return {k: decode_attr(v) for k, v in f.attrs.items()}


def check_kind(path, attrs: dict, kind: str | None) -> None:
    if kind is not None and attrs.get("kind") != kind:
        raise StoreError(f"{path}: holds {attrs.get('kind')!r} features, expected {kind!r}")


def check_expected(path, attrs: dict, expect: dict | None,
                   fix: str = "re-extract the features or point at matching ones") -> None:
    """Refuse a store whose attributes differ from ``expect`` (e.g. the model identity)."""
    if why := differs(attrs, expect or {}, "but this needs"):
        raise StoreError(f"{path}: {why}; {fix}")


def decode_attr(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "{[n":
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass
class Rows:
    video_id: str
    frame_index: np.ndarray
    timestamps: np.ndarray
    data: np.ndarray


class FeatureWriter:
    """Append videos, then publish atomically. Use as a context manager."""

    def __init__(self, path, kind: str, row_shape: tuple[int, ...], dtype, attrs: dict | None = None,
                 compression: str | None = None, chunk_rows: int | None = None):
        """``compression``: None, ``"gzip"`` or ``"jpegls"`` (:data:`STORAGES`; images of
        uint8 rows (C, H, W), one a chunk)."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}")
        row_shape = tuple(int(s) for s in row_shape)
        self.storage, self.row_shape = compression, row_shape
        disk_shape, filters = on_disk(compression, row_shape, dtype)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(self.path.name + ".partial")
        # no chunk cache for an image codec: rows read back right after writing come from disk,
        # so add() checks what the filter stored (it fails silently on a shape it cannot code)
        self._f = h5py.File(self.partial, "w", **({"rdcc_nbytes": 0} if compression == "jpegls" else {}))
        chunk = chunk_rows or (1 if len(row_shape) > 1 else max(1, min(1024, 2 ** 16 // max(1, row_shape[0]))))
        self._data = self._f.create_dataset(
            "data", shape=(0, *disk_shape), maxshape=(None, *disk_shape), dtype=dtype,
            chunks=(chunk, *disk_shape), **filters)
        # /frame_index and /timestamps are kept here and written whole at close: 8 bytes a row,
        # not a chunk of thousands of rows allocated in every small shard
        self._frames: list[np.ndarray] = []
        self._times: list[np.ndarray] = []
        self._ids: list[str] = []
        self._fingerprints: list[str] = []
        self._offsets = [0]
        self._sha = hashlib.sha256()
        self.settings = settings_sha256(kind, row_shape, dtype, attrs or {})
        layout = {"storage": compression, "row_shape": list(row_shape)} if disk_shape != row_shape else {}
        for key, value in header_attrs(kind, False, {"settings_sha256": self.settings, **(attrs or {}),
                                                     **layout}).items():
            self._f.attrs[key] = encode_attr(value)

    @property
    def chunks(self):
        return self._data.chunks

    @property
    def compression(self):
        return self.storage

    def add(self, video_id: str, frame_index, timestamps, data, fingerprint: str = "",
            stored_chunks: list | None = None) -> None:
        """Append one video's rows. ``stored_chunks``: the same rows as another store of this
        layout keeps them (one compressed chunk per row, from ``read_direct_chunk``), written
        as they are instead of compressed again."""
        data = np.asarray(data)
        n = data.shape[0]
        if len(frame_index) != n or len(timestamps) != n:
            raise ValueError(f"{video_id}: {n} rows but {len(frame_index)} frame indices")
        if data.shape[1:] != self.row_shape:
            raise ValueError(f"{video_id}: rows of shape {data.shape[1:]}, store has {self.row_shape}")
        start = self._offsets[-1]
        self._data.resize(start + n, axis=0)
        if stored_chunks is not None:
            for i, (mask, chunk) in enumerate(stored_chunks):
                self._data.id.write_direct_chunk((start + i,) + (0,) * (self._data.ndim - 1), chunk, mask)
        else:
            self._data[start:start + n] = data.reshape(n, *self._data.shape[1:])
        if self.storage == "jpegls" and not np.array_equal(self._data[start:start + n].reshape(data.shape), data):
            raise StoreError(f"{self.path}: video {video_id!r}: the JPEG-LS filter did not give back "
                             f"the rows it was given (rows of shape {self.row_shape}); set "
                             f"flow.storage: gzip and re-run")
        self._frames.append(np.asarray(frame_index, dtype=np.int32))
        self._times.append(np.asarray(timestamps, dtype=np.float32))
        self._ids.append(video_id)
        self._fingerprints.append(fingerprint)
        self._offsets.append(start + n)
        for part in (video_id.encode(), np.asarray(frame_index, np.int32).tobytes(),
                     np.ascontiguousarray(data).tobytes()):
            self._sha.update(part)

    def record(self, key: str, value) -> None:
        """Set one more attribute before the file is published (e.g. the videos skipped)."""
        self._f.attrs[key] = encode_attr(value)

    def close(self) -> Path:
        """Write the index, mark complete and rename to the final name."""
        f = self._f
        f.create_dataset("frame_index", data=np.concatenate([np.zeros(0, np.int32), *self._frames]))
        f.create_dataset("timestamps", data=np.concatenate([np.zeros(0, np.float32), *self._times]))
        f.create_dataset("video_ids", data=np.array(self._ids, dtype=object),
                         dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("offsets", data=np.asarray(self._offsets, dtype=np.int64))
        f.create_dataset("fingerprints", data=np.array(self._fingerprints, dtype=object),
                         dtype=h5py.string_dtype("utf-8"))
        f.attrs["content_sha256"] = self._sha.hexdigest()
        f.attrs["complete"] = True
        f.close()
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._f.close()
        finally:
            self.partial.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


def read_attrs(path) -> dict:
    with open_store(path) as f:
        return file_attrs(f)


def incomplete(f: h5py.File, needs=("offsets", "data", "video_ids")) -> str | None:
    """Why an open feature file is not whole, or None: its writer was interrupted (no
    ``complete`` mark, a dataset missing) or its index and data disagree. The one check every
    reader of shards and cache files applies."""
    if not f.attrs.get("complete") or any(name not in f for name in needs):
        return "incomplete (its writer was interrupted)"
    if f["offsets"][-1] != f["data"].shape[0]:
        return (f"damaged (its index covers {f['offsets'][-1]} rows, its data has "
                f"{f['data'].shape[0]})")
    return None


def open_store(path) -> h5py.File:
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: feature file not found; run the stage that writes it "
                         f"(snakemake --cores N <file>)")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise StoreError(f"{path}: not a readable HDF5 feature file (truncated or corrupt: "
                         f"{str(e).splitlines()[0][:120]}); delete it and re-run snakemake, which "
                         f"re-makes it (or re-run the stage that writes it)") from None


class FeatureReader:
    """Read videos or windows of rows from a list of shards without loading the rest.

    ``expect`` maps attribute names to required values (e.g. the model identity): a shard
    that disagrees is refused with a message naming the file and the attribute.
    """

    block_bytes = 64 << 20  # what iteration reads at once

    def __init__(self, paths: Iterable, kind: str | None = None, expect: dict | None = None):
        self.paths = [Path(p) for p in paths]
        self._index: dict[str, tuple[int, int, int]] = {}
        self.attrs: dict = {}
        self._files: dict[int, h5py.File] = {}
        self._pid = os.getpid()
        self._shard_attrs: list[dict] = []
        self._shapes: list[tuple] = []  # each shard's row shape (its layout may differ)
        for k, path in enumerate(self.paths):
            with open_store(path) as f:
                attrs = file_attrs(f)
                self._check(path, f, attrs, kind, expect)
                self._shard_attrs.append(attrs)
                self._shapes.append(storage_of(f)[1])
                ids = [v.decode() if isinstance(v, bytes) else v for v in f["video_ids"][:]]
                offsets = f["offsets"][:]
            if not self.attrs:
                self.attrs = attrs
            for i, vid in enumerate(ids):
                if vid in self._index:
                    other = self.paths[self._index[vid][0]]
                    raise StoreError(f"{path}: video {vid!r} is also in {other}")
                self._index[vid] = (k, int(offsets[i]), int(offsets[i + 1]))

    @staticmethod
    def _check(path, f, attrs, kind, expect):
        if attrs.get("schema_version") != SCHEMA_VERSION:
            raise StoreError(f"{path}: feature schema version {attrs.get('schema_version')}, this "
                             f"pipeline reads version {SCHEMA_VERSION}; re-run its stage")
        check_kind(path, attrs, kind)
        if why := incomplete(f):
            raise StoreError(f"{path}: {why}; delete it and re-run its stage")
        check_expected(path, attrs, expect)

    def require(self, expect: dict) -> None:
        """Refuse (naming the shard and the attribute) any shard whose attributes differ from
        ``expect``, as the ``expect`` argument does when opening."""
        for path, attrs in zip(self.paths, self._shard_attrs):
            check_expected(path, attrs, expect)

    @property
    def shard_attrs(self) -> list[dict]:
        """Each shard's attributes, in the order of :attr:`paths`."""
        return list(self._shard_attrs)

    def videos_in(self, paths) -> set[str]:
        """The videos stored in these of the reader's shards."""
        keep = {k for k, p in enumerate(self.paths) if p in {Path(q) for q in paths}}
        return {v for v, (k, _, _) in self._index.items() if k in keep}

    def frame_index(self, video_id: str) -> np.ndarray:
        """The frame numbers of a video's rows (its features are not read)."""
        k, a, b = self._locate(video_id)
        return self._file(k)["frame_index"][a:b]

    def _file(self, k: int) -> h5py.File:
        if self._pid != os.getpid():  # h5py handles must not cross a fork
            self._files, self._pid = {}, os.getpid()
        if k not in self._files:
            self._files[k] = h5py.File(self.paths[k], "r")
        return self._files[k]

    @property
    def video_ids(self) -> list[str]:
        return list(self._index)

    def __contains__(self, video_id) -> bool:
        return video_id in self._index

    def __len__(self) -> int:
        return len(self._index)

    def n_rows(self, video_id: str) -> int:
        _, a, b = self._locate(video_id)
        return b - a

    def _locate(self, video_id):
        try:
            return self._index[video_id]
        except KeyError:
            raise StoreError(f"video {video_id!r} is in none of {len(self.paths)} feature "
                             f"shards (was it skipped as unreadable by the probe stage?)") from None

    def window(self, video_id: str, start: int = 0, length: int | None = None) -> Rows:
        """Rows start:start+length of one video (clipped to the video); reads only those."""
        k, a, b = self._locate(video_id)
        lo = a + max(0, start)
        hi = b if length is None else min(b, lo + length)
        f = self._file(k)
        return Rows(video_id, f["frame_index"][lo:hi], f["timestamps"][lo:hi],
                    read_rows(f, lo, hi, self._shapes[k]))

    def video(self, video_id: str) -> Rows:
        return self.window(video_id)

    def __iter__(self) -> Iterator[Rows]:
        """Every video in order, read in contiguous blocks of up to ~64 MB: one read (and one
        decompression of each chunk) for many videos instead of one per video."""
        items = list(self._index.items())
        budget = max(1, self.block_bytes // max(1, int(np.prod(self.row_shape)) * self.row_dtype.itemsize))
        i = 0
        while i < len(items):
            k, a, b = items[i][1]
            j = i + 1
            while j < len(items) and items[j][1][0] == k and items[j][1][1] == b \
                    and items[j][1][2] - a <= budget:
                b = items[j][1][2]
                j += 1
            f = self._file(k)
            data, index, stamps = read_rows(f, a, b, self._shapes[k]), f["frame_index"][a:b], f["timestamps"][a:b]
            for vid, (_, lo, hi) in items[i:j]:
                yield Rows(vid, index[lo - a:hi - a], stamps[lo - a:hi - a], data[lo - a:hi - a])
            i = j

    @property
    def row_dtype(self):
        return self._file(0)["data"].dtype

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self._shapes[0]

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}
