"""Heads trained on cached features: TFAM fusion, interleaved frames+motion, single-stream
baselines and linear probes (``models``), one trainer (``trainer``), and :func:`run_head`, the
stage that trains one head and writes its checkpoint, predictions, metrics and plots."""
from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..metrics import evaluate
from .data import load_split
from .models import HEADS
from .trainer import head_params, predict, train_head

log = logging.getLogger("pipeline")
__all__ = ["HEADS", "run_head", "load_head"]


def run_head(name: str, given: dict, shards: dict, samples: list[dict], classes: list[dict],
             multilabel: bool, out: str | Path, device, splits: dict) -> dict:
    """``shards``: {(kind, role): [paths]} with kind clip/motion and role train/val/eval;
    ``splits``: {role: split name}."""
    from ..report import plot_per_class_ap, plot_pr_curves, plot_training, write_predictions
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    params = head_params(name, given)
    _, need_rgb, need_motion, _ = HEADS[name]
    by_id = {r["video_id"]: r for r in samples}
    names = [c["name"] for c in classes]
    segments = [c["segment"] for c in classes] if classes and "segment" in classes[0] else None

    def load(role, expect=None):
        if not shards.get(("clip", role)) and not shards.get(("motion", role)):
            return None
        return load_split(shards.get(("clip", role)), shards.get(("motion", role)), by_id,
                          len(names), multilabel, need_rgb, need_motion, expect)

    train = load("train")
    val = load("val", train.identity)
    model, history = train_head(name, params, train, val, len(names), multilabel, device)
    ckpt = {"state_dict": model.state_dict(), "name": name, "params": params,
            "identity": train.identity, "n_classes": len(names), "class_names": names,
            "multilabel": multilabel,
            "dims": {"rgb": 0 if train.rgb is None else train.rgb.shape[-1],
                     "motion": 0 if train.motion is None else train.motion.shape[-1]}}
    tmp = out / "head.pt.partial"
    torch.save(ckpt, tmp)
    os.replace(tmp, out / "head.pt")
    with open(out / "train_log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", "train_loss", "val_metric", "lr"])
        w.writeheader()
        w.writerows(history)
    plot_training(history, name, out / "training.png")

    result = None
    for role in ("val", "eval"):
        split = val if role == "val" else load("eval", train.identity)
        if split is None:
            continue
        scores = predict(model, split, params, multilabel, device)
        write_predictions(out / "predictions" / f"{splits[role]}.csv", split.video_ids, scores,
                          split.targets, names, multilabel)
        if role == "eval":
            metrics = evaluate(scores, split.targets, multilabel=multilabel, segments=segments)
            metrics.update({"split": splits["eval"], "n_videos": len(split), "head": name})
            (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
            onehot = split.targets if multilabel else np.eye(len(names))[split.targets]
            plot_per_class_ap(metrics, names, segments, out / "per_class_ap.png")
            plot_pr_curves(scores, onehot, metrics, names, out / "pr_curves.png")
            result = metrics
    return result


def load_head(path, device="cpu"):
    from .models import build_head
    from .trainer import model_kwargs
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    model = build_head(ckpt["name"], ckpt["dims"]["rgb"], ckpt["dims"]["motion"], ckpt["n_classes"],
                       model_kwargs(ckpt["params"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval().to(device), ckpt
