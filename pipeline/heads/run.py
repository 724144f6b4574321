"""Stage ``head``: :func:`run_head` trains one head on cached features and writes its checkpoint,
predictions, metrics and plots; :func:`load_head` brings a trained head back."""
from __future__ import annotations

import csv
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..files import replacing
from ..layout import HEAD_INPUTS, project_of_text
from ..metrics import evaluate_logits, probabilities, species_top1
from ..store import FeatureReader
from ..tracking import tracker
from .data import identity_of, load_split
from .models import build_head
from .prompt import add_classes
from .scores import write_predictions, write_scores
from .entry import as_resolved
from .registry import HEAD_TYPES
from .text_bank import clip_for, load_text, upgrade_relation_once
from .trainer import (main_metric, predict_logits, predict_species,
                      ranking_scores, train_head)

log = logging.getLogger("pipeline")
__all__ = ["run_head", "load_head"]


def novel_classes(spec, names: list[str], seed: int = 0) -> list[int]:
    """``base_to_novel``: a list of class names, or a fraction of classes drawn with the seed."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        if not 0 < spec < 1:
            raise ValueError(f"base_to_novel: a fraction must lie in (0, 1); got {spec}")
        n = max(1, round(spec * len(names)))
        return sorted(np.random.default_rng(seed).permutation(len(names))[:n].tolist())
    index = {n.lower(): i for i, n in enumerate(names)}
    missing = [n for n in spec if str(n).lower() not in index]
    if missing:
        raise ValueError(f"base_to_novel: {missing} are not class names (classes.tsv)")
    return sorted(index[str(n).lower()] for n in spec)


def restrict(split, keep: list[int], multilabel: bool):
    """The videos of a split with a label among ``keep``, targets over ``keep`` only."""
    if split is None:
        return None
    if multilabel:
        targets = split.targets[:, keep]
        rows = np.flatnonzero(targets.sum(1) > 0)
        targets = targets[rows]
    else:
        remap = {c: i for i, c in enumerate(keep)}
        rows = np.flatnonzero(np.isin(split.targets, keep))
        targets = np.array([remap[c] for c in split.targets[rows]], np.int64)
    return split.subset(rows, targets)


def _subset_text(text: dict, keep: list[int]) -> dict:
    return {**text, "protos": text["protos"][keep], "class_names": [text["class_names"][c] for c in keep],
            "relation": None if text["relation"] is None else text["relation"][:, keep]}


def run_head(head, shards: dict, samples: list[dict], classes: list[dict], multilabel: bool,
             out: str | Path, device, splits: dict, text_path=None) -> dict:
    """``head``: the entry resolved (:func:`pipeline.heads.entry.resolve_head`); ``shards``:
    {(kind, role): [paths]} with kind clip/motion and role train/val/eval; ``splits``: {role:
    split name}; ``text_path``: the text bank, for the heads that read the class text."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name, params = head.name, head.params
    names = [c["name"] for c in classes]
    # every shard opened (and checked) once: a damaged one stops the job now, not after training
    readers = {key: FeatureReader(paths, kind=key[0]) for key, paths in shards.items() if paths}
    text = _text_for(head, text_path, readers, names, device)
    n_species = 0 if text is None or text["species_protos"] is None else len(text["species_protos"])
    by_id = {r["video_id"]: r for r in samples}
    need_rgb, need_motion = head.rgb, head.motion

    def load(role, expect=None):
        keys = [k for k in (("clip", role), ("motion", role)) if k in readers]
        if not keys or (role != "train" and not any(len(readers[k]) for k in keys)):
            return None  # no such split, or none of its videos could be read
        return load_split(readers.get(("clip", role)), readers.get(("motion", role)), by_id,
                          len(names), multilabel, need_rgb, need_motion, expect, n_species=n_species)

    train = load("train")
    val = load("val", train.identity)
    novel = _novel(head, names)
    base = [c for c in range(len(names)) if c not in novel]
    if novel:
        train, val = restrict(train, base, multilabel), restrict(val, base, multilabel)
    curves = tracker(out / "tensorboard", f"head/{name}")
    try:
        model, history = train_head(head, train, val, len(base), multilabel, device,
                                    text=_subset_text(text, base) if novel else text,
                                    class_names=[names[c] for c in base], on_epoch=curves)
    finally:
        curves.close()
    if novel:
        model.set_classes(text["protos"], text["relation"], names)
    ckpt = {"state_dict": model.state_dict(), "name": name, "type": head.type, "params": params,
            "identity": train.identity, "n_classes": len(names), "class_names": names,
            "multilabel": multilabel, "n_species": n_species,
            "text": None if text is None else {k: text[k] for k in ("attrs", "species_names")},
            "dims": {"rgb": 0 if train.rgb is None else train.rgb.shape[-1],
                     "motion": 0 if train.motion is None else train.motion.shape[-1]}}
    save_training(out, ckpt, history)
    splits_of = {"val": val if not novel else load("val", train.identity)}
    splits_of["eval"] = load("eval", train.identity)
    return _evaluate(head, model, splits_of, (base, novel), names, classes, multilabel, readers,
                     splits, out, device, text)


