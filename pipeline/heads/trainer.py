"""One trainer for every head: padded/masked batches of cached features, AdamW with a cosine
schedule, autocast on GPU, early stopping on the validation metric, best checkpoint kept."""
from __future__ import annotations

import copy
import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..compute import autocast, return_freed_memory
from ..errors import PipelineError
from ..metrics import evaluate_logits
from ..training import lr_factor, pos_weight as positive_weight
from .data import SplitFeatures, batches, eval_plan, plan_batches
from .models import build_head

log = logging.getLogger("pipeline")

def loss_fn(logits, targets, multilabel: bool, params: dict, pos_weight=None):
    """BCE, focal, asymmetric loss (``asl``, Ridnik et al.: easy negatives down-weighted and
    clipped) or a softmax cross-entropy (``ce``, label-smoothed) for multi-label sets;
    label-smoothed cross-entropy otherwise."""
    logits = logits.float()
    if not multilabel:
        return F.cross_entropy(logits, targets, label_smoothing=params["label_smoothing"])
    if params["loss"] in ("ce", "ce_multi_hot"):  # a softmax over classes
        # ce: the video's positives share the target; ce_multi_hot: each positive weighs 1, as
        # torch's CrossEntropyLoss on the multi-hot target (Animal-CLIP's released training)
        share = targets / targets.sum(-1, keepdim=True).clamp(min=1) if params["loss"] == "ce" else targets
        eps = params["label_smoothing"]  # as timm's smoothing of multi-hot targets
        share = (1 - eps) * share + eps / targets.shape[-1]
        return -(share * torch.log_softmax(logits, -1)).sum(-1).mean()
    if params["loss"] == "asl":
        p = torch.sigmoid(logits)
        p_neg = (p - 0.05).clamp(min=0)
        pos = targets * torch.log(p.clamp(min=1e-8))
        neg = (1 - targets) * p_neg ** 4 * torch.log((1 - p_neg).clamp(min=1e-8))
        return -(pos + neg).sum(-1).mean() / targets.shape[-1]
    if params["loss"] == "focal":
        p = torch.sigmoid(logits)
        ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_t = p * targets + (1 - p) * (1 - targets)
        # clamped: (1 - p_t) ** gamma has an infinite gradient at p_t = 1 when gamma < 1
        return (ce * (1 - p_t).clamp(min=1e-6) ** params["focal_gamma"]).mean()
    return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)


def _amp(device):
    return autocast(device, "bfloat16")


def forward(model, rgb, motion, mask, species=None):
    """Prompt heads also take the videos' species (used only by the oracle ablation)."""
    if getattr(model, "takes_species", False):
        return model(rgb, motion, mask, species=species)
    return model(rgb, motion, mask)


@torch.no_grad()
def predict_logits(model, split: SplitFeatures, params: dict, device) -> np.ndarray:
    """Logits (N, C) in float64, centred frame sampling. No autocast here: bfloat16 keeps three
    significant digits, which would tie scores that full precision tells apart. Scores are
    :func:`pipeline.metrics.probabilities` of these."""
    model.eval()
    plan = eval_plan(split, params)
    out = [forward(model, rgb, motion, mask, species).double().cpu().numpy()
           for rgb, motion, mask, _, species in batches(split, params["frames"], plan, None, device)]
    return in_order(out, plan)


def in_order(parts: list[np.ndarray], plan: list[np.ndarray]) -> np.ndarray:
    """Rows of the batches of ``plan`` back in the split's order."""
    stacked = np.concatenate(parts)
    out = np.empty_like(stacked)
    out[np.concatenate(plan)] = stacked
    return out


@torch.no_grad()
def predict_species(model, split: SplitFeatures, params: dict, device) -> np.ndarray:
    """Species logits (N, S) of a head that predicts species (``aux["species_logits"]``)."""
    model.eval()
    plan, out = eval_plan(split, params), []
    for rgb, motion, mask, _, species in batches(split, params["frames"], plan, None, device):
        forward(model, rgb, motion, mask, species)
        out.append(model.aux["species_logits"].double().cpu().numpy())
    return in_order(out, plan)


def ranking_scores(logits, params: dict):
    """What the metrics rank: the logits, or (``eval_scores: softmax``, Animal-CLIP's
    evaluation) a softmax over the classes of each video, whose per-class ranking differs."""
    if params.get("eval_scores", "logits") != "softmax":
        return logits
    x = np.asarray(logits, np.float64)
    return x - np.logaddexp.reduce(x, axis=1, keepdims=True)  # log-softmax: the softmax's order


