"""Export of per-frame motion embeddings (stage ``moclip_export``) and the linear probe that
checks them against the CLIP frame embeddings (stage ``moclip_probe``)."""
from __future__ import annotations

import logging
from pathlib import Path

import time

import numpy as np
import torch

from ..store import FeatureReader, FeatureWriter, StoreError
from .train import FLOW_KEYS, build_student

log = logging.getLogger("pipeline")


def load_student(path, device, workdir=None):
    """The student and its meta. ``workdir``: where the run's relative paths (a local CLIP
    checkpoint named in the config) are resolved when not found from here."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    meta = ckpt["meta"]
    student = build_student(meta["clip_model"], local_path(ckpt["clip_pretrained"], workdir),
                            meta["flow"], meta["n_classes"], meta["config"])
    student.load_state_dict(ckpt["state_dict"])
    return student.eval().to(device), meta


def local_path(path, workdir=None):
    """``path`` as given, or relative to ``workdir`` where a relative path is found there."""
    if path and workdir is not None and not Path(path).is_absolute() and (Path(workdir) / path).exists():
        return str(Path(workdir) / path)
    return path


def export_motion(student_path, flow_shard, out, device, after_adapter: bool = False,
                  batch_rows: int = 256, dtype=np.float16, workdir=None) -> dict:
    student, meta = load_student(student_path, device, workdir)
    flow = FeatureReader([flow_shard], kind="flow")
    got = {k: flow.attrs.get(k) for k in FLOW_KEYS}
    if got != meta["flow"]:
        diff = {k: (got[k], meta["flow"][k]) for k in FLOW_KEYS if got[k] != meta["flow"][k]}
        raise StoreError(f"{flow_shard}: flow made with other settings than the student was "
                         f"trained on (here vs student): {diff}; re-run moclip_train")
    attrs = {"model": f"moclip:{meta['clip_model']}", "teacher": meta["teacher"],
             "student": meta["config_hash"], "embedding": "after adapter" if after_adapter
             else "before adapter", "flow": meta["flow"], "embed_dim": meta["embed_dim"]}
    from ..features.clip import batch_size_for
    from ..features.common import autocast, batched, prefetch

    @torch.inference_mode()
    def embed(x):
        with autocast(device):
            e = student.embed(x)
            return student.adapter(e) if after_adapter else e

    def segments():  # rows of many videos share a batch
        for rows in prefetch(flow):
            yield rows, torch.from_numpy(rows.data).to(device, non_blocking=True)

    n_rows, start = 0, time.perf_counter()  # throughput, not model loading
    with FeatureWriter(out, "motion", (meta["embed_dim"],), dtype, attrs) as w:
        for rows, emb in batched(segments(), embed, batch_size_for(batch_rows, device)):
            w.add(rows.video_id, rows.frame_index, rows.timestamps, emb.astype(dtype))
            n_rows += rows.data.shape[0]
    return {"videos": len(flow), "rows": n_rows, "seconds": time.perf_counter() - start}


def pooled(reader: FeatureReader, videos) -> np.ndarray:
    return np.stack([reader.video(v).data.astype(np.float32).mean(0) for v in videos])


def linear_probe(train_x, train_y, test_x, test_y, multilabel: bool, seed: int = 0) -> float:
    """Macro mAP (multi-label) or top-1 (single-label) of a logistic regression on standardised
    time-pooled embeddings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..metrics import evaluate, evaluate_logits
    clf = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
    if multilabel:
        keep = (train_y.sum(0) > 0) & (train_y.sum(0) < len(train_y))
        model = make_pipeline(StandardScaler(), OneVsRestClassifier(clf))
        model.fit(train_x, train_y[:, keep])
        logits = np.zeros(test_y.shape)  # classes without a classifier tie at the bottom
        logits[:, keep] = model.decision_function(test_x).reshape(len(test_x), -1)
        logits[:, ~keep] = logits[:, keep].min() - 1 if keep.any() else 0.0
        return evaluate_logits(logits, test_y, multilabel=True)["mAP"]
    model = make_pipeline(StandardScaler(), clf).fit(train_x, train_y)
    scores = np.zeros((len(test_x), int(max(train_y.max(), test_y.max())) + 1))
    scores[:, model.classes_] = model.predict_proba(test_x)
    return evaluate(scores, test_y, multilabel=False)["top1"]
