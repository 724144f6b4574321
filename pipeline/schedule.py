"""The learning-rate schedule every trainer uses (heads and the MoCLIP student)."""
from __future__ import annotations

import math


def lr_factor(step: int, steps_per_epoch: int, epochs: int, schedule: str = "warmup_cosine",
              warmup_epochs: float = 0, floor: float = 0.0) -> float:
    """The learning rate at optimiser step ``step`` as a fraction of the base rate.

    ``warmup_cosine``: linear warm-up over ``warmup_epochs``, then a cosine per step down to
    ``floor``; ``cosine_epoch``: a cosine stepped once per epoch (``T_max`` = epochs, as
    ``CosineAnnealingLR`` stepped per epoch), down to ``floor``; ``none``: constant.
    """
    if schedule == "none":
        return 1.0
    floor = min(1.0, floor)
    if schedule == "cosine_epoch":
        t = (step // max(1, steps_per_epoch)) / max(1, epochs)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    warm = int(steps_per_epoch * warmup_epochs)
    if step < warm:
        return (step + 1) / warm
    total = steps_per_epoch * epochs
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