def main_metric(logits, targets, multilabel, which: str = "macro") -> float:
    """Macro (or ``micro``) mAP for multi-label sets, top-1 otherwise."""
    m = evaluate_logits(logits, targets, multilabel=multilabel)
    if not multilabel:
        return m["top1"]
    return (m["mAP_micro"] if which == "micro" else m["mAP"]) or 0.0


def head_lr_factor(step: int, steps_per_epoch: int, params: dict) -> float:
    """:func:`pipeline.training.lr_factor` with a head's parameters (the schema's ``schedule``)."""
    return lr_factor(step, steps_per_epoch, params["epochs"], params["schedule"],
                  params["warmup_epochs"], params["min_lr"] / params["lr"])


def _built(head, train, n_classes, multilabel, text, class_names):
    """The head, its input statistics set from the training split's."""
    rgb_dim = train.rgb.dim if train.rgb is not None else 0
    motion_dim = train.motion.dim if train.motion is not None else 0
    model = build_head(head, rgb_dim, motion_dim, n_classes, text, multilabel, class_names)
    if head.params.get("species_train") == "oracle":  # Animal-CLIP: trained and tested on the true species
        model.oracle = True
    for stream in ("rgb", "motion"):
        feats = getattr(train, stream)
        if feats is not None:
            model.set_stats(stream, *feats.mean_std())
    return model


def _validated(model, val, params, multilabel, pos_weight, device) -> dict:
    """An epoch's validation metric and loss (None without a validation split)."""
    if val is None:
        return {"val_metric": None, "val_loss": None}
    logits = predict_logits(model, val, params, device)
    # selected on the score the metrics report (a softmax under eval_scores: softmax)
    return {"val_metric": main_metric(ranking_scores(logits, params), val.targets, multilabel,
                                      params["select_by"]),
            "val_loss": float(loss_fn(torch.from_numpy(logits), torch.from_numpy(val.targets), multilabel,
                                      params, None if pos_weight is None else pos_weight.cpu()))}


