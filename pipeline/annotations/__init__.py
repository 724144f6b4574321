"""Data set adapters: the public annotation formats -> one sample table (stage ``samples``).

``build_samples(dataset_cfg, shards)`` reads the files named in the ``dataset:`` section of the
config and returns a :class:`SampleSet`; ``write_samples`` writes the tables every later stage
reads (samples.tsv, classes.tsv, missing.tsv, dataset.json, species.tsv, relation.tsv).
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import write_tsv
from . import readers
from .readers import AnnotationError, Entry, NameTable

log = logging.getLogger("pipeline")

__all__ = ["AnnotationError", "SampleSet", "build_samples", "write_samples", "read_samples",
           "read_classes", "read_species", "label_targets", "plan_splits", "listed_videos", "shard_of", "FORMATS"]

# the config schema's dataset.format takes these (pipeline.config fills its enum from here)
FORMATS = ("animal_kingdom", "animal_kingdom_species", "mammalnet", "lote", "csv", "demo")


def list_key(fmt: str) -> tuple[str, str]:
    """The dataset key that lists a format's videos (required), and what it holds."""
    if fmt in ("csv", "demo"):
        return "annotations", "a CSV with video,split,labels"
    return "splits", "split name -> list file"
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
    key, what = list_key(fmt)
    if not cfg.get(key):
        raise AnnotationError("config.yaml", None, f"dataset.{key} ({what}) is required for format {fmt!r}")
    if key == "annotations":
        # The demo's species (its shapes) are an option: without dataset.species they are unused.
        return readers.read_csv_annotations(cfg["annotations"], classes, species,
                                            ignore_species=fmt == "demo" and species is None)
    splits = cfg["splits"]
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


def found_under(videos: Path, path: str) -> str | None:
    """A listed video's path below ``dataset.videos``, or None when it is not there. A list
    that starts its entries with the folder's own name (MammalNet's ``trimmed_videos/X.mp4``
    with ``videos: .../trimmed_videos``) is read from inside that folder too."""
    if (videos / path).is_file():
        return path
    first, _, rest = path.replace("\\", "/").partition("/")
    return rest if rest and first == videos.name and (videos / rest).is_file() else None


def video_id_of(path: str) -> str:
    """Stable id: the path relative to the video folder, without its extension."""
    p = Path(path.replace("\\", "/"))
    return str(p.with_suffix("")) if p.suffix.lower() in VIDEO_EXTENSIONS else str(p)