def _text_for(head, text_path, readers, names, device) -> dict | None:
    """The class text bank of a head that reads it (None for the others)."""
    params = head.params
    if not head.reads_text:
        return None
    if not text_path:
        raise ValueError(f"head {head.name} needs the text bank: --text features/text.h5")
    return text_bank(text_path, identity_of(readers[("clip", "train")], "clip"), names,
                     params.get("text_mode") == "learnable", device, params.get("pooling", "mean"),
                     params.get("weighting", "rows"))


def _novel(head, names) -> list[int]:
    """The classes held out of training by ``base_to_novel`` (none without it)."""
    name, params = head.name, head.params
    if not params.get("base_to_novel"):
        return []
    novel = novel_classes(params["base_to_novel"], names, params["novel_seed"])
    if not head.takes("base_to_novel"):
        takes = [t for t, h in HEAD_TYPES.items() if "base_to_novel" in h["defaults"]]
        raise ValueError(f"base_to_novel is an option of the {', '.join(takes)} head")
    log.info("head %s: base-to-novel, %d base and %d novel classes (%s)", name,
             len(names) - len(novel), len(novel), ", ".join(names[c] for c in novel))
    return novel


def _evaluate(head, model, splits_of, base_novel, names, classes, multilabel, readers, splits,
              out, device, text) -> dict:
    """Predictions of the validation and evaluation splits, the scores the report compares,
    and metrics.json (the validation split's metrics beside, what a sweep is chosen by)."""
    name, params, (base, novel) = head.name, head.params, base_novel
    segments = [c["segment"] for c in classes] if classes and "segment" in classes[0] else None
    all_names = names
    if params.get("extra_classes"):  # open vocabulary: scored and written, not evaluated
        all_names = add_classes(model, names, params["extra_classes"], text["attrs"], device)
        log.info("head %s: %d extra classes scored at evaluation: %s", name,
                 len(all_names) - len(names), ", ".join(all_names[len(names):]))
    result, selected = None, None
    for role in ("val", "eval"):
        split = splits_of[role]
        if split is None:
            continue
        logits_all = predict_logits(model, split, params, device)
        if role == "val":  # what a sweep is chosen by (the report's val columns)
            selected = selection_metrics(logits_all[:, :len(names)], split, params, multilabel, splits["val"])
        probs = probabilities(logits_all, multilabel)
        write_predictions(out / "predictions" / f"{splits[role]}.csv", split.video_ids, probs,
                          split.targets, all_names, multilabel)
        if role != "eval":
            continue
        # the report compares the heads class by class and video by video
        write_scores(out / "scores.npz", split.video_ids, probs[:, :len(names)], split.targets,
                     names, multilabel, head.motion)
        logits = logits_all[:, :len(names)]
        metrics = {**evaluate_head(model, split, logits, params, multilabel, segments, device),
                   "split": splits["eval"], "head": name, "type": head.type,
                   "variant": method_variant(params),
                   "entry": entry_record(head, readers),
                   **({"val": selected} if selected else {}), **precisions(readers, splits)}
        if novel:
            metrics["base_to_novel"] = {**base_to_novel_metrics(logits, split, base, novel, multilabel),
                                        "novel_seed": params["novel_seed"]}
        write_metrics(out, metrics, logits, split, names, segments, multilabel)
        result = metrics
    if result is None:  # no readable video to evaluate: the report says so
        result = write_no_metrics(out, name, splits["eval"], all_names)
    return result


