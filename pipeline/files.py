"""Files: written whole or not at all (a job killed mid-write never leaves a half-written file
under the final name, where Snakemake and the next stage would take it for finished), and their
content's digest."""
from __future__ import annotations

import csv
import hashlib
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


def sha256_of(path: str | Path, limit: int | None = None) -> str:
    """The file's SHA-256 (its first ``limit`` hex digits)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:limit] if limit else h.hexdigest()


WORKFLOW = ("Snakefile", "workflow", "pipeline", "envs")  # what a project folder runs


def copy_workflow(dest, root=None) -> Path:
    """The workflow (Snakefile, rules, package, envs) copied into ``dest``, to run Snakemake
    there in isolation: the benchmarks' and the tests' throw-away projects."""
    import shutil
    root = Path(root) if root else Path(__file__).resolve().parent.parent
    dest = Path(dest)
    for name in WORKFLOW:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dest / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            shutil.copy(src, dest / name)
    return dest


def unwritable(folder) -> str | None:
    """Why files cannot be made in ``folder`` (or in the nearest folder above it that exists,
    where it would be made), or None. Looks only: an unnamed temporary file (O_TMPFILE) never
    enters the folder, and is tried where the filesystem offers it."""
    path = Path(folder).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    if not path.is_dir():
        return f"{path} is a file, not a folder"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} cannot be written (read-only, or no permission)"
    try:
        os.close(os.open(path, getattr(os, "O_TMPFILE", 0) | os.O_WRONLY))
    except OSError as e:
        import errno
        if e.errno in (errno.EPERM, errno.EACCES, errno.EROFS):
            return f"{path} cannot be written ({e.strerror})"
    return None
