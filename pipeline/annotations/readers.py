"""Parsers for the public data sets' own annotation files.

Every parser reports problems as :class:`AnnotationError` naming the file and the line.
Names (classes, species) are matched ignoring case and surrounding white space, because the
public files disagree on case ("Being carried" vs "Being Carried").
"""
from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from ..errors import PipelineError

log = logging.getLogger("pipeline")


class AnnotationError(PipelineError, ValueError):
    """A problem in an annotation file, located by file and line."""

    def __init__(self, path, line: int | None, message: str):
        where = f"{path}" if line is None else f"{path}, line {line}"
        super().__init__(f"{where}: {message}")


@dataclass
class Entry:
    """One listed video: its path relative to the video folder and its label ids."""
    path: str
    split: str
    labels: tuple[int, ...]
    species: tuple[int, ...] = ()
    source: tuple[str, int] = ("", 0)
    pairs: tuple[tuple[int, int], ...] = ()  # annotated (species, label) pairs, where listed


@dataclass
class NameTable:
    """An id -> name table read from a class or species file."""
    names: list[str]
    path: str
    extra: dict[str, list[str]] = field(default_factory=dict)  # other columns, by header

    def lookup(self, name: str, where: tuple[str, int], what: str) -> int:
        key = name_key(name)
        index = self._index()
        if key not in index:
            raise AnnotationError(where[0], where[1],
                                  f"unknown {what} name {name.strip()!r}: not in {self.path} "
                                  f"(names are matched ignoring case); add it there or fix the name")
        return index[key]

    def check_id(self, value: str, where: tuple[str, int], what: str) -> int:
        try:
            i = int(value)
        except ValueError:
            raise AnnotationError(where[0], where[1], f"{what} id {value!r} is not an integer") from None
        if not 0 <= i < len(self.names):
            raise AnnotationError(where[0], where[1],
                                  f"{what} id {i} is outside {self.path}, which has ids "
                                  f"0..{len(self.names) - 1}")
        return i

    def has_name(self, name: str) -> bool:
        return name_key(name) in self._index()

    def resolve(self, token: str, where: tuple[str, int], what: str) -> int:
        """A name or an id. A name wins over an id ("2" is the class named "2" when there is
        one); a number that is no name, in a table whose names include numbers that are not
        their own ids, is ambiguous and refused."""
        if self.has_name(token):
            return self._index()[name_key(token)]
        if token.strip().isdigit():
            numeric = [n for i, n in enumerate(self.names) if n.strip().isdigit() and int(n) != i]
            if numeric:
                raise AnnotationError(where[0], where[1], f"{what} {token.strip()!r} is ambiguous: it is "
                                      f"no {what} name, and {self.path} has numeric names ("
                                      f"{', '.join(map(repr, numeric[:3]))}) that are not their ids; "
                                      f"write {what}s by name in this file")
            return self.check_id(token, where, what)
        return self.lookup(token, where, what)

    def _index(self) -> dict[str, int]:
        if not hasattr(self, "_cache"):
            self._cache = {name_key(n): i for i, n in enumerate(self.names)}
        return self._cache


def name_key(name: str) -> str:
    """A class or species name as names are matched: case and spacing ignored."""
    return " ".join(name.strip().lower().split())