def entry_record(head, readers: dict) -> dict:
    """What made these numbers: the entry's name, type, group, the values its expansion varies,
    its resolved settings and seed, and the identity of every feature stream it read."""
    features: dict = {}
    for (kind, _), reader in readers.items():
        for attrs in reader.shard_attrs:
            got = features.setdefault(kind, {"settings_sha256": set(), "model": set(), "weights": set()})
            got["settings_sha256"].add(attrs.get("settings_sha256"))
            got["model"].add(str(attrs.get("model")))
            got["weights"].add(str(attrs.get("weights", attrs.get("pretrained"))))
    return {"name": head.name, "type": head.type, "group": head.group, "varies": head.varies,
            "seed": head.params.get("seed"), "settings": head.params,
            "features": {k: {key: sorted(str(x) for x in v) for key, v in got.items()}
                         for k, got in sorted(features.items())}}


def precisions(readers: dict, splits: dict) -> dict:
    """``precision``: per split, the device types and precisions its features were computed
    with (``cuda/float16``, ``cpu/float32``); ``mixed_precision`` when a split has several:
    shards made on different machines differ, and the numbers should say so."""
    found: dict = {}
    for (kind, role), reader in readers.items():
        for attrs in reader.shard_attrs:
            found.setdefault(splits.get(role) or role, set()).add(
                f"{kind} {attrs.get('device_type', 'unrecorded')}/{attrs.get('precision', 'unrecorded')}")
    mixed = sorted(split for split, kinds in found.items()
                   if any(len({k for k in kinds if k.startswith(kind + " ")}) > 1
                          for kind in HEAD_INPUTS))
    if mixed:
        log.warning("features of split(s) %s were computed with several precisions: %s",
                    ", ".join(mixed), "; ".join(f"{s}: {', '.join(sorted(found[s]))}" for s in mixed))
    return {"precision": {s: sorted(k) for s, k in sorted(found.items())}, "mixed_precision": mixed}


def write_no_metrics(out: Path, name: str, split: str, names: list[str]) -> dict:
    """metrics.json saying why there are none, an empty predictions file and plots that say
    it, when the evaluation split holds no readable video."""
    from ..plots import plot_message
    why = (f"no readable video in the evaluation split {split!r}: every listed video is missing "
           f"or was skipped (reasons in missing.tsv and probe/{split}/shard-*.tsv)")
    log.warning("head %s: %s; the head is trained, nothing is evaluated", name, why)
    metrics = {"head": name, "split": split, "n_videos": 0, "no_metrics": why}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    write_predictions(out / "predictions" / f"{split}.csv", [], np.zeros((0, len(names))),
                      np.zeros((0,), np.int64), names, False)
    write_scores(out / "scores.npz", [], np.zeros((0, len(names))), np.zeros((0,), np.int64), names,
                 False, False)
    for plot in ("per_class_ap.png", "pr_curves.png"):
        plot_message(f"{name}: no metrics\n{why}", out / plot)
    return metrics


