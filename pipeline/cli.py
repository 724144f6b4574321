"""``python -m pipeline <command>``: the parser and the error handling. The commands themselves,
each with its flags, live in :mod:`pipeline.commands` (one module per stage group)."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from . import __version__
from .commands import COMMANDS
from .errors import PipelineError

log = logging.getLogger("pipeline")


def build_parser() -> argparse.ArgumentParser:
    import importlib
    for group in ("data", "features", "moclip", "heads", "bench"):  # each registers its commands
        importlib.import_module(f".commands.{group}", __package__)
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Motion-aware CLIP features and action classifiers for animal videos.")
    parser.add_argument("--version", action="version", version=f"pipeline {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, func, help_, args in COMMANDS:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        for names, kwargs in args:
            p.add_argument(*names, **kwargs)
    return parser


def apply_runtime(args) -> None:
    """Unset --device and --decoder take the workflow's speed-only settings (see
    :func:`pipeline.runtime.runtime_value`); the commands merge the sections' own."""
    from .runtime import runtime_value
    for key in ("device", "decoder"):
        if hasattr(args, key) and getattr(args, key) is None:
            setattr(args, key, runtime_value(key))


def os_error_advice(e: OSError) -> str:
    """What to do about an operating-system error, by what it was."""
    import errno
    return {errno.ENOSPC: "free space", errno.EDQUOT: "free space (or raise your quota)",
            errno.EACCES: "give yourself write access to it (or point the setting elsewhere)",
            errno.EPERM: "give yourself write access to it (or point the setting elsewhere)",
            errno.EROFS: "it is on a read-only filesystem: point the setting at a writable one",
            errno.ENOTDIR: "a file stands where a folder is expected: move it away",
            errno.EISDIR: "a folder stands where a file is expected: move it away",
            errno.EEXIST: "something already stands at that path: move it away",
            }.get(e.errno, "fix the device (an I/O error)" if e.errno == errno.EIO else
                  "fix what the error names")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    apply_runtime(args)
    if "PIPELINE_THREADS" in os.environ or "SLURM_CPUS_PER_TASK" in os.environ:
        from .devices import job_cpus  # a workflow job: torch's threads follow its allotment
        os.environ.setdefault("OMP_NUM_THREADS", str(job_cpus()))
    # Libraries log chatter at INFO on the root logger; ours is the "pipeline" logger.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        args.func(args)
    except PipelineError as e:  # every error for the user derives from it (pipeline/errors.py)
        files = getattr(args, "configfile", None)
        text = str(e).replace("config.yaml", ", ".join(map(str, files))) \
            if files and type(e).__name__ == "AnnotationError" else str(e)  # the user's own config
        print(f"error: {text}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `python -m pipeline cache | head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
        return 0
    except OSError as e:  # a full disk, an I/O error, a permission: say which file and what to do
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"error: {where}{e.strerror or e} while running '{args.command}'. Outputs already "
              f"finished are kept and this one was not published; {os_error_advice(e)} and "
              f"re-run.", file=sys.stderr)
        return 3
    return 0
