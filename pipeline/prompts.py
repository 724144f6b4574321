"""Class prompts and their CLIP text embeddings: the bare name, templates filled in ("an
eagle"), description sentences, one prompt per species of the relation; encoded by a CLIP text
tower into a ``(C, K, D)`` bank with a mask. Below every stage: the text stage writes the bank,
the prompt heads extend it with new classes, the demo's CLIP trains on such captions."""
from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import torch

from .compute import autocast
from .factory import open_clip_module


def fill(template: str, **values) -> str:
    """``template.format(**values)`` with "a" before a filled-in value made "an" where the value
    starts with a vowel sound ("an eagle", "an ostrich", but "a unicorn", "a European bison")."""
    def article(m):
        word = str(values[m.group(2)]).strip().lower()
        vowel = word[:1] in "aeio" or (word[:1] == "u" and not word.startswith(("uni", "use", "usu")))
        vowel = vowel and not word.startswith(("eu", "one"))
        return ("an" if vowel else "a").capitalize() if m.group(1) == "A" else ("an" if vowel else "a")
    template = re.sub(r"\b([Aa]) (?=\{(\w+)\})", lambda m: article(m) + " ", template)
    return template.format(**values)


def build_prompts(class_names, templates, descriptions=None, species_names=None,
                  relation=None) -> tuple[list[list[str]], list[list[str]]]:
    """Per class: the bare name, its templates, description sentences and, for templates with
    ``{species}``, one prompt per species of the relation file; with where each came from
    (``name`` / ``template:<i>`` / ``description``). Duplicates are kept once."""
    prompts, sources = [], []
    pairs: dict[int, list[int]] = {}
    for s, c in relation or []:
        pairs.setdefault(c, []).append(s)
    for c, name in enumerate(class_names):
        action = name.replace("_", " ").strip().lower()
        p, src = [action], ["name"]
        for i, t in enumerate(templates):
            if "{species}" in t:
                texts = [fill(t, action=action, species=species_names[s])
                         for s in pairs.get(c, []) if species_names]
            else:
                texts = [fill(t, action=action)]
            for text in texts:
                p.append(text)
                src.append(f"template:{i}")
        for sentence in (descriptions or {}).get(c, []):
            p.append(sentence)
            src.append("description")
        seen, keep = set(), []
        for j, text in enumerate(p):
            if text not in seen:
                seen.add(text)
                keep.append(j)
        prompts.append([p[j] for j in keep])
        sources.append([src[j] for j in keep])
    return prompts, sources


def prompt_hash(prompts: list[list[str]]) -> str:
    return hashlib.sha256(json.dumps(prompts).encode()).hexdigest()[:16]


@torch.inference_mode()
def encode_texts(model, model_name: str, texts: list[str], device, batch_size: int = 256) -> np.ndarray:
    tokenizer = open_clip_module().get_tokenizer(model_name)
    out = []
    for s in range(0, len(texts), batch_size):
        tokens = tokenizer(texts[s:s + batch_size]).to(device)
        with autocast(device):
            out.append(model.encode_text(tokens).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.text_projection.shape[-1]), np.float32)


def encode_bank(model, model_name: str, prompts: list[list[str]], device):
    """Prompts per class -> ``(C, K, D)`` embeddings and a ``(C, K)`` mask."""
    flat = [p for row in prompts for p in row]
    emb = encode_texts(model, model_name, flat, device)
    c, k, d = len(prompts), max(len(r) for r in prompts), emb.shape[1]
    bank, mask = np.zeros((c, k, d), np.float32), np.zeros((c, k), bool)
    pos = 0
    for i, row in enumerate(prompts):
        bank[i, :len(row)] = emb[pos:pos + len(row)]
        mask[i, :len(row)] = True
        pos += len(row)
    return bank, mask