def text_bank(path, clip_id: dict, names: list[str], learnable: bool, device, pooling: str = "mean",
              weighting: str = "rows") -> dict:
    """The text bank of the prompt heads, made by the CLIP that made the frame features and for
    these classes; its local CLIP checkpoint, if any, is found in the run's project folder."""
    from ..files import local_path
    text = load_text(path, clip_id, learnable, device, pooling, weighting)
    text["attrs"]["pretrained"] = local_path(text["attrs"].get("pretrained"), project_of_text(path))
    if text["class_names"] != names:
        raise ValueError(f"{path}: its classes differ from classes.tsv; re-run the text stage")
    return text


def save_training(out: Path, ckpt: dict, history: list[dict]) -> None:
    """head.pt, train_log.csv and training.png of a trained head."""
    from ..plots import plot_training
    with replacing(out / "head.pt") as partial:
        torch.save(ckpt, partial)
    with open(out / "train_log.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", "train_loss", "val_metric", "val_loss", "lr"])
        w.writeheader()
        w.writerows(history)
    plot_training(history, ckpt["name"], out / "training.png")


def selection_metrics(logits, split, params: dict, multilabel: bool, split_name: str) -> dict:
    """The validation split's metrics (mAP, top-1, ...): what the report chooses entries by."""
    got = evaluate_logits(ranking_scores(logits, params), split.targets, multilabel=multilabel)
    return {"split": split_name, **{k: v for k, v in got.items() if isinstance(v, float)}}


def evaluate_head(model, split, logits, params: dict, multilabel: bool, segments, device) -> dict:
    """The evaluation split's metrics, chance level, what the scores are, and for heads that
    predict species: species top-1 and the metrics with the ground-truth species (oracle)."""
    ranked = ranking_scores(logits, params)
    metrics = evaluate_logits(ranked, split.targets, multilabel=multilabel, segments=segments)
    metrics["eval_scores"] = params.get("eval_scores", "logits")
    chance = evaluate_logits(np.zeros_like(logits), split.targets, multilabel=multilabel)
    metrics.update({"n_videos": len(split), "scores": score_kind(model, multilabel),
                    "chance": {k: v for k, v in chance.items() if isinstance(v, float)}})
    known = split.species is not None and split.species.any()
    species_logits = model.aux.get("species_logits") if hasattr(model, "aux") else None
    if species_logits is not None and known:
        metrics["species"] = {**species_top1(predict_species(model, split, params, device), split.species),
                              "source": species_source(model)}
    if getattr(model, "oracle", False) and known:  # trained on the true species: tested so too
        metrics["species_source"] = "oracle"
    elif getattr(model, "species_mode", "none") != "none" and known:
        metrics["species_source"] = "predicted"
        metrics["relation_gamma"] = model.gamma.item()
        model.oracle = True
        oracle = evaluate_logits(ranking_scores(predict_logits(model, split, params, device)[:, :logits.shape[1]],
                                                params), split.targets, multilabel=multilabel, segments=segments)
        model.oracle = False
        metrics["oracle_species"] = {k: v for k, v in oracle.items() if not isinstance(v, (list, dict))}
    return metrics


def write_metrics(out: Path, metrics: dict, logits, split, names, segments, multilabel: bool) -> None:
    """metrics.json, per_class_ap.png and pr_curves.png."""
    from ..plots import plot_per_class_ap, plot_pr_curves
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    onehot = split.targets if multilabel else np.eye(len(names))[split.targets]
    plot_per_class_ap(metrics, names, segments, out / "per_class_ap.png")
    plot_pr_curves(logits, onehot, metrics, names, out / "pr_curves.png")


