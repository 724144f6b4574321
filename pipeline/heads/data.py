"""Cached features of one split, without padding, and batches padded to their own longest video.

Heads train on cached features only: nothing here decodes a video. A split's rows are kept as
they are stored, one contiguous block per stream with an offset per video (:class:`Ragged`),
in memory when they fit, otherwise read from the HDF5 shards batch by batch (a prefetch thread
reads the next batch while the model works). A batch is padded to the longest of its own
videos, so memory grows with the batch, never with the longest video of the data set.
``frames``: N rows sampled per video per step, or ``all`` (every stored row).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..annotations import label_targets
from ..recipes import HEAD_INPUT_KEYS
from ..store import FeatureReader, StoreError


class Ragged:
    """Rows of one stream for N videos: ``rows(i)`` gives video i's (L_i, D) rows. In memory:
    one (R, D) block and offsets; streamed: read from ``reader`` on demand."""

    def __init__(self, data=None, offsets=None, reader=None, video_ids=None, lengths=None):
        self.data, self.reader, self.video_ids = data, reader, video_ids
        if data is not None:
            self.offsets = np.asarray(offsets, np.int64)
            self.lengths = np.diff(self.offsets)
            self.dim, self.dtype = data.shape[1], data.dtype
        else:
            self.lengths = np.asarray(lengths, np.int64)
            self.dim, self.dtype = reader.row_shape[0], reader.row_dtype

    @classmethod
    def from_padded(cls, padded: np.ndarray, lengths) -> "Ragged":
        lengths = np.asarray(lengths, np.int64)
        data = np.concatenate([padded[i, :n] for i, n in enumerate(lengths)]) if len(lengths) else \
            np.zeros((0, padded.shape[-1]), padded.dtype)
        return cls(data, np.r_[0, np.cumsum(lengths)])

    @property
    def in_memory(self) -> bool:
        return self.data is not None

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.lengths), int(self.lengths.max(initial=0)), self.dim

    def __len__(self):
        return len(self.lengths)

    def rows(self, i: int) -> np.ndarray:
        if self.data is not None:
            return self.data[self.offsets[i]:self.offsets[i + 1]]
        return self.reader.video(self.video_ids[i]).data[: self.lengths[i]]

    def padded(self) -> np.ndarray:
        """(N, L_max, D) with zeros after each video's rows (small splits and tests only)."""
        out = np.zeros(self.shape, self.dtype)
        for i, n in enumerate(self.lengths):
            out[i, :n] = self.rows(i)
        return out

    def __getitem__(self, index) -> "Ragged":
        """The videos at ``index`` (an array of positions), as a new Ragged."""
        index = np.asarray(index, np.int64)
        if self.data is None:
            return Ragged(reader=self.reader, video_ids=[self.video_ids[i] for i in index],
                          lengths=self.lengths[index])
        return Ragged.from_rows([self.rows(i) for i in index], self.dim, self.dtype)

    def load(self) -> "Ragged":
        """These rows in memory (a streamed view read once)."""
        return self if self.in_memory else Ragged.from_rows([self.rows(i) for i in range(len(self))], self.dim, self.dtype)

    @classmethod
    def from_rows(cls, parts: list[np.ndarray], dim: int, dtype) -> "Ragged":
        data = np.concatenate(parts) if parts else np.zeros((0, dim), dtype)
        return cls(data, np.r_[0, np.cumsum([len(x) for x in parts])].astype(np.int64))

    def mean_std(self, block: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension mean and std over every row, accumulated in float64 block by block."""
        total, sq, n = np.zeros(self.dim), np.zeros(self.dim), 0
        chunks = ((self.data[s:s + block] for s in range(0, len(self.data), block)) if self.data is not None
                  else (self.rows(i) for i in range(len(self))))
        for rows in chunks:
            x = rows.astype(np.float64)
            total += x.sum(0)
            sq += (x * x).sum(0)
            n += len(x)
        mean = total / max(n, 1)
        return mean, np.sqrt(np.maximum(sq / max(n, 1) - mean * mean, 0.0))


@dataclass
class SplitFeatures:
    video_ids: list[str]
    rgb: Ragged | None            # rows as stored (float16 by default); a padded (N, L, D)
    motion: Ragged | None         # array given here is turned into a Ragged with ``lengths``
    lengths: np.ndarray           # (N,) valid rows
    targets: np.ndarray           # (N, C) 0/1 or (N,) class ids
    identity: dict                # provenance of the features, checked by later users
    species: np.ndarray | None = None  # (N, S) 0/1 species of each video, where known

    def __post_init__(self):
        for name in ("rgb", "motion"):
            value = getattr(self, name)
            if isinstance(value, np.ndarray):
                setattr(self, name, Ragged.from_padded(value, self.lengths))

    def __len__(self):
        return len(self.video_ids)

    def subset(self, index, targets: np.ndarray | None = None) -> "SplitFeatures":
        """The videos at ``index`` (positions), with ``targets`` in place of theirs if given."""
        index = np.asarray(index, np.int64)
        pick = (lambda x: None if x is None else x[index])
        return replace(self, video_ids=[self.video_ids[i] for i in index], rgb=pick(self.rgb),
                       motion=pick(self.motion), lengths=self.lengths[index],
                       targets=self.targets[index] if targets is None else targets,
                       species=pick(self.species))

    def in_memory(self) -> "SplitFeatures":
        """The same split with streamed features read into memory."""
        load = (lambda x: None if x is None else x.load())
        return replace(self, rgb=load(self.rgb), motion=load(self.motion))


def identity_of(reader: FeatureReader, kind: str) -> dict:
    return {k: reader.attrs.get(k) for k in HEAD_INPUT_KEYS[kind]}


def _rows(reader: FeatureReader, videos: list[str], lengths: np.ndarray, stream: bool) -> Ragged:
    """The rows of ``videos`` as one block (in their stored dtype: float32 rows rounded to
    float16 would move cosines by about 1e-4 and reorder close scores), or a streamed view."""
    if stream:
        return Ragged(reader=reader, video_ids=list(videos), lengths=lengths)
    data = np.empty((int(lengths.sum()), reader.row_shape[0]), reader.row_dtype)
    offsets = np.r_[0, np.cumsum(lengths)]
    for i, v in enumerate(videos):
        data[offsets[i]:offsets[i + 1]] = reader.video(v).data[: lengths[i]]
    return Ragged(data, offsets)


def memory_budget() -> int:
    """Bytes of features a split may hold in memory (``PIPELINE_FEATURE_MEMORY_MB``, else a
    quarter of this machine's memory); beyond it, features are streamed from the shards."""
    if os.environ.get("PIPELINE_FEATURE_MEMORY_MB"):
        return int(float(os.environ["PIPELINE_FEATURE_MEMORY_MB"]) * 2 ** 20)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError):
        return 4 * 2 ** 30


def reader(shards, kind: str, expect: dict | None = None) -> FeatureReader:
    """``shards`` as a reader: paths are opened, an open reader is checked against ``expect``."""
    if isinstance(shards, FeatureReader):
        shards.require(expect or {})
        return shards
    return FeatureReader(shards, kind=kind, expect=expect)


def load_split(clip_paths, motion_paths, samples_by_id: dict, n_classes: int, multilabel: bool,
               need_rgb: bool = True, need_motion: bool = True, expect: dict | None = None,
               max_rows: int | None = None, n_species: int = 0) -> SplitFeatures:
    """Read the shards of one split (paths or open readers). ``expect`` (``{"clip": {...}, "motion": {...}}``) refuses
    features of another model than the one a head was trained on."""
    expect = expect or {}
    clip = reader(clip_paths, "clip", expect.get("clip")) if (need_rgb or not need_motion) else None
    motion = reader(motion_paths, "motion", expect.get("motion")) if need_motion else None
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
    if max_rows:
        lengths = np.minimum(lengths, max_rows)
    readers = [r for r in (clip if need_rgb else None, motion) if r is not None]
    size = sum(int(lengths.sum()) * r.row_shape[0] * r.row_dtype.itemsize for r in readers)
    stream = size > memory_budget()
    targets = label_targets([samples_by_id[v]["labels"] for v in videos], n_classes, multilabel)
    identity = {}
    if clip is not None:
        identity["clip"] = identity_of(clip, "clip")
    if motion is not None:
        identity["motion"] = identity_of(motion, "motion")
    species = None
    if n_species:
        species = label_targets([samples_by_id[v].get("species") or [] for v in videos], n_species, True)
    return SplitFeatures(videos, _rows(clip, videos, lengths, stream) if need_rgb else None,
                         _rows(motion, videos, lengths, stream) if motion is not None else None,
                         lengths, targets, identity, species)


def sample_indices(lengths: np.ndarray, frames, rng: np.random.Generator | None):
    """(N, T) row indices and mask. ``frames`` N: N rows spread uniformly over each video, with
    a random offset inside each segment in training (``rng``) and the centre otherwise; videos
    shorter than N keep all rows, padded and masked. ``frames`` ``all``: every row, T = the
    longest of these videos."""
    n = len(lengths)
    if frames == "all":
        grid = np.arange(int(lengths.max(initial=1)))[None, :]
        return np.minimum(grid, np.maximum(lengths[:, None] - 1, 0)), grid < lengths[:, None]
    offset = rng.random((n, 1)) if rng is not None else np.full((n, 1), 0.5)
    grid = np.arange(frames)[None, :]
    spread = np.floor((grid + offset) * lengths[:, None] / frames).astype(np.int64)
    short = lengths[:, None] < frames
    idx = np.where(short, np.minimum(grid, lengths[:, None] - 1), np.minimum(spread, lengths[:, None] - 1))
    mask = np.where(short, grid < lengths[:, None], True)
    return idx, mask


def _gather(stream: Ragged | None, sel, idx, mask) -> np.ndarray | None:
    """(B, T, D) float32 rows ``idx`` of videos ``sel``, zeros where ``mask`` is False."""
    if stream is None:
        return None
    out = np.zeros((len(sel), idx.shape[1], stream.dim), np.float32)
    for b, i in enumerate(sel):
        out[b] = stream.rows(int(i))[idx[b]]
    out[~mask] = 0.0
    return out


# padded rows of one evaluation batch (videos x their longest), at most 256 videos
EVAL_ROWS = 2 ** 15


def plan_batches(lengths: np.ndarray, frames, batch_size: int, max_rows: int | None = None,
                 rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """The videos of each batch, as positions. Training (``rng``): a random order cut into
    batches of ``batch_size``. With ``max_rows``, a batch also holds at most ``max_rows`` padded
    rows (its videos x its longest video): videos of similar length are grouped (sorted within
    pools of 50 batches, the batches then shuffled), so a long video trains in a small batch
    instead of padding a full one, and memory is bounded by ``max_rows`` whatever the longest
    video. Evaluation (no ``rng``): sorted by length under the same budget."""
    n = len(lengths)
    # padded rows per video: its own length with every row, else the sample count (short videos
    # are padded up to it, see sample_indices)
    rows = np.maximum(lengths, 1) if frames == "all" else np.full(n, int(frames))
    order = rng.permutation(n) if rng is not None else np.argsort(rows, kind="stable")
    if max_rows is None:
        return [order[s:s + batch_size] for s in range(0, n, batch_size)]
    if rng is not None:
        pools = np.split(order, range(batch_size * 50, n, batch_size * 50))
        order = np.concatenate([p[np.argsort(rows[p], kind="stable")] for p in pools]) if n else order
    plan, start, longest = [], 0, 0
    for end, i in enumerate(order):
        longest = max(longest, int(rows[i]))
        if end > start and (end - start == batch_size or (end - start + 1) * longest > max_rows):
            plan.append(order[start:end])
            start, longest = end, int(rows[i])
    if n:
        plan.append(order[start:])
    return [plan[i] for i in rng.permutation(len(plan))] if rng is not None else plan


def eval_plan(split: "SplitFeatures", params: dict) -> list[np.ndarray]:
    """Evaluation batches: up to 256 videos, length-sorted, at most ``EVAL_ROWS`` (or the
    head's ``batch_rows``, if larger) padded rows each."""
    budget = max(EVAL_ROWS, params.get("batch_rows") or 0)
    return plan_batches(split.lengths, params["frames"], 256, budget)


def batches(split: SplitFeatures, frames, plan: list[np.ndarray], rng=None, device="cpu"):
    """Yield ``(rgb, motion, mask, targets, species)`` tensors for the batches of ``plan``
    (None for a stream a head does not use, or species where the data set has none), each
    padded to its own longest video. Streamed features are read one batch ahead on a thread."""
    from ..compute import prefetch

    def arrays():
        for sel in plan:
            idx, mask = sample_indices(split.lengths[sel], frames, rng)
            yield sel, _gather(split.rgb, sel, idx, mask), _gather(split.motion, sel, idx, mask), mask

    streamed = any(x is not None and not x.in_memory for x in (split.rgb, split.motion))
    for sel, rgb, motion, mask in (prefetch(arrays(), depth=2) if streamed else arrays()):
        tensor = (lambda a: None if a is None else torch.from_numpy(a).to(device, non_blocking=True))
        yield (tensor(rgb), tensor(motion), torch.from_numpy(mask).to(device),
               torch.from_numpy(split.targets[sel]).to(device),
               None if split.species is None else torch.from_numpy(split.species[sel]).to(device))
