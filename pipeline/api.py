"""The features of a finished run, for your own code: ``pipeline.open_run(results_dir)``.

    run = pipeline.open_run("results/demo")
    run.classes                       # class names, in label order
    run.samples("train")              # videos with labels and species joined (names and ids)
    for video_id, rows in run.arrays("test", "clip"):   # (frames, dim) per video
        ...
    data = run.dataset("train", streams=("clip", "motion"), frames=16)   # a torch Dataset
    loader = torch.utils.data.DataLoader(data, batch_size=8, collate_fn=pipeline.api.collate)

Streams are the run's feature folders: ``clip`` (CLIP frame embeddings), ``flow`` (optical flow,
uint8-quantised), ``motion`` (the student's motion embeddings), ``flow_clip``. Light at import:
torch is imported by :meth:`Run.dataset` only.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from .annotations import read_classes, read_samples
from .layout import STREAMS, RunFolder
from .store import FeatureReader, StoreError


class Run:
    """A run (``results/<name>``) whose samples stage has run: its classes, samples and feature
    shards; ``folder`` (:class:`~pipeline.layout.RunFolder`) says where each output lies. The
    one notion of a run: ``predict`` and ``export`` open one too."""

    def __init__(self, path):
        self.path = Path(path)
        self.folder = RunFolder(str(path))
        if not Path(self.folder.samples).is_file():
            raise StoreError(f"{self.path}: no samples.tsv; give a run folder (results/<name>) "
                             f"whose samples stage has run")
        self.classes = [c["name"] for c in read_classes(self.folder.classes)]
        species_tsv = Path(self.folder.species)
        self.species = [c["name"] for c in read_classes(species_tsv)] if species_tsv.is_file() else []
        self._samples = read_samples(self.folder.samples)
        self._stats: dict = {}

    @property
    def splits(self) -> list[str]:
        return sorted({r["split"] for r in self._samples})

    def samples(self, split: str | None = None) -> list[dict]:
        """Each listed video: id, path, split, label ids and names, species ids and names."""
        return [{**r, "label_names": [self.classes[i] for i in r["labels"]],
                 "species_names": [self.species[i] for i in r["species"] if i < len(self.species)]}
                for r in self._samples if split is None or r["split"] == split]

    def shards(self, split: str, stream: str) -> list[Path]:
        if stream not in STREAMS:
            raise ValueError(f"stream {stream!r}: one of {', '.join(STREAMS)}")
        found = self.folder.shards(stream, split)
        if not found:
            raise StoreError(f"{self.path}: no {stream} shards of split {split!r} (run the stage "
                             f"that makes them; splits here: {', '.join(self.splits)})")
        shard_no = {t.stem for t in self.folder.shards("probe", split)}  # shard-<k>: every probed shard has rows
        missing = sorted(shard_no - {p.stem for p in found})
        if missing:
            raise StoreError(f"{self.path}: {stream} {split}/{missing[0]}.h5 is missing ({len(missing)} "
                             f"of {len(shard_no)} shards): its videos would be left out; run "
                             f"snakemake to make it again")
        return found

    def reader(self, split: str, stream: str) -> FeatureReader:
        kind = "motion" if stream == "flow_clip" else stream
        return FeatureReader(self.shards(split, stream), kind=kind)

    def arrays(self, split: str, stream: str):
        """(video_id, rows) for every stored video of the split, in shard order."""
        for rows in self.reader(split, stream):
            yield rows.video_id, rows.data

    def labels(self, split: str) -> tuple[list[str], np.ndarray]:
        """(video ids, (N, C) multi-hot float32 label matrix) of the split's listed videos."""
        rows = [r for r in self._samples if r["split"] == split]
        y = np.zeros((len(rows), len(self.classes)), np.float32)
        for i, r in enumerate(rows):
            y[i, r["labels"]] = 1
        return [r["video_id"] for r in rows], y

    def dataset(self, split: str, streams=("clip",), frames: int | None = None,
                standardise: bool = True, train_split: str | None = None):
        """A ``torch.utils.data.Dataset`` of the split's videos stored in every stream, as a
        built-in head of those streams sees them (see :func:`video_dataset`)."""
        if isinstance(streams, str) or not all(s in STREAMS for s in streams) or not streams:
            raise ValueError(f"streams={streams!r}: a tuple of stream names from {', '.join(STREAMS)}, "
                             f"e.g. ('clip', 'motion')")
        if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int) or frames < 1):
            raise ValueError(f"frames={frames!r}: a positive number of rows per video, or None for all")
        stats = None
        if standardise:
            train = train_split or "train"
            if train not in self.splits:
                raise ValueError(f"standardise: the statistics come from the training split; this "
                                 f"run has no split {train!r}: give train_split= (splits: "
                                 f"{', '.join(self.splits)}) or standardise=False")
            stats = {s: self.stream_stats(train, s) for s in streams if s != "flow"}
        return video_dataset()(self, split, tuple(streams), frames, stats)

    def stream_stats(self, split: str, stream: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension mean and std of every stored row of a split's stream: what the heads
        standardise with (their training split's), computed once per run object."""
        key = (split, stream)
        if key not in self._stats:
            total = sq = None
            n = 0
            for rows in self.reader(split, stream):
                x = rows.data.astype(np.float64)
                total = x.sum(0) if total is None else total + x.sum(0)
                sq = (x * x).sum(0) if sq is None else sq + (x * x).sum(0)
                n += len(x)
            mean = total / max(n, 1)
            self._stats[key] = (mean, np.maximum(np.sqrt(np.maximum(sq / max(n, 1) - mean * mean, 0.0)), 1e-6))
        return self._stats[key]


def open_run(path) -> Run:
    return Run(path)


@lru_cache(maxsize=1)
def video_dataset():
    """The Dataset class (made on first use: importing this module needs no torch). Item
    ``i``: ``{"video_id", <stream>: float tensor (T, ...), "labels": (C,) multi-hot, "species":
    (S,) multi-hot}``; ``frames``: that many rows, the centre of each of as many equal segments
    (the rows a built-in head is evaluated on; all rows when None or when the video is
    shorter); embedding streams standardised with the training split's per-dimension mean and
    std, as the heads do (``stats``). Ragged videos: batch with :func:`collate`."""
    import torch

    from .heads.data import sample_indices

    class VideoDataset(torch.utils.data.Dataset):
        def __init__(self, run: Run, split: str, streams: tuple, frames: int | None, stats: dict | None):
            self.readers = {s: run.reader(split, s) for s in streams}
            stored = set.intersection(*(set(r.video_ids) for r in self.readers.values()))
            self.rows = [r for r in run.samples(split) if r["video_id"] in stored]
            self.n_classes, self.n_species, self.frames = len(run.classes), len(run.species), frames
            self.stats = stats or {}

        def __len__(self) -> int:
            return len(self.rows)

        def __getitem__(self, i: int) -> dict:
            r = self.rows[i]
            item, frames = {"video_id": r["video_id"]}, None
            for stream, reader in self.readers.items():
                rows = reader.video(r["video_id"])
                if frames is not None and not np.array_equal(rows.frame_index, frames):
                    raise StoreError(f"video {r['video_id']!r}: its {stream} rows describe other "
                                     f"frames than its {next(iter(self.readers))} rows; re-make "
                                     f"the run's features")
                frames, data = rows.frame_index, rows.data
                if self.frames:  # the heads' choice: each segment's centre (heads.data)
                    idx, mask = sample_indices(np.array([len(data)]), self.frames, None)
                    data = data[idx[0][mask[0]]]
                data = np.asarray(data, np.float32)
                if stream in self.stats:
                    mean, std = self.stats[stream]
                    data = (data - mean) / std
                item[stream] = torch.from_numpy(np.asarray(data, np.float32))
            item["labels"] = torch.zeros(self.n_classes)
            item["labels"][r["labels"]] = 1
            item["species"] = torch.zeros(self.n_species)
            if r["species"] and self.n_species:
                item["species"][r["species"]] = 1
            return item

    return VideoDataset


def collate(batch: list[dict]) -> dict:
    """Pad each stream to the batch's longest video: ``<stream>`` (B, T, ...) and ``mask``
    (B, T) True on real rows; labels and species stacked; ``video_id`` a list."""
    import torch
    out = {"video_id": [b["video_id"] for b in batch]}
    streams = [k for k in batch[0] if k not in ("video_id", "labels", "species")]
    length = max(len(b[streams[0]]) for b in batch)
    for s in streams:
        first = batch[0][s]
        padded = first.new_zeros((len(batch), length, *first.shape[1:]))
        for i, b in enumerate(batch):
            padded[i, :len(b[s])] = b[s]
        out[s] = padded
    out["mask"] = torch.tensor([[t < len(b[streams[0]]) for t in range(length)] for b in batch])
    out["labels"] = torch.stack([b["labels"] for b in batch])
    out["species"] = torch.stack([b["species"] for b in batch])
    return out


def export(run: Run, split: str, stream: str, out, fmt: str = "npy") -> Path:
    """One array per video (``<video_id>.npy``, or one ``<stream>.npz`` holding all) and
    ``index.csv`` (video_id, file, rows, labels, species by name). Returns the index."""
    import csv
    out = Path(out)
    if split not in run.splits:
        raise StoreError(f"{run.path}: no split {split!r} (splits here: {', '.join(run.splits)})")
    run.shards(split, stream)  # refuses a stream the split has no shards of, before any file
    _clear_export(out)
    out.mkdir(parents=True, exist_ok=True)
    by_id = {r["video_id"]: r for r in run.samples(split)}
    index, arrays = [], {}
    for vid, data in run.arrays(split, stream):
        r = by_id.get(vid, {"label_names": [], "species_names": []})
        name = f"{vid.replace('/', '__')}.npy"
        if fmt == "npy":
            np.save(out / name, data)
        else:
            arrays[vid] = data
        index.append([vid, name if fmt == "npy" else f"{stream}.npz:{vid}", len(data),
                      ";".join(r["label_names"]), ";".join(r["species_names"])])
    if fmt == "npz":
        np.savez(out / f"{stream}.npz", **arrays)
    path = out / "index.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "file", "rows", "labels", "species"])
        w.writerows(index)
    return path


def _clear_export(out: Path) -> None:
    """Make ``out`` ready for an export: new, empty, or an earlier export, whose files (those its
    index.csv names, and the index) are removed so that none of them stays beside the new one."""
    import csv
    if out.exists() and not out.is_dir():
        raise StoreError(f"--out {out} is a file; give a folder to write the export into")
    if not out.is_dir() or not any(out.iterdir()):
        return
    index = out / "index.csv"
    if not index.is_file():
        raise StoreError(f"--out {out} holds files and no earlier export (index.csv); give an "
                         f"empty or new folder")
    with open(index, newline="") as f:
        names = {r["file"].split(":")[0] for r in csv.DictReader(f)}
    for name in names:
        if "/" not in name and name not in ("", ".", ".."):
            (out / name).unlink(missing_ok=True)
    index.unlink()
