"""A head's evaluation scores (``heads/<head>/scores.npz``): one row per video, one column per
class, the probabilities of predictions/<split>.csv in full; the report compares the heads
with them class by class and video by video (:mod:`pipeline.analysis`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..files import replacing


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
