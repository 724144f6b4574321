"""The text bank's file (``features/text.h5``): class prompt embeddings ``(C, K, D)`` with their
``(C, K)`` mask, prompts and sources, and the species bank in group ``/species``; written whole
by the text stage, read by the prompt heads. Its attributes are a store's (:mod:`pipeline.store`)."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from .files import replacing
from .store import check_expected, check_kind, encode_attr, file_attrs, header_attrs, open_store


def _write_bank(g, embeddings, mask, prompts, sources, class_names):
    k = mask.shape[1]
    strings = h5py.string_dtype("utf-8")

    def grid(rows):
        return np.array([[r[j] if j < len(r) else "" for j in range(k)] for r in rows], dtype=object)

    g.create_dataset("embeddings", data=embeddings.astype(np.float32))
    g.create_dataset("mask", data=mask.astype(bool))
    g.create_dataset("prompts", data=grid(prompts), dtype=strings)
    g.create_dataset("sources", data=grid(sources), dtype=strings)
    g.create_dataset("class_names", data=np.array(class_names, dtype=object), dtype=strings)


def write_text_bank(path, embeddings: np.ndarray, mask: np.ndarray, prompts: list[list[str]],
                    sources: list[list[str]], class_names: list[str], attrs: dict,
                    species: dict | None = None) -> Path:
    """Class text embeddings ``(C, K, D)`` with a ``(C, K)`` validity mask and the strings;
    ``species`` (same keys) is the species bank, stored in group ``/species``."""
    path = Path(path)
    with replacing(path) as partial, h5py.File(partial, "w") as f:
        _write_bank(f, embeddings, mask, prompts, sources, class_names)
        if species is not None:
            _write_bank(f.create_group("species"), **species)
        for key, value in header_attrs("text", True, attrs).items():
            f.attrs[key] = encode_attr(value)
    return path


def read_text_bank(path, expect: dict | None = None) -> dict:
    with open_store(path) as f:
        attrs = file_attrs(f)
        check_kind(path, attrs, "text")
        check_expected(path, attrs, expect, "re-run the text stage")

        def bank(g):
            def strs(name):
                return np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v,
                                    otypes=[object])(g[name][()])
            return {"embeddings": g["embeddings"][()], "mask": g["mask"][()],
                    "prompts": strs("prompts"), "sources": strs("sources"),
                    "class_names": list(strs("class_names"))}
        return {**bank(f), "attrs": attrs, "species": bank(f["species"]) if "species" in f else None}
