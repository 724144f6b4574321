"""The student's training windows: which rows an epoch reads (:func:`epoch_plan`, drawn from
``(seed, epoch)``), read as a Dataset of flow and teacher rows (:class:`Windows`) and padded
into batches with a validity mask (:func:`collate`)."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ..store import FeatureReader


class Windows(Dataset):
    """Items ``(video_id, start)`` -> a window of flow rows, teacher rows and the labels."""

    def __init__(self, items, flow: FeatureReader, clip: FeatureReader, targets: dict, seq_len: int):
        self.items, self.flow, self.clip = items, flow, clip
        self.targets, self.seq_len = targets, seq_len

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        vid, start = self.items[i]  # rows aligned per video: checked once by open_data
        f = self.flow.window(vid, start, self.seq_len)
        c = self.clip.window(vid, start, self.seq_len)
        return f.data, c.data.astype(np.float32), self.targets[vid]


def collate(batch, seq_len: int, padding: str = "mask"):
    """Pad windows to ``seq_len`` rows with a validity mask; ``repeat_last``: the last row
    repeated and counted as a frame (ViMoCLIP's windows)."""
    b = len(batch)
    fshape, d = batch[0][0].shape[1:], batch[0][1].shape[1]
    flow = torch.zeros((b, seq_len, *fshape), dtype=torch.uint8)
    teacher = torch.zeros((b, seq_len, d))
    mask = torch.zeros((b, seq_len), dtype=torch.bool)
    for i, (f, c, _) in enumerate(batch):
        n = f.shape[0]
        flow[i, :n] = torch.from_numpy(np.ascontiguousarray(f))
        teacher[i, :n] = torch.from_numpy(c)
        mask[i, :n] = True
        if padding == "repeat_last" and 0 < n < seq_len:
            flow[i, n:], teacher[i, n:], mask[i, n:] = flow[i, n - 1], teacher[i, n - 1], True
    targets = torch.from_numpy(np.stack([t for _, _, t in batch]))
    return flow, teacher, mask, targets


def epoch_plan(videos: list[str], lengths: dict, seq_len: int, seed: int, epoch: int,
               windows: str = "one_window", stride: int | None = None):
    """(video, first row) of every training window of an epoch, in a seeded order.
    ``one_window``: one random window per video; ``all_windows``: a window every ``stride``
    rows (None: ``seq_len``, non-overlapping; the last one may be short), so an epoch sees every
    stored row; ViMoCLIP's windows start every 30 rows and hold 29."""
    rng = np.random.default_rng([seed, epoch])
    if windows == "all_windows":
        items = [(v, s) for v in videos for s in range(0, max(1, lengths[v]), stride or seq_len)]
        return [items[i] for i in rng.permutation(len(items))]
    order = [videos[i] for i in rng.permutation(len(videos))]
    return [(v, int(rng.integers(0, max(1, lengths[v] - seq_len + 1)))) for v in order]


def centre_plan(videos, lengths, seq_len):
    return [(v, max(0, (lengths[v] - seq_len) // 2)) for v in videos]
