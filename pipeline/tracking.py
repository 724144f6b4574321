"""Training curves for an experiment tracker (config ``tracking``): TensorBoard event files
beside the CSV logs, written from a finished history (tensorboard comes with ptlflow; nothing
heavier is needed)."""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("pipeline")


def track(history: list[dict], folder: Path, tag: str) -> Path | None:
    """Write ``history`` (one dict per epoch, with ``epoch``) as scalars ``<tag>/<key>`` under
    ``folder`` when the job was given ``tracking: tensorboard``; returns the folder or None."""
    from .config import runtime_value
    if runtime_value("tracking") != "tensorboard" or not history:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # tensorboard missing: the CSV log is still there
        log.warning("tracking: tensorboard is not installed (%s); curves are in the CSV log only", e)
        return None
    folder = Path(folder)
    with SummaryWriter(log_dir=str(folder)) as w:
        for row in history:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)) and value is not None:
                    w.add_scalar(f"{tag}/{key}", value, int(row["epoch"]))
    return folder
