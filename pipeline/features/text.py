"""Class-prompt text embeddings (stage ``text``): templates and description sentences per
class, encoded by the same CLIP model's text tower into ``features/text.h5`` as ``(C, K, D)``
with a mask and the string (and its source) of every row."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

from ..annotations.readers import name_key
from ..compute import compute_precision
from ..errors import PipelineError
from ..factory import load_clip, open_clip_module, weights_identity
from ..prompts import build_prompts, encode_bank, prompt_hash
from ..text_store import write_text_bank

log = logging.getLogger("pipeline")


class TextError(PipelineError, ValueError):
    pass


def _read_csv_descriptions(path: Path, class_names: list[str]) -> dict:
    """``name,"paragraph"`` rows (Animal-CLIP's description file; a header row is allowed),
    as name -> list of paragraphs, in file order. Read as UTF-8 with or without a BOM (Excel's
    "CSV UTF-8"); a quote left open (which would swallow the rows after it into one paragraph)
    and a file separated by ';' or tabs are errors naming the line."""
    import csv
    known = {name_key(n) for n in class_names}
    raw: dict = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        start, spans = 1, []
        try:
            for row in reader:
                number, start = start, reader.line_num + 1
                if not row or not "".join(row).strip():
                    continue
                if number == 1 and name_key(row[0]) not in known and \
                        row[0].strip().lower() in ("name", "class", "action", "species", "label"):
                    continue  # a header
                if len(row) < 2:
                    sep = next((f"'{c}'" if c == ";" else "tabs" for c in (";", "\t") if c in row[0]), None)
                    found = f"this line looks separated by {sep}" if sep else f"got {row!r}"
                    raise TextError(f"{path}, line {number}: expected comma-separated "
                                    f"'name,\"description\"'; {found}")
                if len(row) > 2:
                    raise TextError(f"{path}, line {number}: {len(row)} columns where a row is "
                                    f"'name,\"description\"'; quote a description that holds "
                                    f"commas, or remove the extra column")
                paragraph = row[1]
                swallowed = next((line.split(",")[0] for line in paragraph.splitlines()[1:]
                                  if name_key(line.split(",")[0]) in known), None)
                if swallowed is not None:
                    raise TextError(f"{path}, line {number}: the quote opened on this line is "
                                    f"closed only after the row of {swallowed.strip()!r}; close "
                                    f"the quote at the end of this line's description")
                if "\n" in paragraph:
                    spans.append(number)
                raw.setdefault(row[0].strip(), []).append(paragraph)
            f.seek(0)
            if f.read().count('"') % 2:
                raise TextError(f"{path}, line {spans[-1] if spans else 1}: a quote opened on "
                                f"this line is never closed")
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
    return raw


def _not_utf8(path) -> TextError:
    return TextError(f"{path}: not UTF-8 text (latin-1 or another encoding?); save it as UTF-8 "
                     f"(Excel: 'CSV UTF-8')")


def read_descriptions(path, class_names: list[str], what: str = "class",
                      units: str = "sentences") -> dict[int, list[str]]:
    """Descriptions per class, as sentences of at most 75 tokens keyed by id: a JSON or YAML
    mapping name -> list of texts, or a CSV of ``name,"paragraph"`` rows. Paragraphs are split
    into sentences (a sentence too long for CLIP at clause boundaries, never truncated); the
    sentences kept and dropped (refusals, empty entries, boilerplate openers) are logged per
    class, with the file, and the classes without any description are named. ``units:
    whole`` keeps each non-empty description as written (CLIP's tokenizer cuts it at 77
    tokens), as Animal-CLIP does."""
    import yaml
    path = Path(path)
    try:
        if path.suffix == ".csv":
            raw = _read_csv_descriptions(path, class_names)
        else:
            text = path.read_bytes().decode("utf-8-sig")
            raw = (json.loads if path.suffix == ".json" else yaml.safe_load)(text)
    except FileNotFoundError:
        raise TextError(f"{path}: description file not found (text.descriptions)") from None
    except UnicodeDecodeError:
        raise _not_utf8(path) from None
    except TextError:
        raise
    except (ValueError, yaml.YAMLError) as e:
        raise TextError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: "
                        f"{str(e).splitlines()[0]}; expected a mapping '{what} name: "
                        f"[sentences]', or a .csv file of name,\"description\" rows") from None
    if not isinstance(raw, dict):
        table = isinstance(raw, str) and any(c in raw for c in (";", "\t"))
        raise TextError(f"{path}: expected a mapping '{what} name: [sentences]'"
                        + ("; this looks like a table separated by ';' or tabs: write it as a "
                           ".csv file of comma-separated name,\"description\" rows" if table else ""))
    index = {name_key(n): i for i, n in enumerate(class_names)}
    out: dict[int, list[str]] = {}
    for name, texts in raw.items():
        if name_key(str(name)) not in index:
            raise TextError(f"{path}: key {name!r} is not a {what} name of this data set "
                            f"(names are matched ignoring case)")
        if texts is None or isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list):
            raise TextError(f"{path}: key {name!r} must map to a list of sentences")
        dropped: dict[str, int] = {}
        if units == "whole":
            kept = [t.strip() for t in texts if isinstance(t, str) and t.strip()]
        else:
            kept = split_sentences(texts, f"{path}:{name}", dropped=dropped)
        out.setdefault(index[name_key(str(name))], []).extend(kept)
        log.info("text: %s: %s %r: %d sentences kept%s", path, what, name, len(kept),
                 "".join(f", {n} {k}" for k, n in sorted(dropped.items())))
    missing = [n for i, n in enumerate(class_names) if not out.get(i)]
    if missing:
        log.warning("text: %s: %d %s names have no description (their prompts are the templates "
                    "alone): %s", path, len(missing), what, ", ".join(missing))
    return out


# LLM answers open with these, or refuse; neither describes an action.
REFUSALS = ("i'm sorry", "i am sorry", "i cannot", "i can't", "i can not", "as an ai",
            "i'm unable", "i am unable", "i apologize", "i apologise")
BOILERPLATE = ("as a biologist", "as an expert", "as a zoologist", "as an ethologist", "sure",
               "certainly", "here are", "here is", "of course", "below are", "the following")
MAX_TOKENS = 75  # CLIP reads 77 tokens, two of which are start and end


def n_tokens(text: str) -> int:
    return len(open_clip_module().tokenizer._tokenizer.encode(text))


def _chunks(sentence: str, limit: int) -> list[str]:
    """A sentence longer than ``limit`` tokens, cut at clause boundaries, then between words."""
    if n_tokens(sentence) <= limit:
        return [sentence]
    parts = [p.strip() for p in re.split(r"(?<=[,;:])\s+", sentence) if p.strip()]
    if len(parts) == 1:
        words = sentence.split()
        if len(words) <= 1:
            return []  # one "word" over the limit (a URL, a run of symbols): no sentence to keep
        half = len(words) // 2
        parts = [" ".join(words[:half]), " ".join(words[half:])]
    out, current = [], ""
    for part in parts:
        joined = f"{current} {part}".strip()
        if current and n_tokens(joined) > limit:
            out.extend(_chunks(current, limit))
            current = part
        else:
            current = joined
    return out + (_chunks(current, limit) if current else [])


def split_sentences(texts: list[str], where: str = "", limit: int = MAX_TOKENS,
                    dropped: dict | None = None) -> list[str]:
    """Description texts -> sentences of at most ``limit`` tokens. Refusals, empty and "null"
    entries and boilerplate openers are dropped and counted in ``dropped`` by reason."""
    dropped = {} if dropped is None else dropped
    out = []
    for text in texts:
        if not isinstance(text, str) or text.strip().lower() in ("", "null", "none", "n/a"):
            dropped["empty"] = dropped.get("empty", 0) + 1
            continue
        for sentence in re.split(r"(?<=[.!?])\s+|\n+", text.strip()):
            sentence = re.sub(r"^\s*(?:[-*\u2022]|\d+[.)])\s*", "", sentence).strip().strip('"')
            low = sentence.lower()
            if len(sentence) < 3 or low in ("null", "none"):
                dropped["empty"] = dropped.get("empty", 0) + bool(sentence)
                continue
            if low.startswith(REFUSALS) or "as an ai" in low:
                dropped["refusal"] = dropped.get("refusal", 0) + 1
                continue
            if low.startswith(BOILERPLATE):
                dropped["boilerplate"] = dropped.get("boilerplate", 0) + 1
                continue
            chunks = _chunks(sentence, limit)
            if not chunks:
                dropped["dropped (one word over the limit)"] = dropped.get("dropped (one word over the limit)", 0) + 1
            elif len(chunks) > 1:
                dropped["split (too long)"] = dropped.get("split (too long)", 0) + 1
            out.extend(chunks)
    return out


def extract_text(class_names, out, text_cfg: dict, clip_cfg: dict, device,
                 species_names=None, relation=None) -> dict:
    descriptions = (read_descriptions(text_cfg["descriptions"], class_names,
                                      units=text_cfg.get("description_units", "sentences"))
                    if text_cfg.get("descriptions") else None)
    prompts, sources = build_prompts(class_names, text_cfg["templates"], descriptions,
                                     species_names, relation)
    model = load_clip(clip_cfg["model"], clip_cfg["pretrained"], device)
    bank, mask = encode_bank(model, clip_cfg["model"], prompts, device)
    species = None
    if species_names:
        sp_desc = (read_descriptions(text_cfg["species_descriptions"], species_names, "species")
                   if text_cfg.get("species_descriptions") else None)
        sp_prompts, sp_sources = build_prompts(species_names, text_cfg["species_templates"], sp_desc)
        sp_bank, sp_mask = encode_bank(model, clip_cfg["model"], sp_prompts, device)
        species = {"embeddings": sp_bank, "mask": sp_mask, "prompts": sp_prompts,
                   "sources": sp_sources, "class_names": list(species_names)}
    write_text_bank(out, bank, mask, prompts, sources, list(class_names),
                    {"model": clip_cfg["model"], "weights": weights_identity(clip_cfg["pretrained"]),
                     "pretrained": clip_cfg["pretrained"] or "",
                     "device_type": torch.device(device).type,
                     "precision": compute_precision("auto", torch.device(device)),
                     "prompt_hash": prompt_hash(prompts + (species or {}).get("prompts", [])),
                     "templates": list(text_cfg["templates"]), "normalised": False,
                     "logit_scale": float(model.logit_scale.exp()),
                     "relation": [list(map(int, pair)) for pair in relation or []]},
                    species=species)
    return {"classes": len(class_names), "prompts": int(mask.sum()), "max_per_class": mask.shape[1],
            "species": len(species_names or [])}
