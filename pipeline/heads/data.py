"""Cached features of one split, in memory, and fixed-length frame sampling with masks.

Heads train on cached features only: nothing here decodes a video. Features of a split are
small (Animal Kingdom: 30k videos x 16 rows x 512 float16 = 0.5 GB), so they are read once
into one padded array per stream.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..store import FeatureReader, StoreError

IDENTITY_KEYS = {"clip": ("model", "weights"), "motion": ("model", "teacher", "student", "embedding")}


@dataclass
class SplitFeatures:
    video_ids: list[str]
    rgb: np.ndarray | None        # (N, L, D) as stored (float16 by default)
    motion: np.ndarray | None     # (N, L, Dm) as stored
    lengths: np.ndarray           # (N,) valid rows
    targets: np.ndarray           # (N, C) 0/1 or (N,) class ids
    identity: dict                # provenance of the features, checked by later users
    species: np.ndarray | None = None  # (N, S) 0/1 species of each video, where known

    def __len__(self):
        return len(self.video_ids)


def identity_of(reader: FeatureReader, kind: str) -> dict:
    return {k: reader.attrs.get(k) for k in IDENTITY_KEYS[kind]}


def _padded(reader: FeatureReader, videos: list[str], max_rows: int) -> np.ndarray:
    """Features in their stored dtype: float32 rows rounded to float16 would move cosines by
    about 1e-4 and reorder close scores."""
    dim = reader.row_shape[0]
    out = np.zeros((len(videos), max_rows, dim), reader.row_dtype)
    for i, v in enumerate(videos):
        rows = reader.video(v).data[:max_rows]
        out[i, : rows.shape[0]] = rows
    return out


def load_split(clip_paths, motion_paths, samples_by_id: dict, n_classes: int, multilabel: bool,
               need_rgb: bool = True, need_motion: bool = True, expect: dict | None = None,
               max_rows: int | None = None, n_species: int = 0) -> SplitFeatures:
    """Read the shards of one split. ``expect`` (``{"clip": {...}, "motion": {...}}``) refuses
    features of another model than the one a head was trained on."""
    expect = expect or {}
    clip = FeatureReader(clip_paths, kind="clip", expect=expect.get("clip")) if (need_rgb or not need_motion) else None
    motion = FeatureReader(motion_paths, kind="motion", expect=expect.get("motion")) if need_motion else None
    base = clip or motion
    videos = [v for v in base.video_ids if v in samples_by_id and samples_by_id[v]["labels"]
              and (motion is None or v in motion) and (clip is None or v in clip)]
    if not videos:
        raise StoreError(f"no labelled video in {base.paths[0].parent}; check the samples table")
    lengths = np.array([base.n_rows(v) for v in videos])
    if clip is not None and motion is not None:
        for v in videos[:50]:  # rows must describe the same frames
            if not np.array_equal(clip.window(v, 0, 4).frame_index, motion.window(v, 0, 4).frame_index):
                raise StoreError(f"clip and motion rows of {v!r} are not aligned; re-export motion")
    lmax = int(min(lengths.max(), max_rows or lengths.max()))
    lengths = np.minimum(lengths, lmax)
    if multilabel:
        targets = np.zeros((len(videos), n_classes), np.float32)
        for i, v in enumerate(videos):
            targets[i, samples_by_id[v]["labels"]] = 1
    else:
        targets = np.array([samples_by_id[v]["labels"][0] for v in videos], np.int64)
    identity = {}
    if clip is not None:
        identity["clip"] = identity_of(clip, "clip")
    if motion is not None:
        identity["motion"] = identity_of(motion, "motion")
    species = None
    if n_species:
        species = np.zeros((len(videos), n_species), np.float32)
        for i, v in enumerate(videos):
            species[i, samples_by_id[v].get("species") or []] = 1.0
    return SplitFeatures(videos, _padded(clip, videos, lmax) if need_rgb else None,
                         _padded(motion, videos, lmax) if motion is not None else None,
                         lengths, targets, identity, species)


def sample_indices(lengths: np.ndarray, frames: int, rng: np.random.Generator | None):
    """(N, frames) row indices and mask: ``frames`` rows spread uniformly over each video, with
    a random offset inside each segment in training (``rng``) and the centre otherwise.
    Videos shorter than ``frames`` keep all rows, padded and masked."""
    n = len(lengths)
    offset = rng.random((n, 1)) if rng is not None else np.full((n, 1), 0.5)
    grid = np.arange(frames)[None, :]
    spread = np.floor((grid + offset) * lengths[:, None] / frames).astype(np.int64)
    short = lengths[:, None] < frames
    idx = np.where(short, np.minimum(grid, lengths[:, None] - 1), np.minimum(spread, lengths[:, None] - 1))
    mask = np.where(short, grid < lengths[:, None], True)
    return idx, mask


def batches(split: SplitFeatures, frames: int, batch_size: int, rng=None, order=None, device="cpu"):
    """Yield ``(rgb, motion, mask, targets, species)`` tensors (None for a stream a head does
    not use, or species where the data set has none)."""
    order = np.arange(len(split)) if order is None else order
    for s in range(0, len(order), batch_size):
        sel = order[s:s + batch_size]
        idx, mask = sample_indices(split.lengths[sel], frames, rng)

        def take(a):
            if a is None:
                return None
            x = np.take_along_axis(a[sel], idx[:, :, None], axis=1).astype(np.float32)
            x[~mask] = 0.0
            return torch.from_numpy(x).to(device, non_blocking=True)
        yield (take(split.rgb), take(split.motion), torch.from_numpy(mask).to(device),
               torch.from_numpy(split.targets[sel]).to(device),
               None if split.species is None else torch.from_numpy(split.species[sel]).to(device))
