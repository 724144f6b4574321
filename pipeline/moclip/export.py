"""Export of per-frame motion embeddings (stage ``moclip_export``) and the linear probe that
checks them against the CLIP frame embeddings (stage ``moclip_linear_probe``)."""
from __future__ import annotations

import logging

import time

import numpy as np
import torch

from ..store import FeatureReader, FeatureWriter, StoreError
from ..recipes import STUDENT_FLOW_KEYS, differs
from .train import build_student

log = logging.getLogger("pipeline")


def load_student(path, device):
    """The trained student and its meta (the teacher's weights are not read: the student's
    own replace them all)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    meta = ckpt["meta"]
    student = build_student(meta["clip_model"], None, meta["flow"], meta["n_classes"], meta["config"],
                            skeleton=True)
    student.load_state_dict(ckpt["state_dict"])
    return student.eval().to(device), meta


def save_flow_clip(clip_cfg: dict, moclip_cfg: dict, flow_shard, out) -> dict:
    """The frozen CLIP as a student never trained: its image tower on the flow colour images
    (moclip.flow_norm), the adapter an identity. Its export is AnimalMotionCLIP's flow input
    (frozen CLIP embeddings of flow images) on the cached flow, a stream beside the student's."""
    from ..factory import weights_identity
    from ..files import replacing
    from ..store import read_attrs
    flow_attrs = {k: read_attrs(flow_shard).get(k) for k in STUDENT_FLOW_KEYS}
    cfg = {**moclip_cfg, "export": "before_adapter"}
    student = build_student(clip_cfg["model"], clip_cfg["pretrained"], flow_attrs, 1, cfg)
    meta = {"teacher": {"model": clip_cfg["model"], "weights": weights_identity(clip_cfg["pretrained"])},
            "flow": flow_attrs, "clip_model": clip_cfg["model"], "n_classes": 1, "multilabel": True,
            "config": cfg, "best_epoch": 0, "config_hash": "frozen", "frozen": True,
            "input_size": student.input_size, "embed_dim": student.visual.output_dim}
    with replacing(out) as partial:
        torch.save({"state_dict": student.state_dict(), "meta": meta,
                    "clip_pretrained": clip_cfg["pretrained"]}, partial)
    return meta


def export_motion(student_path, flow_shard, out, device, after_adapter: bool | None = None,
                  batch_rows: int = 256, dtype=np.float16) -> dict:
    """Motion embeddings of every row of a flow shard; ``after_adapter`` None: the student's
    own setting (moclip.export)."""
    student, meta = load_student(student_path, device)
    if after_adapter is None:
        after_adapter = meta["config"]["export"] == "after_adapter"
    flow = FeatureReader([flow_shard], kind="flow")
    got = {k: flow.attrs.get(k) for k in STUDENT_FLOW_KEYS}
    if why := differs(got, {k: meta["flow"].get(k) for k in STUDENT_FLOW_KEYS}, "the student was trained on"):
        raise StoreError(f"{flow_shard}: flow {why}; re-run moclip_train")
    from ..compute import batched, compute_precision, precision_context, prefetch
    # the student's own precision (moclip.precision: a float32 student exports in float32, as
    # ViMoCLIP's); auto: float16 on a GPU, as every frozen model's rows
    precision = compute_precision(meta["config"].get("precision", "auto"), device)
    attrs = {"device_type": device.type, "precision": precision,
             "model": f"{'clip-on-flow' if meta.get('frozen') else 'moclip'}:{meta['clip_model']}",
             "teacher": meta["teacher"],
             "student": meta["config_hash"], "embedding": "after adapter" if after_adapter
             else "before adapter", "flow": meta["flow"], "embed_dim": meta["embed_dim"]}
    from ..features.clip import batch_size_for

    @torch.inference_mode()
    def embed(x):
        with precision_context(precision, device):
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


def linear_probe_report(clip_train, clip_eval, motion_train, motion_eval, samples: list[dict],
                 n_classes: int, multilabel: bool) -> dict:
    """Stage ``moclip_linear_probe``: the linear probe on time-pooled CLIP frame and MoCLIP motion
    embeddings, trained on one split's shards and scored on another's."""
    from ..annotations import label_targets
    by_id = {r["video_id"]: r for r in samples}
    result = {"metric": "macro mAP" if multilabel else "top-1"}
    for name, train, evals in (("clip", clip_train, clip_eval), ("motion", motion_train, motion_eval)):
        tr, ev = FeatureReader(train), FeatureReader(evals)
        tv = [v for v in tr.video_ids if v in by_id]
        evv = [v for v in ev.video_ids if v in by_id]
        if not tv or not evv:
            missing = "training" if not tv else "evaluation"
            why = f"no readable video in the {missing} split (see its probe tables)"
            log.warning("moclip probe: %s; no linear probe", why)
            return {**result, "clip": None, "motion": None, "n_train": len(tv), "n_eval": len(evv),
                    "no_metrics": why}
        y = (lambda videos: label_targets([by_id[v]["labels"] for v in videos], n_classes, multilabel))
        result[name] = linear_probe(pooled(tr, tv), y(tv), pooled(ev, evv), y(evv), multilabel)
    result["n_train"], result["n_eval"] = len(tv), len(evv)
    return result
