"""The prompt heads' text: class (and species) prototypes pooled from the text bank
(``features/text.h5``), the species-action relation, and the CLIP text tower the bank was made
with (for learnable prompts and classes added after training)."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from .graph import RELATION_FORMAT, UNKNOWN

log = logging.getLogger("pipeline")


GROUPS = ("name", "templates", "species", "descriptions")


def row_groups(sources, templates=()) -> list[list[str]]:
    """The group of each bank row from its source: the bare name, a template, a template with
    ``{species}`` (one prompt per species the relation gives the class), or a description."""
    def group(source: str) -> str:
        if source.startswith("template:"):
            i = int(source.split(":")[1])
            return "species" if i < len(templates) and "{species}" in templates[i] else "templates"
        return {"name": "name", "description": "descriptions"}.get(source, "templates")
    return [[group(str(s)) for s in row] for row in sources]


def prototypes(bank, mask, groups=None, pooling: str = "mean", weighting: str = "rows") -> torch.Tensor:
    """``(C, K, D)`` bank rows and ``(C, K)`` mask -> ``(C, D)`` class prototypes.

    Each group of rows (:data:`GROUPS`, from :func:`row_groups`) is pooled into one vector:
    the mean of its normalised rows, or for descriptions with ``pooling: max`` their
    element-wise max (Animal-CLIP). ``weighting: rows`` weighs the groups by their row counts
    (with mean pooling: the plain mean of every row); ``groups`` gives each present group the
    same total weight, so the 1 to 509 species prompts of a class cannot outweigh its name,
    templates and descriptions."""
    bank, mask = torch.as_tensor(bank, dtype=torch.float32), torch.as_tensor(mask)
    if pooling == "animal_clip" and groups is not None:
        return animal_clip_prototypes(bank, mask, groups)
    rows = F.normalize(bank, dim=-1) * mask[..., None]
    if groups is None or (pooling == "mean" and weighting == "rows"):
        return F.normalize(rows.sum(1) / mask.sum(1, keepdim=True).clamp(min=1), dim=-1)
    total, weight = torch.zeros(bank.shape[0], bank.shape[2]), torch.zeros(bank.shape[0], 1)
    for g in GROUPS:
        member = mask & torch.tensor([[x == g for x in row] + [False] * (mask.shape[1] - len(row))
                                      for row in groups], dtype=torch.bool)
        n = member.sum(1, keepdim=True).float()
        if g == "descriptions" and pooling == "max":
            pooled = rows.masked_fill(~member[..., None], float("-inf")).max(1).values
            pooled = torch.where(n > 0, pooled, torch.zeros_like(pooled))
        else:
            pooled = (rows * member[..., None]).sum(1) / n.clamp(min=1)
        w = n if weighting == "rows" else (n > 0).float()
        total, weight = total + w * pooled, weight + w
    return F.normalize(total / weight.clamp(min=1e-12), dim=-1)


def animal_clip_prototypes(bank, mask, groups) -> torch.Tensor:
    """Animal-CLIP's class text: the element-wise max of the class's description embeddings as
    CLIP gives them (not normalised first), then normalised. A class without a description
    falls back to the mean of its other rows."""
    desc = mask & torch.tensor([[x == "descriptions" for x in row] + [False] * (mask.shape[1] - len(row))
                                for row in groups], dtype=torch.bool)
    pooled = bank.masked_fill(~desc[..., None], float("-inf")).max(1).values
    fallback = prototypes(bank, mask)
    return torch.where(desc.any(1, keepdim=True), F.normalize(pooled, dim=-1), fallback)


def relation_matrix(pairs, n_species: int, n_classes: int) -> torch.Tensor:
    """(S, C): 1 for the known species-action pairs, 0 for the other actions of a species that
    has pairs, :data:`~pipeline.heads.graph.UNKNOWN` for a species without any (its prior is
    neutral and it has no graph edges)."""
    r = torch.zeros(n_species, n_classes)
    for s, c in pairs:
        r[s, c] = 1.0
    r[r.sum(1) == 0] = UNKNOWN
    return r


def load_text(path, clip_identity: dict, learnable: bool = False, device="cpu", pooling: str = "mean",
              weighting: str = "rows") -> dict:
    """What the prompt heads need from ``text.h5``: class and species prototypes (see
    :func:`prototypes` for ``pooling`` and ``weighting``), the relation matrix (S, C), the class
    names, and for the learnable mode the CLIP model and tokenizer. Refuses a bank made with
    another CLIP model than the frame features."""
    from ..text_store import read_text_bank
    bank = read_text_bank(path, expect={"model": clip_identity["model"],
                                        "weights": clip_identity["weights"]})
    sp = bank["species"]

    def protos(b, templates=()):
        return prototypes(b["embeddings"], b["mask"], row_groups(b["sources"], templates), pooling, weighting)
    text = {"protos": protos(bank, list(bank["attrs"].get("templates") or [])),
            "class_names": bank["class_names"], "species_protos": None if sp is None else protos(sp),
            "species_names": None if sp is None else sp["class_names"], "relation": None,
            "attrs": {k: bank["attrs"].get(k) for k in ("model", "weights", "pretrained", "templates",
                                                        "prompt_hash", "logit_scale")}, "clip": None}
    if sp is not None:
        text["relation"] = relation_matrix(bank["attrs"].get("relation") or [], len(sp["class_names"]),
                                           len(bank["class_names"]))
    if learnable:
        text["clip"] = clip_for(text["attrs"], device)
    return text


def clip_for(attrs: dict, device="cpu"):
    """(model, tokenizer) of the CLIP model a text bank was made with."""
    from ..factory import WeightsError, is_weights_file, load_clip, open_clip_module, weights_identity
    pretrained = attrs.get("pretrained") or None
    if attrs.get("weights") and is_weights_file(pretrained) and Path(pretrained).is_file() \
            and weights_identity(pretrained) != attrs["weights"]:
        raise WeightsError(f"the text bank was made with CLIP weights {attrs['weights']}, but "
                           f"{pretrained!r} seen from here is another file; run from the run's "
                           f"project folder or restore that file")
    model = load_clip(attrs["model"], pretrained, device)
    return model, open_clip_module().get_tokenizer(attrs["model"])


def encode_classes(names: list[str], attrs: dict, device="cpu") -> torch.Tensor:
    """(E, D) prototypes of classes known by name only: the bank's CLIP text tower and
    templates (those without ``{species}``), encoded now."""
    from ..prompts import build_prompts, encode_bank
    clip, _ = clip_for(attrs, device)
    prompts, _ = build_prompts(names, [t for t in attrs["templates"] if "{species}" not in t])
    bank, mask = encode_bank(clip, attrs["model"], prompts, device)
    return prototypes(bank, mask)


def upgrade_relation_once(path: Path, ckpt: dict) -> dict:
    """A prompt head saved before its relation's format was recorded wrote "nothing known" and
    "every action" both as ones: its relation is read again from its run's relation.tsv and the
    checkpoint rewritten in the current format, once; without that file it is refused."""
    from ..annotations import read_species
    from ..files import replacing
    from ..layout import run_of_head
    run = run_of_head(path)
    state = ckpt["state_dict"]
    if not (run / "relation.tsv").exists():
        raise ValueError(f"{path}: a prompt head saved before its relation's format was recorded "
                         f"('nothing known' and 'every action' were both written as ones), and no "
                         f"{run / 'relation.tsv'} to read its relation from; train it again")
    _, pairs = read_species(run / "species.tsv", run / "relation.tsv")
    relation = relation_matrix(pairs, *state["relation"].shape)
    known = (relation > 0).any(1)[:, None] & (relation > 0).any(0)[None]  # pairs both agree on
    if not torch.equal((relation > 0)[known], (state["relation"] > 0)[known]):
        raise ValueError(f"{path}: its relation is not {run / 'relation.tsv'}'s; train it again")
    state = {**state, "relation": relation, "relation_format": torch.tensor(RELATION_FORMAT)}
    ckpt = {**ckpt, "state_dict": state}
    with replacing(path) as partial:
        torch.save(ckpt, partial)
    log.info("%s: relation upgraded from %s (saved before its format was recorded)", path,
             run / "relation.tsv")
    return ckpt
