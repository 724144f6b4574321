"""Data set adapters: the public annotation formats -> one sample table (stage ``samples``).

``build_samples(dataset_cfg, shards)`` reads the files named in the ``dataset:`` section of the
config and returns a :class:`SampleSet`; ``write_samples`` writes the tables every later stage
reads (samples.tsv, classes.tsv, missing.tsv, dataset.json, species.tsv, relation.tsv).
"""
from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from . import readers
from .readers import AnnotationError, Entry, NameTable

log = logging.getLogger("pipeline")

__all__ = ["AnnotationError", "SampleSet", "build_samples", "write_samples", "read_samples",
           "read_classes", "plan_splits", "FORMATS"]

FORMATS = ("animal_kingdom", "animal_kingdom_species", "mammalnet", "lote", "csv", "demo")
from ..video import VIDEO_SUFFIXES as VIDEO_EXTENSIONS


@dataclass
class SampleSet:
    classes: NameTable
    segments: list[str] | None
    species: NameTable | None
    relation: list[tuple[int, int]] | None
    rows: list[dict]        # video_id, path, split, shard, labels, species
    missing: list[dict]     # video_id, path, split, file, line
    multilabel: bool


def _read_entries(cfg: dict, classes: NameTable, species: NameTable | None) -> list[Entry]:
    fmt = cfg["format"]
    if fmt in ("csv", "demo"):
        if not cfg.get("annotations"):
            raise AnnotationError("config.yaml", None, f"dataset.annotations (a CSV file with "
                                  f"video,split,labels) is required for format {fmt!r}")
        # The demo's species (its shapes) are an option: without dataset.species they are unused.
        return readers.read_csv_annotations(cfg["annotations"], classes, species,
                                            ignore_species=fmt == "demo" and species is None)
    splits = cfg.get("splits") or {}
    if not splits:
        raise AnnotationError("config.yaml", None, f"dataset.splits (split name -> list file) is "
                              f"required for format {fmt!r}")
    entries = []
    for split, path in splits.items():
        if fmt == "animal_kingdom":
            got = readers.read_animal_kingdom(path, split, classes)
        elif fmt == "animal_kingdom_species":
            if species is None:
                raise AnnotationError("config.yaml", None, "format animal_kingdom_species needs "
                                      "dataset.species.names (the species file, label,name)")
            got = readers.read_animal_kingdom_species(path, split, classes, species)
        elif fmt == "mammalnet":
            got = readers.read_mammalnet(path, split, classes, species)
        elif fmt == "lote":
            got = readers.read_lote(path, split, classes, species)
        else:
            raise AnnotationError("config.yaml", None, f"dataset.format {fmt!r} is not one of {FORMATS}")
        if not got:
            raise AnnotationError(path, None, f"split {split!r} lists no video")
        entries += got
    return entries


def video_id_of(path: str) -> str:
    """Stable id: the path relative to the video folder, without its extension."""
    p = Path(path.replace("\\", "/"))
    return str(p.with_suffix("")) if p.suffix.lower() in VIDEO_EXTENSIONS else str(p)


def unique_ids(entries: list[Entry]) -> dict[str, Entry]:
    """Video id -> entry. Ids are paths without their suffix, unless two listed files differ
    only in suffix (clip.mkv, clip.mov): those keep it. A file listed twice is an error."""
    by_path: dict[str, Entry] = {}
    for e in entries:
        key = e.path.replace("\\", "/")
        if key in by_path:
            first = by_path[key]
            raise AnnotationError(e.source[0], e.source[1],
                                  f"video {e.path!r} is listed twice (first at {first.source[0]}, "
                                  f"line {first.source[1]}, split {first.split!r}); each video "
                                  f"must appear once")
        by_path[key] = e
    stems: dict[str, list[str]] = {}
    for key in by_path:
        stems.setdefault(video_id_of(key), []).append(key)
    out = {}
    for stem, keys in stems.items():
        if len(keys) > 1:
            log.warning("%s differ only in their suffix: their video ids keep it", ", ".join(keys))
        for key in keys:
            out[stem if len(keys) == 1 else key] = by_path[key]
    return out


def warn_case_splits(splits) -> None:
    """``Train`` beside ``train`` is two splits: almost always a typo, so say it."""
    by_lower: dict[str, set] = {}
    for s in splits:
        by_lower.setdefault(s.lower(), set()).add(s)
    for names in by_lower.values():
        if len(names) > 1:
            log.warning("split names %s differ only in case: they are different splits; "
                        "fix the annotation file if they are meant to be one", sorted(names))


