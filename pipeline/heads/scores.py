"""What a head writes of its evaluation: ``predictions/<split>.csv`` (each video's top classes)
and ``scores.npz`` (one row per video, one column per class, the probabilities in full), with
which the report compares the heads class by class and video by video (:mod:`pipeline.analysis`)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..files import replacing


def write_predictions(path, video_ids, scores, targets, class_names, multilabel: bool, k: int = 5):
    """Top-``k`` classes and scores per video. Scores are written in full (shortest round-trip
    form): rounding to a few decimals would tie scores that rank differently."""
    k = min(k, scores.shape[1])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    top = np.argsort(-scores, axis=1)[:, :k]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "labels"] + [x for i in range(1, k + 1) for x in (f"top{i}", f"score{i}")])
        for vid, s, t, y in zip(video_ids, scores, top, targets):
            truth = [class_names[c] for c in (np.flatnonzero(y) if multilabel else [int(y)])]
            w.writerow([vid, ";".join(truth)] + [x for c in t for x in (class_names[c], repr(float(s[c])))])


def write_scores(path, video_ids, probabilities, targets, class_names, multilabel: bool,
                 motion: bool) -> None:
    """A head's evaluation scores for the report: one row per video, one column per class."""
    with replacing(path) as partial, open(partial, "wb") as f:
        np.savez_compressed(f, video_ids=np.array(video_ids, dtype=str),
                            scores=np.asarray(probabilities, np.float32), targets=np.asarray(targets),
                            class_names=np.array(class_names, dtype=str), multilabel=multilabel,
                            motion=motion)


def read_scores(paths) -> dict:
    """head name (the file's folder) -> its scores, for heads that evaluated some videos."""
    out = {}
    for path in paths:
        with np.load(path) as z:
            if len(z["video_ids"]):
                onehot = z["targets"] if z["targets"].ndim == 2 else \
                    np.eye(len(z["class_names"]), dtype=np.float32)[z["targets"]]
                out[Path(path).parent.name] = {
                    "video_ids": list(z["video_ids"]), "scores": z["scores"].astype(np.float64),
                    "onehot": onehot.astype(bool), "class_names": list(z["class_names"]),
                    "multilabel": bool(z["multilabel"]), "motion": bool(z["motion"])}
    return out