def method_variant(params: dict) -> str | None:
    """The settings that make a head another method than its type's default, in words (the
    report shows them beside the head's name); None for the default. Read from the settings a
    type has (the prompt head's text and refinement, the interleave head's classifier and
    time), so any type that takes them is described alike."""
    parts = [f"refine {params['refine']}"] if params.get("refine", "mlp") != "mlp" else []
    parts += ["species-conditioned video"] if params.get("video_species") else []
    parts += ["text groups weighed equally"] if params.get("weighting") == "groups" else []
    parts += ["max-pooled descriptions"] if params.get("pooling") == "max" else []
    parts += ["Animal-CLIP's class text"] if params.get("pooling") == "animal_clip" else []
    if params.get("motion_source") == "flow_clip":
        parts.append("flow images through frozen CLIP")
    parts += ["class-text classifier"] if params.get("classifier") == "text" else []
    if params.get("temporal") == "windows":
        parts.append(f"{params['windows']} temporal windows, {params['aggregation']} frames")
    elif params.get("aggregation", "dense") != "dense":
        parts.append(f"per-step classifiers, {params['aggregation']} steps")
    return ", ".join(parts) or None


def score_kind(model, multilabel: bool) -> str:
    """What the scores in predictions/*.csv are, in words (metrics.json says it too)."""
    if hasattr(model, "scale"):  # the zero-shot head
        scale = f"{float(model.scale):.4g} * cosine"
        return (f"softmax over classes of {scale}" if not multilabel else
                f"sigmoid({scale} {float(model.bias):+.4g}), bias calibrated on the training split")
    return "sigmoid of the logits" if multilabel else "softmax over classes"


def species_source(model) -> str:
    if getattr(model, "species_mode", None) == "classifier":
        return "species bank (zero-shot) plus a trained correction"
    return "species bank, zero-shot"


def base_to_novel_metrics(logits, split, base, novel, multilabel) -> dict:
    """Base classes scored among base classes on their videos, novel among novel, and the
    harmonic mean (the protocol of ViFi-CLIP / X-CLIP); ``*_chance``: the same metric for
    uniform scores."""
    out = {"base_classes": len(base), "novel_classes": len(novel)}
    for key, keep in (("base", base), ("novel", novel)):
        part = restrict(replace(split, rgb=None, motion=None), keep, multilabel)
        rows = [split.video_ids.index(v) for v in part.video_ids]
        out[key] = main_metric(logits[np.ix_(rows, keep)], part.targets, multilabel)
        out[f"{key}_chance"] = main_metric(np.zeros((len(rows), len(keep))), part.targets, multilabel)
    b, n = out["base"], out["novel"]
    out["harmonic_mean"] = 2 * b * n / (b + n) if b + n else 0.0
    return out


def load_head(path, device="cpu"):
    """A trained head, its checkpoint dict and its entry as trained (a
    :class:`~pipeline.heads.entry.Head` of the checkpoint's own settings). Prompt heads come back with their classes; a head in the
    learnable text mode reloads the CLIP model its text bank was made with."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if "heads" in ckpt["params"]:  # saved before the key was named attention_heads
        ckpt["params"]["attention_heads"] = ckpt["params"].pop("heads")
    head = as_resolved(ckpt.get("type") or ckpt["name"], ckpt["params"], ckpt["name"])  # older: no type
    text = None
    if head.prompt:
        d, s = ckpt["dims"]["rgb"], ckpt.get("n_species", 0)
        text = {"protos": torch.zeros(ckpt["n_classes"], d), "class_names": ckpt["class_names"],
                "species_protos": torch.zeros(s, d) if s else None, "relation": None,
                "clip": (clip_for(ckpt["text"]["attrs"], device)
                         if ckpt["params"].get("text_mode") == "learnable" else None)}
    state = ckpt["state_dict"]
    if "relation" in state and "relation_format" not in state:
        ckpt = upgrade_relation_once(Path(path), ckpt)
    model = build_head(head, ckpt["dims"]["rgb"], ckpt["dims"]["motion"], ckpt["n_classes"],
                       text, ckpt["multilabel"], ckpt["class_names"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval().to(device), ckpt, head

