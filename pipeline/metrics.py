"""Evaluation metrics (the definitions every report and paper comparison uses).

* ``mAP``: macro mean of per-class average precision, classes without a positive in the split
  left out (the Animal Kingdom benchmark's definition).
* ``mAP_micro``: average precision over all (video, class) pairs flattened (what ViMoCLIP reports).
* ``mAP_<segment>``: macro mAP restricted to the classes of one segment (head / middle / tail).
* ``top1_<segment>``, ``top5_<segment>`` (single-label sets): top-1 / top-5 over the videos
  whose class is in the segment (Animal-CLIP's ``lt_acc``).
* single-label sets: ``top1``, ``top5`` and ``mean_class_accuracy``. A tie with the true
  class gives the expected share of a hit under a random tie-break, never a free hit: a model
  that scores all C classes equally gets top-1 = 1/C.

Average precision is the step-wise area of scikit-learn's ``average_precision_score``
(ties in score are resolved as one threshold), computed here in NumPy so the per-class loop
over 140 classes costs nothing.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["average_precision", "evaluate", "evaluate_logits", "probabilities"]


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """AP of one ranking; None when there is no positive (AP is undefined then)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positives = np.asarray(positives).ravel().astype(bool)
    n_pos = int(positives.sum())
    if n_pos == 0:
        return None
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], positives[order]
    # One threshold per distinct score: tied items enter the ranking together.
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    recall_gain = np.diff(np.r_[0.0, recall])
    return float(np.sum(recall_gain * precision))


def _multilabel(scores: np.ndarray, labels: np.ndarray, segments) -> dict:
    if labels.shape != scores.shape:
        raise ValueError(f"labels have shape {labels.shape}, scores {scores.shape}: "
                         "multi-label evaluation needs one 0/1 column per class")
    per_class = [average_precision(scores[:, c], labels[:, c]) for c in range(scores.shape[1])]
    defined = [ap for ap in per_class if ap is not None]
    out = {
        "mAP": float(np.mean(defined)) if defined else None,
        "mAP_micro": average_precision(scores.ravel(), labels.ravel()),
        "per_class_ap": per_class,
        "n_classes_evaluated": len(defined),
    }
    if segments is not None:
        if len(segments) != scores.shape[1]:
            raise ValueError(f"{len(segments)} segment names for {scores.shape[1]} classes")
        for name in dict.fromkeys(segments):  # first-seen order, unique
            aps = [ap for ap, seg in zip(per_class, segments) if seg == name and ap is not None]
            out[f"mAP_{name}"] = float(np.mean(aps)) if aps else None
    return out


def topk_hit(above: np.ndarray, tied: np.ndarray, k: int) -> np.ndarray:
    """Probability that the true class is in the top ``k`` when ``above`` classes score higher
    and ``tied`` others score the same, ties broken uniformly at random."""
    return np.clip((k - above) / (tied + 1.0), 0.0, 1.0)


def _singlelabel(scores: np.ndarray, labels: np.ndarray) -> dict:
    labels = labels.astype(np.int64).ravel()
    n, c = scores.shape
    if labels.shape[0] != n:
        raise ValueError(f"{labels.shape[0]} labels for {n} score rows")
    if labels.size and (labels.min() < 0 or labels.max() >= c):
        raise ValueError(f"class ids must lie in [0, {c}); got {labels.min()}..{labels.max()}")
    true_scores = scores[np.arange(n), labels][:, None]
    above = (scores > true_scores).sum(axis=1)
    tied = (scores == true_scores).sum(axis=1) - 1  # other classes tied with the truth
    top1_hit = topk_hit(above, tied, 1)
    present = np.unique(labels)
    per_class_acc = [float(top1_hit[labels == k].mean()) for k in present]
    per_class = [average_precision(scores[:, k], labels == k) for k in range(c)]
    defined = [ap for ap in per_class if ap is not None]
    return {
        "top1": float(top1_hit.mean()),
        "top5": float(topk_hit(above, tied, min(5, c)).mean()),
        "mean_class_accuracy": float(np.mean(per_class_acc)),
        "mAP": float(np.mean(defined)) if defined else None,
        "per_class_ap": per_class,
    }


