"""Training curves for an experiment tracker (config ``tracking``), written while training runs:
each epoch's row as it ends, as Lightning's loggers do. ``tensorboard``: event files beside the
CSV logs (tensorboard comes with ptlflow; view them with ``tensorboard --logdir results/<name>``)."""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("pipeline")


class Tracker:
    """``tracker(row)`` records one epoch's scalars (a dict with ``epoch``) under ``<tag>/``;
    ``close()`` ends the run. Inert when tracking is off or its package is missing."""

    def __init__(self, kind: str | None, folder: Path, tag: str):
        self.tag, self.kind, self._w = tag, None, None
        try:
            if kind == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter
                self._w, self.kind = SummaryWriter(log_dir=str(folder)), kind
        except ImportError as e:  # the CSV log is still there
            log.warning("tracking: %s is not installed (%s); curves are in the CSV log only", kind, e)

    def __call__(self, row: dict) -> None:
        scalars = {k: float(v) for k, v in row.items()
                   if k != "epoch" and isinstance(v, (int, float)) and v is not None}
        if self.kind == "tensorboard":
            for key, value in scalars.items():
                self._w.add_scalar(f"{self.tag}/{key}", value, int(row["epoch"]))
            self._w.flush()  # visible while the job runs

    def close(self) -> None:
        if self.kind == "tensorboard":
            self._w.close()
        self.kind = None


def tracker(folder: Path, tag: str) -> Tracker:
    """The job's tracker (``tracking`` reaches jobs as a speed setting): TensorBoard events in
    ``folder``, or nothing."""
    from .runtime import runtime_value
    kind = runtime_value("tracking")
    return Tracker(kind if kind == "tensorboard" else None, Path(folder), tag)


def track(history: list[dict], folder: Path, tag: str) -> Path | None:
    """Write a finished ``history`` at once (what a job without live curves would do); returns
    the folder when something was written."""
    t = tracker(folder, tag)
    if t.kind is None or not history:
        t.close()
        return None
    for row in history:
        t(row)
    t.close()
    return Path(folder)