def build_samples(cfg: dict, shards: int = 1) -> SampleSet:
    """Read a data set's annotation files as described by the ``dataset:`` config section."""
    classes = readers.read_name_table(cfg["classes"], "class")
    segments = readers.read_segments(cfg["segments"], classes) if cfg.get("segments") else None
    sp_cfg = cfg.get("species") or {}
    species = readers.read_name_table(sp_cfg["names"], "species") if sp_cfg.get("names") else None
    relation = None
    if sp_cfg.get("relation"):
        if species is None:
            raise AnnotationError("config.yaml", None, "dataset.species.relation needs "
                                  "dataset.species.names too")
        relation = readers.read_relation(sp_cfg["relation"], species, classes)
    entries = _read_entries(cfg, classes, species)

    seen = unique_ids(entries)
    videos = Path(cfg["videos"])
    rows, missing = [], []
    for vid, e in seen.items():
        if (videos / e.path).is_file():
            rows.append({"video_id": vid, "path": e.path, "split": e.split,
                         "labels": list(e.labels), "species": list(e.species)})
        else:
            missing.append({"video_id": vid, "path": e.path, "split": e.split,
                            "file": e.source[0], "line": e.source[1]})
    if not rows:
        raise AnnotationError(cfg["videos"], None,
                              f"none of the {len(seen)} listed videos was found in this folder; "
                              f"check dataset.videos (list entries are relative to it)")
    warn_case_splits({r["split"] for r in rows})
    # Round-robin over sorted ids per split: even shards, independent of list order.
    rows.sort(key=lambda r: (r["split"], r["video_id"]))
    counters: dict[str, int] = {}
    for r in rows:
        k = counters.get(r["split"], 0)
        r["shard"] = k % shards
        counters[r["split"]] = k + 1
    multilabel = cfg.get("multilabel", "auto")
    if multilabel == "auto":
        multilabel = cfg["format"] in ("animal_kingdom", "animal_kingdom_species") or any(
            len(r["labels"]) != 1 for r in rows)
    return SampleSet(classes, segments, species, relation, rows, missing, bool(multilabel))


DEMO_SPLITS = ["train", "val", "test"]


def split_roles(ds: dict, splits) -> tuple[str | None, list[str]]:
    """The validation split to use (None when the data set has none) and notes for the user.
    The training and evaluation splits must hold videos; a missing validation split is allowed:
    heads and the student then select their checkpoint on the training loss."""
    splits = sorted(splits)
    for role in ("train_split", "eval_split"):
        if ds.get(role) not in splits:
            raise AnnotationError("config.yaml", None, f"dataset.{role} is {ds.get(role)!r}, but "
                                  f"no video of that split was found; splits with videos: "
                                  f"{', '.join(splits) or 'none'}")
    val, notes = ds.get("val_split"), []
    if val and val not in splits:
        notes.append(f"dataset.val_split {val!r} has no video (splits with videos: "
                     f"{', '.join(splits)}): the student and the heads select their checkpoint "
                     f"on the training loss; set val_split: null to silence this")
        val = None
    return val, notes


def plan_splits(ds: dict, shards: int = 1) -> tuple[list[str], str | None, list[str]]:
    """(splits that hold at least one present video, validation split or None, notes), read
    with the same reader as the samples stage, for the workflow to build its DAG from."""
    if ds["format"] == "demo":
        splits = DEMO_SPLITS  # the demo's videos are written by a rule of the run itself
    else:
        splits = sorted({r["split"] for r in build_samples(ds, shards).rows})
    val, notes = split_roles(ds, splits)
    return splits, val, notes


def _write_tsv(path: Path, header: list[str], rows) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    tmp.replace(path)


def _ids(values) -> str:
    return " ".join(str(v) for v in values)


def write_samples(s: SampleSet, out: str | Path, splits: list[str] | None = None) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_tsv(out / "missing.tsv", ["video_id", "path", "split", "file", "line"],
               [[m[k] for k in ("video_id", "path", "split", "file", "line")] for m in s.missing])
    header = ["id", "name"] + (["segment"] if s.segments else [])
    _write_tsv(out / "classes.tsv", header,
               [[i, n] + ([s.segments[i]] if s.segments else []) for i, n in enumerate(s.classes.names)])
    if s.species is not None:
        _write_tsv(out / "species.tsv", ["id", "name"], list(enumerate(s.species.names)))
        _write_tsv(out / "relation.tsv", ["species", "class"], s.relation or [])
    info = {"multilabel": s.multilabel, "n_classes": len(s.classes.names),
            "n_species": len(s.species.names) if s.species else 0,
            "segments_source": "dataset.segments" if s.segments else None,
            "splits": {sp: sum(r["split"] == sp for r in s.rows)
                       for sp in sorted({r["split"] for r in s.rows})},
            "missing": len(s.missing)}
    (out / "dataset.json").write_text(json.dumps(info, indent=2) + "\n")
    _write_tsv(out / "samples.tsv", ["video_id", "path", "split", "shard", "labels", "species"],
               [[r["video_id"], r["path"], r["split"], r["shard"], _ids(r["labels"]),
                 _ids(r["species"])] for r in s.rows])


def read_samples(path) -> list[dict]:
    """Rows of a samples.tsv, labels and species as lists of ints."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for r in rows:
        r["shard"] = int(r["shard"])
        r["labels"] = [int(v) for v in r["labels"].split()]
        r["species"] = [int(v) for v in (r.get("species") or "").split()]
    return rows


def read_classes(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))