def shard_of(video_id: str, shards: int) -> int:
    """A video's shard, from its own id only: adding or removing k videos changes at most k
    shards of a split, where a round-robin over sorted ids would move most videos (and so
    re-make every shard). A hash spreads ids evenly enough (a shard of n videos varies by
    about sqrt(n)) and is the same in every process and on every machine."""
    digest = hashlib.blake2b(video_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


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


# Segment files shipped with the package, named in ``dataset.segments`` instead of a path.
SHIPPED_SEGMENTS = {
    "animal_clip_ak": "Animal-CLIP's head/middle/tail split of Animal Kingdom's 140 actions (18/32/90)",
    "animal_clip_mammalnet": "Animal-CLIP's head/middle/tail split of MammalNet's 12 behaviours (2/3/7)",
    "animal_clip_lote": "Animal-CLIP's head/middle/tail split of LoTE-Animal's 21 behaviours (3/6/12)",
}


def segment_file(value: str | None):
    """The file ``dataset.segments`` names: a path, or one of :data:`SHIPPED_SEGMENTS`."""
    if value in SHIPPED_SEGMENTS:
        return Path(__file__).resolve().parent.parent / "resources" / "segments" / f"{value}.csv"
    return value


def build_samples(cfg: dict, shards: int = 1) -> SampleSet:
    """Read a data set's annotation files as described by the ``dataset:`` config section."""
    classes = readers.read_name_table(cfg["classes"], "class")
    segments = readers.read_segments(segment_file(cfg["segments"]), classes) if cfg.get("segments") else None
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
        if (path := found_under(videos, e.path)) is not None:
            rows.append({"video_id": vid, "path": path, "split": e.split,
                         "labels": list(e.labels), "species": list(e.species)})
        else:
            missing.append({"video_id": vid, "path": e.path, "split": e.split,
                            "file": e.source[0], "line": e.source[1]})
    if not rows:
        raise AnnotationError(cfg["videos"], None,
                              f"none of the {len(seen)} listed videos was found in this folder; "
                              f"check dataset.videos (list entries are relative to it)")
    if species is not None and sp_cfg.get("relation_from") == "train":
        train = cfg.get("train_split", "train")
        relation = training_pairs(seen.values(), train)
    warn_case_splits({r["split"] for r in rows})
    rows.sort(key=lambda r: (r["split"], r["video_id"]))
    for r in rows:
        r["shard"] = shard_of(r["video_id"], shards)
    multilabel = cfg.get("multilabel", "auto")
    if multilabel == "auto":
        multilabel = cfg["format"] in ("animal_kingdom", "animal_kingdom_species") or any(
            len(r["labels"]) != 1 for r in rows)
    return SampleSet(classes, segments, species, relation, rows, missing, bool(multilabel))


def training_pairs(entries, train: str) -> list[tuple[int, int]]:
    """The (species, class) pairs the training list annotates: each video's listed pairs where the
    list gives them (Animal Kingdom's species lists: a video of two species pairs each with its
    own actions), otherwise its species with its labels (one species a video)."""
    return sorted({p for e in entries if e.split == train
                   for p in (e.pairs or [(s, c) for s in e.species for c in e.labels])})


def listed_videos(cfg: dict) -> list[dict]:
    """Every video the annotation lists name, found in ``dataset.videos`` or not (video_id,
    path, split, present): what a plan counts before the videos are all there."""
    classes = readers.read_name_table(cfg["classes"], "class")
    names = (cfg.get("species") or {}).get("names")
    species = readers.read_name_table(names, "species") if names else None
    videos = Path(cfg["videos"])
    return [{"video_id": vid, "path": found_under(videos, e.path) or e.path, "split": e.split,
             "present": found_under(videos, e.path) is not None}
            for vid, e in unique_ids(_read_entries(cfg, classes, species)).items()]


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


def plan_splits(ds: dict, shards: int = 1) -> tuple[list[str], str | None, list[str], list[dict]]:
    """(splits that hold at least one present video, validation split or None, notes, the
    listed videos' rows), read with the same reader as the samples stage, for the workflow to
    build its DAG from."""
    if ds["format"] == "demo":
        rows = []
        splits = DEMO_SPLITS  # the demo's videos are written by a rule of the run itself
    else:
        rows = build_samples(ds, shards).rows
        splits = sorted({r["split"] for r in rows})
    val, notes = split_roles(ds, splits)
    return splits, val, notes, rows


def _ids(values) -> str:
    return " ".join(str(v) for v in values)


def write_samples(s: SampleSet, out: str | Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_tsv(out / "missing.tsv", ["video_id", "path", "split", "file", "line"],
               [[m[k] for k in ("video_id", "path", "split", "file", "line")] for m in s.missing])
    header = ["id", "name"] + (["segment"] if s.segments else [])
    write_tsv(out / "classes.tsv", header,
               [[i, n] + ([s.segments[i]] if s.segments else []) for i, n in enumerate(s.classes.names)])
    if s.species is not None:
        write_tsv(out / "species.tsv", ["id", "name"], list(enumerate(s.species.names)))
        write_tsv(out / "relation.tsv", ["species", "class"], s.relation or [])
    info = {"multilabel": s.multilabel, "n_classes": len(s.classes.names),
            "n_species": len(s.species.names) if s.species else 0,
            "segments_source": "dataset.segments" if s.segments else None,
            "splits": {sp: sum(r["split"] == sp for r in s.rows)
                       for sp in sorted({r["split"] for r in s.rows})},
            "missing": len(s.missing)}
    (out / "dataset.json").write_text(json.dumps(info, indent=2) + "\n")
    write_tsv(out / "samples.tsv", ["video_id", "path", "split", "shard", "labels", "species"],
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


def read_species(species_tsv, relation_tsv) -> tuple[list[str], list[tuple[int, int]]]:
    """Species names (species.tsv) and the (species id, class id) pairs seen together
    (relation.tsv), as the samples stage wrote them."""
    names = [r["name"] for r in read_classes(species_tsv)]
    return names, [(int(r["species"]), int(r["class"])) for r in read_classes(relation_tsv)]


def label_targets(labels: list[list[int]], n_classes: int, multilabel: bool) -> np.ndarray:
    """Training targets from the label lists of N videos: an (N, C) float32 0/1 matrix for
    multi-label sets, else (N,) int64 class ids (each video's one label)."""
    if not multilabel:
        return np.array([ids[0] for ids in labels], np.int64)
    out = np.zeros((len(labels), n_classes), np.float32)
    for i, ids in enumerate(labels):
        out[i, ids] = 1
    return out
