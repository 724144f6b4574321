"""Class-prompt text embeddings (stage ``text``): templates and description sentences per
class, encoded by the same CLIP model's text tower into ``features/text.h5`` as ``(C, K, D)``
with a mask and the string (and its source) of every row."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch

from ..annotations.readers import normalise
from ..store import write_text_bank
from .clip import _open_clip, load_clip, weights_identity
from .common import autocast

log = logging.getLogger("pipeline")


class TextError(ValueError):
    pass


def read_descriptions(path, class_names: list[str]) -> dict[int, list[str]]:
    """A JSON or YAML mapping class name -> list of sentences, keyed by class id."""
    import yaml
    path = Path(path)
    try:
        raw = (json.loads if path.suffix == ".json" else yaml.safe_load)(path.read_text())
    except FileNotFoundError:
        raise TextError(f"{path}: description file not found (text.descriptions)") from None
    except (ValueError, yaml.YAMLError) as e:
        raise TextError(f"{path}: not valid JSON/YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise TextError(f"{path}: expected a mapping 'class name: [sentences]'")
    index = {normalise(n): i for i, n in enumerate(class_names)}
    out: dict[int, list[str]] = {}
    for name, sentences in raw.items():
        if normalise(str(name)) not in index:
            raise TextError(f"{path}: key {name!r} is not a class name of this data set "
                            f"(classes.tsv; names are matched ignoring case)")
        if isinstance(sentences, str):
            sentences = [sentences]
        if not isinstance(sentences, list):
            raise TextError(f"{path}: key {name!r} must map to a list of sentences")
        kept = [s.strip() for s in sentences if isinstance(s, str) and s.strip()
                and s.strip().lower() not in ("null", "none")]
        out.setdefault(index[normalise(str(name))], []).extend(kept)
    return out


def build_prompts(class_names, templates, descriptions=None, species_names=None,
                  relation=None) -> tuple[list[list[str]], list[list[str]]]:
    """Per class: its prompts and where each came from (``template:<i>`` / ``description``)."""
    prompts, sources = [], []
    pairs: dict[int, list[int]] = {}
    for s, c in relation or []:
        pairs.setdefault(c, []).append(s)
    for c, name in enumerate(class_names):
        p, src = [], []
        action = name.replace("_", " ").strip().lower()
        for i, t in enumerate(templates):
            if "{species}" in t:
                for s in pairs.get(c, []) if species_names else []:
                    p.append(t.format(action=action, species=species_names[s]))
                    src.append(f"template:{i}")
            else:
                p.append(t.format(action=action))
                src.append(f"template:{i}")
        for sentence in (descriptions or {}).get(c, []):
            p.append(sentence)
            src.append("description")
        if not p:
            raise TextError(f"class {name!r} has no prompt: give at least one template "
                            f"without {{species}}")
        prompts.append(p)
        sources.append(src)
    return prompts, sources


def prompt_hash(prompts: list[list[str]]) -> str:
    return hashlib.sha256(json.dumps(prompts).encode()).hexdigest()[:16]


@torch.inference_mode()
def encode_texts(model, model_name: str, texts: list[str], device, batch_size: int = 256) -> np.ndarray:
    tokenizer = _open_clip().get_tokenizer(model_name)
    out = []
    for s in range(0, len(texts), batch_size):
        tokens = tokenizer(texts[s:s + batch_size]).to(device)
        with autocast(device):
            out.append(model.encode_text(tokens).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.text_projection.shape[-1]), np.float32)


def extract_text(class_names, out, text_cfg: dict, clip_cfg: dict, device,
                 species_names=None, relation=None) -> dict:
    descriptions = (read_descriptions(text_cfg["descriptions"], class_names)
                    if text_cfg.get("descriptions") else None)
    prompts, sources = build_prompts(class_names, text_cfg["templates"], descriptions,
                                     species_names, relation)
    model = load_clip(clip_cfg["model"], clip_cfg["pretrained"], device)
    flat = [p for row in prompts for p in row]
    emb = encode_texts(model, clip_cfg["model"], flat, device)
    c, k, d = len(class_names), max(len(r) for r in prompts), emb.shape[1]
    bank, mask = np.zeros((c, k, d), np.float32), np.zeros((c, k), bool)
    pos = 0
    for i, row in enumerate(prompts):
        bank[i, :len(row)] = emb[pos:pos + len(row)]
        mask[i, :len(row)] = True
        pos += len(row)
    write_text_bank(out, bank, mask, prompts, sources, list(class_names),
                    {"model": clip_cfg["model"], "weights": weights_identity(clip_cfg["pretrained"]),
                     "prompt_hash": prompt_hash(prompts), "templates": list(text_cfg["templates"]),
                     "normalised": False})
    return {"classes": c, "prompts": len(flat), "max_per_class": k}