def read_lines(path) -> list[tuple[int, str]]:
    """Non-blank lines with their 1-based numbers; BOM and CR line ends removed."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(path, None, "file not found; check the path in config.yaml")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise AnnotationError(path, line, f"not UTF-8 text (byte {raw[e.start]:#x}); save the file "
                              f"as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    return [(i, line.rstrip("\r")) for i, line in enumerate(text.split("\n"), 1)
            if line.strip()]


def read_name_table(path, what: str = "class") -> NameTable:
    """A CSV with a header whose first column is the id and second the name.

    Accepts the headers of all public files (``id,name``, ``label,name``, ``id,label``, and
    Animal Kingdom's segment file ``id,action,...``). Ids must be exactly 0..N-1.
    """
    lines = read_lines(path)
    if not lines:
        raise AnnotationError(path, None, f"empty {what} file")
    rows = list(csv.reader([text for _, text in lines]))
    header = [h.strip().lower() for h in rows[0]]
    if len(header) < 2 or header[0] not in ("id", "label"):
        raise AnnotationError(path, lines[0][0],
                              f"expected a header starting with 'id,name' (or 'label,name'); "
                              f"got {lines[0][1]!r}")
    by_id: dict[int, str] = {}
    extra: dict[str, dict[int, str]] = {h: {} for h in header[2:]}
    for (number, text), row in zip(lines[1:], rows[1:]):
        if len(row) < 2:
            raise AnnotationError(path, number, f"expected '<id>,<name>'; got {text!r}")
        try:
            i = int(row[0])
        except ValueError:
            raise AnnotationError(path, number, f"id {row[0]!r} is not an integer") from None
        if i in by_id:
            raise AnnotationError(path, number, f"id {i} appears twice")
        by_id[i] = row[1].strip()
        for h, value in zip(header[2:], row[2:]):
            extra[h][i] = value.strip()
    if sorted(by_id) != list(range(len(by_id))):
        raise AnnotationError(path, None, f"{what} ids must be 0..{len(by_id) - 1} without gaps")
    names = [by_id[i] for i in range(len(by_id))]
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if name_key(n) in seen:
            raise AnnotationError(path, None, f"{what} name {n!r} is given to ids {seen[name_key(n)]} "
                                  f"and {i} (names are compared ignoring case)")
        seen[name_key(n)] = i
    return NameTable(names, str(path),
                     {h: [col.get(i, "") for i in range(len(names))] for h, col in extra.items()})


def read_segments(path, classes: NameTable) -> list[str]:
    """Segment (head/middle/tail) per class from a file with columns id,name,...,segment.

    Rows are matched to classes by *name*: Animal Kingdom's own segment file numbers a few
    classes differently from its class list (e.g. ids 49/50 "Flapping its ears"/"Flapping
    tail" are swapped), so trusting its ids would give classes the wrong segment.
    """
    table = read_name_table(path, "segment")
    if "segment" not in table.extra:
        raise AnnotationError(path, 1, "no 'segment' column in the header")
    segments: list[str | None] = [None] * len(classes.names)
    renumbered = []
    for i, name in enumerate(table.names):
        c = classes.lookup(name, (str(path), i + 2), "class")
        segments[c] = table.extra["segment"][i] or None
        if c != i:
            renumbered.append(f"{name!r} (id {i} here, {c} in the class file)")
    absent = [classes.names[c] for c, seg in enumerate(segments) if seg is None]
    if absent:
        raise AnnotationError(path, None, f"no segment for {len(absent)} classes of "
                              f"{classes.path}, e.g. {absent[0]!r}")
    if renumbered:
        log.warning("%s numbers %d classes differently from %s; matched by name: %s", path,
                    len(renumbered), classes.path, "; ".join(renumbered[:4]) +
                    (" ..." if len(renumbered) > 4 else ""))
    return segments


def read_relation(path, species: NameTable, classes: NameTable) -> list[tuple[int, int]]:
    """``Species<TAB>[class ids]<TAB>count`` lines -> (species id, class id) pairs."""
    pairs = []
    for number, text in read_lines(path):
        parts = text.split("\t")
        if len(parts) < 2 or not re.fullmatch(r"\s*\[[\d,\s]*\]\s*", parts[1]):
            raise AnnotationError(path, number,
                                  f"expected '<species>\\t[<class ids>]\\t<count>'; got {text!r}")
        s = species.lookup(parts[0], (str(path), number), "species")
        for value in re.findall(r"\d+", parts[1]):
            pairs.append((s, classes.check_id(value, (str(path), number), "class")))
    return sorted(set(pairs))


def _split_ws(text: str, number: int, path, n_min: int, n_max: int | None, form: str) -> list[str]:
    parts = text.split()
    if len(parts) < n_min or (n_max is not None and len(parts) > n_max):
        raise AnnotationError(path, number, f"expected '{form}'; got {text.strip()!r}")
    return parts


def read_animal_kingdom(path, split: str, classes: NameTable) -> list[Entry]:
    """``<video file> <label id> ...``, whitespace separated, possibly left-padded."""
    entries = []
    for number, text in read_lines(path):
        where = (str(path), number)
        video, *ids = _split_ws(text, number, path, 2, None, "<video file> <label id> ...")
        labels = tuple(sorted({classes.check_id(v, where, "label") for v in ids}))
        entries.append(Entry(video, split, labels, (), where))
    return entries


_QUOTED = r"""(?:'(.*?)'|"(.*?)")"""
_PAIR = re.compile(rf"\(\s*{_QUOTED}\s*,\s*{_QUOTED}\s*\)")
_PAIR_LIST = re.compile(rf"\[\s*{_PAIR.pattern}(?:\s*,\s*{_PAIR.pattern})*\s*\]")


def parse_pairs(text: str) -> list[tuple[str, str]] | None:
    """``[('Species', 'Action'), ...]`` as written by Python's repr, and also as found in the
    public files, where a name with an apostrophe is left inside single quotes
    (``('Russell's Viper', 'Keeping still')``), so ``eval`` cannot read it."""
    text = text.strip()
    if not _PAIR_LIST.fullmatch(text):
        return None
    return [(m.group(1) if m.group(1) is not None else m.group(2),
             m.group(3) if m.group(3) is not None else m.group(4)) for m in _PAIR.finditer(text)]


def read_animal_kingdom_species(path, split: str, classes: NameTable,
                                species: NameTable) -> list[Entry]:
    """``VIDEO.mp4<TAB>[('Species', 'Action'), ...]``."""
    entries = []
    for number, text in read_lines(path):
        where = (str(path), number)
        video, _, pairs_text = text.partition("\t")
        pairs = parse_pairs(pairs_text)
        if not video.strip() or not pairs:
            raise AnnotationError(path, number, "expected "
                                  "\"VIDEO.mp4<TAB>[('Species', 'Action'), ...]\"; got "
                                  f"{text[:120]!r}")
        ids = sorted({(species.lookup(s, where, "species"), classes.lookup(a, where, "action"))
                      for s, a in pairs})
        labels = tuple(sorted({c for _, c in ids}))
        sp = tuple(sorted({s for s, _ in ids}))
        entries.append(Entry(video.strip(), split, labels, sp, where, tuple(ids)))
    return entries


def read_mammalnet(path, split: str, classes: NameTable, species: NameTable | None) -> list[Entry]:
    """``<video path> <label id> [<genus id>]``, space separated."""
    return _read_id_lines(path, split, classes, species, "<video path> <label id> [<genus id>]",
                          ("label", "genus"), species_without_file="refuse")


def read_lote(path, split: str, classes: NameTable, species: NameTable | None) -> list[Entry]:
    """``<Behaviour/Video.avi> <action id> <species id>`` (CRLF line ends); without a species
    file the species ids are not used."""
    return _read_id_lines(path, split, classes, species, "<Behaviour/Video.avi> <action id> <species id>",
                          ("action", "species"), species_without_file="ignore")


def _read_id_lines(path, split, classes, species, form: str, words: tuple[str, str],
                   species_without_file: str) -> list[Entry]:
    """Lines of ``<video path> <class id> [<species id>]``; ``words`` name the two ids in
    messages; a species id with no species file is refused or ignored."""
    entries = []
    for number, text in read_lines(path):
        where = (str(path), number)
        parts = _split_ws(text, number, path, 2, 3, form)
        label = classes.check_id(parts[1], where, words[0])
        sp = ()
        if len(parts) == 3 and species is not None:
            sp = (species.check_id(parts[2], where, words[1]),)
        elif len(parts) == 3 and species_without_file == "refuse":
            raise AnnotationError(path, number, f"this line has a {words[1]} id but the config "
                                  "gives no species file (dataset.species.names)")
        entries.append(Entry(parts[0], split, (label,), sp, where))
    return entries


def read_csv_annotations(path, classes: NameTable, species: NameTable | None,
                         ignore_species: bool = False) -> list[Entry]:
    """``video,split,labels[,species]``; labels (and species) separated by ';', by name or id."""
    lines = read_lines(path)
    if not lines:
        raise AnnotationError(path, None, "empty annotation file")
    rows = list(csv.reader([t for _, t in lines]))
    header = [h.strip().lower() for h in rows[0]]
    for required in ("video", "split", "labels"):
        if required not in header:
            raise AnnotationError(path, lines[0][0], f"header needs the columns video,split,labels "
                                  f"(and optionally species); got {lines[0][1]!r}")
    col = {h: i for i, h in enumerate(header)}

    def ids(value: str, table: NameTable, where, what) -> tuple[int, ...]:
        out = set()
        for item in filter(None, (v.strip() for v in value.split(";"))):
            out.add(table.resolve(item, where, what))
        return tuple(sorted(out))

    entries = []
    for (number, text), row in zip(lines[1:], rows[1:]):
        where = (str(path), number)
        if len(row) <= max(col["video"], col["split"], col["labels"]):
            raise AnnotationError(path, number, f"expected {len(header)} columns; got {text!r}")
        labels = ids(row[col["labels"]], classes, where, "label")
        if not labels:
            raise AnnotationError(path, number, "no label given")
        sp = ()
        if "species" in col and col["species"] < len(row) and row[col["species"]].strip() \
                and not ignore_species:
            if species is None:
                raise AnnotationError(path, number, "a species is given but the config has no "
                                      "species file (dataset.species.names)")
            sp = ids(row[col["species"]], species, where, "species")
        split = row[col["split"]].strip()
        if not split:
            raise AnnotationError(path, number, "empty split")
        entries.append(Entry(row[col["video"]].strip(), split, labels, sp, where))
    return entries