def decay_groups(model, weight_decay: float, decay_1d: bool) -> list[dict]:
    """The optimiser's parameter groups: every trainable parameter decayed, or (``decay_1d``
    false) 1-D ones and biases exempt, by Animal-CLIP's rule (``len(shape) == 1`` or a name
    ending in ``.bias``)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if decay_1d:
        return [{"params": [p for _, p in named], "weight_decay": weight_decay}]
    exempt = [p.ndim == 1 or n.endswith(".bias") for n, p in named]
    return [{"params": [p for (_, p), e in zip(named, exempt) if not e], "weight_decay": weight_decay},
            {"params": [p for (_, p), e in zip(named, exempt) if e], "weight_decay": 0.0}]


def calibrate(model, train: SplitFeatures, params: dict, device) -> None:
    """The zero-shot head's sigmoid bias, fitted on the training split's logits."""
    from .prompt import fit_bias
    model.bias.fill_(0.0)
    model.bias.fill_(fit_bias(predict_logits(model, train, params, device), train.targets))
    log.info("zero_shot: scores are sigmoid(%.4g * cos %+.4g), the bias fitted on the %d training "
             "videos; they rank exactly as the cosines", float(model.scale), float(model.bias), len(train))


@torch.no_grad()
def init_bias(model, train: SplitFeatures, params: dict, device) -> None:
    """Shared bias of a multi-label prompt head: logit(mean positive rate) minus the mean
    logit on the training set, so sigmoids start unsaturated."""
    model.eval()
    logits = []
    for rgb, motion, mask, _, species in batches(train, params["frames"], eval_plan(train, params), None, device):
        logits.append(forward(model, rgb, motion, mask, species).float().sum())
    rate = float(np.clip(train.targets.mean(), 1e-4, 1 - 1e-4))
    mean = float(torch.stack(logits).sum()) / (len(train) * train.targets.shape[1])
    model.bias.fill_(math.log(rate / (1 - rate)) - mean)


def train_head(head, train: SplitFeatures, val: SplitFeatures | None, n_classes: int,
               multilabel: bool, device, progress: bool = True, text: dict | None = None,
               class_names: list[str] | None = None, on_epoch=None):
    """Returns (best model, history). ``head``: the entry resolved
    (:func:`pipeline.heads.entry.resolve_head`), whose name errors and logs give; ``text``
    (class prototypes, species bank) for the heads that read it; ``on_epoch(row)``: called as
    each epoch ends (a tracker's live curves)."""
    from tqdm import tqdm
    name, params = head.name, head.params
    return_freed_memory()
    torch.manual_seed(params["seed"])
    model = _built(head, train, n_classes, multilabel, text, class_names).to(device)
    if params["epochs"] == 0:
        if multilabel and hasattr(model, "scale"):
            calibrate(model, train, params, device)
        return model.eval(), []
    if multilabel and isinstance(getattr(model, "bias", None), torch.nn.Parameter):
        init_bias(model, train, params, device)
    opt = torch.optim.AdamW(decay_groups(model, params["weight_decay"], params["weight_decay_1d"]),
                            lr=params["lr"], weight_decay=params["weight_decay"],
                            betas=tuple(params["betas"]))
    def plan(epoch):
        rng = np.random.default_rng([params["seed"], epoch])
        return rng, plan_batches(train.lengths, params["frames"], params["batch_size"], params["batch_rows"], rng)

    steps = len(plan(0)[1])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: head_lr_factor(s, steps, params))
    pos_weight = positive_weight(train.targets, params["pos_weight"], device=device) if multilabel else None

    if val is None:
        log.info("head %s: no validation split; the epoch with the lowest training loss is kept "
                 "(no early stopping)", name)
    history, best, best_state, stale = [], -1.0, None, 0
    bar = tqdm(range(params["epochs"]), desc=f"head {name}", disable=not progress)
    for epoch in bar:
        rng, epoch_plan = plan(epoch)
        loss = fit_epoch(model, batches(train, params["frames"], epoch_plan, rng, device), opt, sched,
                         params, multilabel, pos_weight, device, where=(name, epoch + 1, n_classes))
        row = {"epoch": epoch + 1, "train_loss": loss, "lr": opt.param_groups[0]["lr"],
               **_validated(model, val, params, multilabel, pos_weight, device)}
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if val is None:
            score = -row["train_loss"]
        else:
            score = -row["val_loss"] if params["select_by"] == "val_loss" else row["val_metric"]
        if best_state is None or score > best:
            best, best_state, stale = score, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=row["val_metric"])
        if val is not None and stale >= params["patience"]:
            log.info("head %s: early stop after epoch %d (no gain for %d epochs)", name, epoch + 1, stale)
            break
    model.load_state_dict(best_state)
    return model, history


class HeadOutputError(PipelineError, ValueError):
    """A head's logits that training cannot use: the wrong shape, or not finite."""


def check_logits(logits, batch: int, where: tuple) -> None:
    """Stop training at the first batch whose logits are not (videos, classes) or not finite,
    naming the entry and the epoch (a user's head is checked here, not in the metrics)."""
    name, epoch, n_classes = where
    if logits.ndim != 2 or tuple(logits.shape) != (batch, n_classes):
        raise HeadOutputError(f"heads.{name}: forward returned logits of shape {tuple(logits.shape)} "
                              f"in epoch {epoch}; it must return (videos, classes) = ({batch}, "
                              f"{n_classes}) (docs/heads.md)")
    if not torch.isfinite(logits).all():
        raise HeadOutputError(f"heads.{name}: NaN or infinite logits in epoch {epoch}; lower its lr, "
                              f"or check its forward for a division by zero or a log of 0")


def fit_epoch(model, batches, opt, sched, params: dict, multilabel: bool, pos_weight, device,
              where: tuple = ("head", 0, None)) -> float:
    """One optimiser step per batch; the mean training loss per video. ``where``: (entry name,
    epoch, classes) that :func:`check_logits` names."""
    model.train()
    total, n = 0.0, 0
    for rgb, motion, mask, targets, species in batches:
        with _amp(device):
            logits = forward(model, rgb, motion, mask, species)
        if where[2] is not None:
            check_logits(logits, len(targets), where)
        loss = loss_fn(logits, targets, multilabel, params, pos_weight)
        if hasattr(model, "aux_loss"):
            loss = loss + model.aux_loss(logits, targets, species, params)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if params["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(model.parameters(), params["grad_clip"])
        opt.step()
        sched.step()
        total += loss.item() * len(targets)
        n += len(targets)
    return total / n