def evaluate(scores, labels, multilabel: bool = True, segments: Sequence[str] | None = None) -> dict:
    """Metrics for ``scores`` (N, C) against ``labels``.

    ``labels`` is (N, C) of 0/1 when ``multilabel`` else (N,) class ids. ``segments`` gives a
    segment name per class (e.g. head/middle/tail) and adds ``mAP_<segment>`` keys. All values
    are fractions in [0, 1]; a metric that is undefined on the data (no positive at all) is None.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, C); got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinity")
    if multilabel:
        return _multilabel(scores, labels, segments)
    out = _singlelabel(scores, labels)
    if segments is not None:
        onehot = np.eye(scores.shape[1], dtype=np.int64)[labels.astype(np.int64).ravel()]
        out.update({k: v for k, v in _multilabel(scores, onehot, segments).items()
                    if k.startswith("mAP_") and k != "mAP_micro"})
        out.update(segment_accuracy(scores, labels, segments))
    return out


def segment_accuracy(scores: np.ndarray, labels: np.ndarray, segments: Sequence[str]) -> dict:
    """``top1_<segment>`` and ``top5_<segment>``: the hit rates over the videos whose class lies
    in each segment (None for a segment without a video), ties counted as in ``top1``."""
    labels = labels.astype(np.int64).ravel()
    n, c = scores.shape
    true_scores = scores[np.arange(n), labels][:, None]
    above = (scores > true_scores).sum(axis=1)
    tied = (scores == true_scores).sum(axis=1) - 1
    of_video = np.asarray(segments, dtype=object)[labels]
    out = {}
    for name in dict.fromkeys(segments):
        these = of_video == name
        for k in (1, 5):
            out[f"top{k}_{name}"] = float(topk_hit(above[these], tied[these], min(k, c)).mean()) \
                if these.any() else None
    return out


def probabilities(logits, multilabel: bool) -> np.ndarray:
    """Scores from logits, in float64: a sigmoid per class for multi-label sets, a softmax over
    classes otherwise. float32 would round every logit above about 17 to exactly 1.0 (and a
    softmax gap above about 100 to exactly 0.0), tying scores that the logits tell apart."""
    x = np.asarray(logits, dtype=np.float64)
    if multilabel:
        return np.exp(-np.logaddexp(0.0, -x))
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def evaluate_logits(logits, labels, multilabel: bool = True,
                    segments: Sequence[str] | None = None) -> dict:
    """:func:`evaluate` of a model's logits. Multi-label metrics rank each class (and all pairs)
    by score, and a sigmoid keeps that order, so they are computed on the logits themselves and
    no saturation can tie them; single-label metrics on the float64 softmax."""
    logits = np.asarray(logits, dtype=np.float64)
    return evaluate(logits if multilabel else probabilities(logits, False), labels,
                    multilabel=multilabel, segments=segments)


def species_top1(scores, species) -> dict:
    """Top-1 species accuracy: a hit when the best-scored species is one of the video's
    annotated species (videos without a known species are left out); a tie at the top gives the
    share of tied species that are right. ``chance`` is the same accuracy for uniform scores."""
    scores = np.asarray(scores, dtype=np.float64)
    species = np.asarray(species) > 0
    known = species.any(1)
    if not known.any():
        return {"top1": None, "chance": None, "n_videos": 0}
    s, y = scores[known], species[known]
    top = s == s.max(1, keepdims=True)
    hit = (top & y).sum(1) / top.sum(1)
    return {"top1": float(hit.mean()), "chance": float((y.sum(1) / y.shape[1]).mean()),
            "n_videos": int(known.sum())}
