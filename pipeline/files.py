"""Writing a file whole or not at all: a job killed mid-write never leaves a half-written file
under the final name, where Snakemake and the next stage would take it for finished."""
from __future__ import annotations

import csv
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator


@contextmanager
def replacing(path) -> Iterator[Path]:
    """Yields ``<path>.partial`` to write; it becomes ``path`` when the block ends without an
    error, and is removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_tsv(path, header: list[str], rows: Iterable) -> None:
    with replacing(path) as partial, open(partial, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def local_path(path, workdir=None):
    """``path`` as given, or relative to ``workdir`` where a relative path is found there (a
    run's checkpoint named relative to its project folder, looked up from elsewhere)."""
    if path and workdir is not None and not Path(path).is_absolute() and (Path(workdir) / path).exists():
        return str(Path(workdir) / path)
    return path
