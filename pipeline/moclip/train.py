"""Distillation training of the motion student (stage ``moclip_train``).

Windows of consecutive rows are read from the cached flow and clip shards (only the window,
never the whole video). The plan of every epoch (video order, window starts) is drawn from
``(seed, epoch)``, so an interrupted run resumed from its last epoch checkpoint ends with
exactly the weights of an uninterrupted one.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..annotations import label_targets
from ..compute import compute_precision, precision_context, return_freed_memory
from ..files import replacing
from ..metrics import evaluate_logits
from ..recipes import STUDENT_FLOW_KEYS
from ..store import FeatureReader, StoreError, read_attrs
from ..training import lr_factor, pos_weight as positive_weight
from .model import MotionStudent, distill_loss
from .windows import Windows, centre_plan, collate, epoch_plan

log = logging.getLogger("pipeline")


def loader_workers(cfg: dict, device) -> int:
    """``moclip.num_workers``; null: the job's CPUs less one (at most 8) feeding a GPU, which
    one core cannot keep busy inflating flow windows; none beside a CPU model."""
    if cfg.get("num_workers") is not None:
        return int(cfg["num_workers"])
    from ..devices import job_cpus
    return min(8, job_cpus() - 1) if device.type == "cuda" else 0


def config_hash(cfg: dict, teacher: dict, data: str = "") -> str:
    """What a resume must match: the settings, the teacher and the data (:func:`data_key`)."""
    return hashlib.sha256(json.dumps([cfg, teacher, data], sort_keys=True).encode()).hexdigest()[:16]


def data_key(data: dict) -> str:
    """The training data as a resume sees it: which videos, their targets and row counts, and
    the content of every shard read (its writer's content hash, else its size and mtime)."""
    h = hashlib.sha256()
    for role in ("train_videos", "val_videos"):
        for v in data[role]:
            h.update(f"{role}|{v}|{data['lengths'][v]}|".encode())
            h.update(np.asarray(data["targets"][v]).tobytes())
    for reader in (data["clip"], data["flow"]):
        for path in reader.paths:
            attrs = read_attrs(path)
            st = path.stat()
            h.update(str(attrs.get("content_sha256") or f"{st.st_size}:{st.st_mtime_ns}").encode())
    return h.hexdigest()


def save(obj, path: Path) -> None:
    with replacing(path) as partial:
        torch.save(obj, partial)


def build_student(clip_model: str, pretrained, flow_attrs: dict, n_classes: int, cfg: dict,
                  skeleton: bool = False):
    """The student, its image tower initialised from the teacher's weights; ``skeleton``: with
    random weights, for a student whose trained weights are loaded right after."""
    from ..factory import load_clip, preprocess_cfg
    teacher = load_clip(clip_model, None if skeleton else pretrained, "cpu", quiet=skeleton)
    pcfg = preprocess_cfg(teacher)
    visual = copy.deepcopy(teacher.visual)
    del teacher
    return MotionStudent(visual, n_classes, pcfg["size"], pcfg["mean"], pcfg["std"],
                         flow_attrs["bound"], cfg["train_blocks"], cfg["adapter_alpha"],
                         cfg.get("flow_norm", "bound"), cfg.get("classifier", "linear"),
                         cfg.get("adapter", "default"),
                         floor=(flow_attrs["size"] / flow_attrs["work_size"]
                                if cfg.get("flow_norm") == "per_frame_work" else 1.0))


def load_targets(samples: list[dict], n_classes: int, multilabel: bool) -> dict:
    """Video id -> its training target (:func:`pipeline.annotations.label_targets`)."""
    targets = label_targets([r["labels"] for r in samples], n_classes, multilabel)
    return {r["video_id"]: y for r, y in zip(samples, targets)}


def optimiser(student, cfg: dict, steps_per_epoch: int):
    """AdamW over the trainable tower (``lr``) and the adapter and classifier (``head_lr``), and
    the schedule of each group."""
    tower = [p for p in student.visual.parameters() if p.requires_grad]
    heads = list(student.adapter.parameters()) + list(student.classifier.parameters())
    groups = [{"params": heads, "lr": cfg["head_lr"]}]
    if tower:
        groups.insert(0, {"params": tower, "lr": cfg["lr"]})
    opt = torch.optim.AdamW(groups, weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, [
        (lambda step, lr=g["lr"]: lr_factor(step, steps_per_epoch, cfg["epochs"], cfg["schedule"],
                                            min(cfg["warmup_epochs"], cfg["epochs"]), cfg["min_lr"] / lr))
        for g in groups])
    return opt, sched


def resume(last: Path, chash: str, student, opt, sched, device, epochs: int):
    """(history, best, first epoch to run) from the last epoch checkpoint when it was made with
    the same settings and data (``chash``), else a fresh start."""
    if last.exists():
        ckpt = torch.load(last, map_location=device, weights_only=False)
        if ckpt.get("config_hash") == chash:
            student.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            log.info("resuming from %s: epoch %d of %d done", last, ckpt["epoch"] + 1, epochs)
            return ckpt["history"], ckpt["best"], ckpt["epoch"] + 1
        log.info("not resuming from %s: it was trained with other settings, features or "
                 "labels; training from the start", last)
    return [], {"score": None, "epoch": None}, 0


def selection_score(row: dict, select_by: str) -> float:
    """Higher is better: the validation figure ``select_by`` names, or minus the training
    distillation loss without a validation split."""
    score = {"val_mAP": row["val_mAP"], "val_micro": row["val_micro"],
             "val_distill": None if row["val_distill_loss"] is None else -row["val_distill_loss"],
             "val_loss": None if row["val_loss"] is None else -row["val_loss"]}[select_by]
    return -row["distill_loss"] if score is None else score


def train_student(data: dict, cfg: dict, clip_cfg: dict, out_dir: str | Path, device,
                  progress: bool = True) -> dict:
    """``data``: train/val readers and targets (see :func:`open_data`). Writes student.pt,
    train_log.csv, train_log.png under ``out_dir``; checkpoints under out_dir/checkpoints."""
    from tqdm import tqdm
    return_freed_memory()
    out_dir = Path(out_dir)
    (out_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    teacher_id = {"model": data["clip_attrs"]["model"], "weights": data["clip_attrs"]["weights"]}
    flow_attrs = {k: data["flow_attrs"].get(k) for k in STUDENT_FLOW_KEYS}
    chash = config_hash(cfg, {**teacher_id, **flow_attrs}, data_key(data))
    multilabel, n_classes = data["multilabel"], data["n_classes"]
    precision = compute_precision(cfg.get("precision", "auto"), device, "bfloat16")
    log.info("moclip: training in %s on %s", precision, device.type)

    torch.manual_seed(cfg["seed"])
    tower = cfg.get("model") or clip_cfg["model"]  # ViMoCLIP: a ViT-B-32 student whatever the teacher
    student = _student(tower, cfg, clip_cfg, flow_attrs, n_classes, data["clip"].row_shape[0], device)
    train_videos, val_videos = data["train_videos"], data["val_videos"]
    n_windows = len(epoch_plan(train_videos, data["lengths"], cfg["seq_len"], cfg["seed"], 0, cfg["epoch"],
                               cfg.get("window_stride")))
    steps_per_epoch = math.ceil(math.ceil(n_windows / cfg["batch_size"]) / cfg["accumulate"])
    opt, sched = optimiser(student, cfg, steps_per_epoch)
    pos_weight = positive_weight(np.stack([data["targets"][v] for v in train_videos]), cfg["pos_weight"],
                                 cfg["pos_weight_max"], device) if multilabel else None
    last, best_path = out_dir / "checkpoints" / "last.pt", out_dir / "checkpoints" / "best.pt"
    history, best, start_epoch = resume(last, chash, student, opt, sched, device, cfg["epochs"])

    lengths = data["lengths"]
    loader = _loader(data, cfg, device)
    losses = _losses(student, cfg, precision, multilabel, pos_weight, device)
    from ..tracking import tracker
    curves = tracker(out_dir / "tensorboard", "student")
    for row in history:  # a resumed training: the epochs before it, then each new one
        curves(row)
    for epoch in range(start_epoch, cfg["epochs"]):
        student.train()
        plan = epoch_plan(train_videos, lengths, cfg["seq_len"], cfg["seed"], epoch, cfg["epoch"],
                          cfg.get("window_stride"))
        bar = tqdm(loader(plan), desc=f"moclip epoch {epoch + 1}/{cfg['epochs']}", disable=not progress,
                   leave=False)
        row = {"epoch": epoch + 1, **train_epoch(student, bar, losses, opt, sched, cfg),
               "lr": opt.param_groups[0]["lr"]}
        row.update(validate(student, loader, losses, val_videos, lengths, cfg, data))
        history.append(row)
        curves(row)
        best = _keep(student, opt, sched, row, history, best, cfg, epoch, chash, best_path, last)
        log.info("epoch %d: distill %.4f, cls %.4f, val distill %s, val mAP %s", epoch + 1,
                 row["distill_loss"], row["cls_loss"], _fmt(row["val_distill_loss"]),
                 _fmt(row["val_mAP"]))

    meta = {"teacher": teacher_id, "flow": flow_attrs, "clip_model": tower,
            "n_classes": n_classes, "multilabel": multilabel, "config": cfg,
            "best_epoch": best["epoch"], "config_hash": chash,
            "device_type": device.type, "precision": precision,
            "input_size": student.input_size, "embed_dim": student.visual.output_dim}
    _publish(best_path, meta, clip_cfg, history, out_dir)
    curves.close()
    return {"history": history, "best_epoch": best["epoch"]}


def _loader(data, cfg, device):
    """Windows ``(video, first row)`` -> a DataLoader of padded batches."""
    def loader(items):
        ds = Windows(items, data["flow"], data["clip"], data["targets"], cfg["seq_len"])
        return DataLoader(ds, batch_size=cfg["batch_size"], shuffle=False,
                          num_workers=loader_workers(cfg, device), pin_memory=device.type == "cuda",
                          collate_fn=lambda b: collate(b, cfg["seq_len"], cfg.get("padding", "mask")),
                          persistent_workers=False)
    return loader


def _student(tower, cfg, clip_cfg, flow_attrs, n_classes, teacher_dim, device):
    """The student on ``device``, its tower checked to embed in the teacher's size."""
    student = build_student(tower, cfg.get("pretrained") or clip_cfg["pretrained"], flow_attrs,
                            n_classes, cfg).to(device)
    if student.visual.output_dim != teacher_dim:
        raise ValueError(f"moclip.model {tower!r} embeds in {student.visual.output_dim} dimensions, "
                         f"the teacher ({clip_cfg['model']}) in {teacher_dim}: distillation needs "
                         f"one size; choose a tower of the teacher's embedding size")
    return student


def _losses(student, cfg, precision, multilabel, pos_weight, device):
    """A batch -> (distillation loss, classification loss, logits)."""
    def losses(batch):
        flow, teacher, mask, targets = (x.to(device, non_blocking=True) for x in batch)
        with precision_context(precision, device):
            emb, adapted, logits = student(flow, mask)
        d = distill_loss(adapted, teacher, mask, cfg["distill"])
        if multilabel:
            c = F.binary_cross_entropy_with_logits(logits.float(), targets, pos_weight=pos_weight)
        else:
            c = F.cross_entropy(logits.float(), targets)
        return d, c, logits.float()
    return losses


def _keep(student, opt, sched, row, history, best, cfg, epoch, chash, best_path, last) -> dict:
    """After an epoch: the kept epoch's weights if it is the best so far, and the last epoch's
    checkpoint (what a resumed training starts from)."""
    score = selection_score(row, cfg["select_by"])
    if best["score"] is None or score > best["score"]:
        best = {"score": score, "epoch": epoch + 1}
        save(student.state_dict(), best_path)
    save({"model": student.state_dict(), "optimizer": opt.state_dict(),
          "scheduler": sched.state_dict(), "history": history, "best": best,
          "epoch": epoch, "config_hash": chash}, last)
    return best


def _publish(best_path, meta, clip_cfg, history, out_dir) -> None:
    """student.pt (the kept epoch's weights and what made them), its log and plot."""
    state = torch.load(best_path, map_location="cpu", weights_only=True)
    save({"state_dict": state, "meta": meta, "clip_pretrained": clip_cfg["pretrained"]},
         out_dir / "student.pt")
    write_log(history, out_dir / "train_log.csv")
    plot_log(history, out_dir / "train_log.png")


def train_epoch(student, batches, losses, opt, sched, cfg: dict) -> dict:
    """One pass over ``batches`` (gradients accumulated over ``accumulate`` batches, clipped);
    the mean distillation and classification losses."""
    sums, n_batches = [0.0, 0.0], 0
    opt.zero_grad(set_to_none=True)
    for i, batch in enumerate(batches):
        d, c, _ = losses(batch)
        ((d + cfg["cls_weight"] * c) / cfg["accumulate"]).backward()
        if (i + 1) % cfg["accumulate"] == 0 or i + 1 == len(batches):
            if cfg["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(student.parameters(), cfg["grad_clip"])
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        sums[0] += d.item()
        sums[1] += c.item()
        n_batches += 1
    return {"distill_loss": sums[0] / n_batches, "cls_loss": sums[1] / n_batches}


def _fmt(v):
    return "-" if v is None else f"{v:.4f}"


@torch.no_grad()
def validate(student, loader, losses, videos, lengths, cfg, data) -> dict:
    if not videos:
        return {"val_distill_loss": None, "val_loss": None, "val_mAP": None, "val_micro": None}
    student.eval()
    d_sum, c_sum, n, scores, targets = 0.0, 0.0, 0, [], []
    plan = (sorted(epoch_plan(videos, lengths, cfg["seq_len"], 0, 0, "all_windows", cfg.get("window_stride")))
            if cfg.get("val_windows") == "all" else centre_plan(videos, lengths, cfg["seq_len"]))
    for batch in loader(plan):
        d, c, logits = losses(batch)
        d_sum += d.item()
        c_sum += c.item()
        n += 1
        scores.append(logits.double().cpu().numpy())
        targets.append(batch[3].numpy())
    m = evaluate_logits(np.concatenate(scores), np.concatenate(targets), multilabel=data["multilabel"])
    return {"val_distill_loss": d_sum / n, "val_loss": (d_sum + cfg["cls_weight"] * c_sum) / n,
            "val_mAP": m["mAP"], "val_micro": m.get("mAP_micro", m.get("top1"))}


def write_log(history: list[dict], path: Path) -> None:
    keys = ["epoch", "distill_loss", "cls_loss", "val_distill_loss", "val_loss", "val_mAP",
            "val_micro", "lr"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(history)


def plot_log(history: list[dict], path: Path) -> None:
    from ..plots import pyplot
    plt = pyplot()
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(ep, [h["distill_loss"] for h in history], label="distillation (train)")
    a.plot(ep, [h["cls_loss"] for h in history], label="classification (train)")
    if history and history[0]["val_distill_loss"] is not None:
        a.plot(ep, [h["val_distill_loss"] for h in history], "--", label="distillation (val)")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend(fontsize=8)
    if history and history[0]["val_mAP"] is not None:
        b.plot(ep, [h["val_mAP"] for h in history], "o-")
    b.set_xlabel("epoch"), b.set_ylabel("val macro mAP"), b.set_ylim(0, 1)
    fig.suptitle("MoCLIP student training")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def open_data(clip_train, flow_train, clip_val, flow_val, samples: list[dict], n_classes: int,
              multilabel: bool, clip_cfg: dict) -> dict:
    """Readers over the cached shards, opened once and checked once: made by the configured
    teacher, one flow setting throughout, and flow rows aligned with clip rows per video."""
    from ..factory import weights_identity
    clip = FeatureReader(list(clip_train) + list(clip_val), kind="clip")
    teacher = {"model": clip.attrs["model"], "weights": clip.attrs["weights"]}
    want = {"model": clip_cfg["model"], "weights": weights_identity(clip_cfg["pretrained"])}
    if teacher != want:
        raise StoreError(f"the clip features were made by {teacher}, but the student would be "
                         f"initialised from {want} (clip: in config); re-extract or fix the config")
    clip.require(teacher)
    flow = FeatureReader(list(flow_train) + list(flow_val), kind="flow")
    flow.require({k: flow.attrs.get(k) for k in STUDENT_FLOW_KEYS})
    by_id = {r["video_id"]: r for r in samples}
    train_ids, val_ids = clip.videos_in(clip_train), clip.videos_in(clip_val)
    ok = [v for v in clip.video_ids if v in flow and v in by_id and by_id[v]["labels"]]
    for v in ok:
        if not np.array_equal(flow.frame_index(v), clip.frame_index(v)):
            raise StoreError(f"flow and clip rows of {v!r} describe different frames; "
                             f"re-extract both from the same probe table")
    return {"clip": clip, "flow": flow, "clip_attrs": clip.attrs, "flow_attrs": flow.attrs,
            "train_videos": sorted(v for v in ok if v in train_ids),
            "val_videos": sorted(v for v in ok if v in val_ids),
            "lengths": {v: clip.n_rows(v) for v in ok},
            "targets": load_targets([by_id[v] for v in ok], n_classes, multilabel),
            "multilabel": multilabel, "n_classes": n_classes}
