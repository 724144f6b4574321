"""What every trainer (the heads and the MoCLIP student) shares: the learning-rate schedule
and the positive-class weight of the multi-label loss."""
from __future__ import annotations

import math

import numpy as np


def lr_factor(step: int, steps_per_epoch: int, epochs: int, schedule: str = "warmup_cosine",
              warmup_epochs: float = 0, floor: float = 0.0) -> float:
    """The learning rate at optimiser step ``step`` as a fraction of the base rate.

    ``warmup_cosine``: linear warm-up over ``warmup_epochs``, then a cosine per step down to
    ``floor``; ``cosine_epoch``: a cosine stepped once per epoch (``T_max`` = epochs, as
    ``CosineAnnealingLR`` stepped per epoch), down to ``floor``; ``warmup_cosine_timm``: timm's
    ``CosineLRScheduler`` as Animal-CLIP calls it (warm-up from 0, then the cosine of the whole
    run's step, so the rate drops to ~0.93 of the base when a 5-of-30-epoch warm-up ends);
    ``none``: constant.
    """
    if schedule == "none":
        return 1.0
    floor = min(1.0, floor)
    total = steps_per_epoch * epochs
    if schedule == "warmup_cosine_timm":
        warm = int(steps_per_epoch * warmup_epochs)
        if step < warm:
            return step / warm
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total))))
    if schedule == "cosine_epoch":
        t = (step // max(1, steps_per_epoch)) / max(1, epochs)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    warm = int(steps_per_epoch * warmup_epochs)
    if step < warm:
        return (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def pos_weight(targets: np.ndarray, setting, cap: float = 10.0, device="cpu"):
    """BCE positive-class weights (a tensor, or None) for multi-label ``targets`` (N, C):
    ``auto`` = negatives / positives of each class, clipped to [1, ``cap``]; a number = that
    weight for every class; None = unweighted."""
    import torch
    if setting is None:
        return None
    if setting == "auto":
        pos = targets.sum(0)
        weights = np.clip((len(targets) - pos) / np.maximum(pos, 1), 1.0, cap)
    else:
        weights = np.full(targets.shape[1], float(setting))
    return torch.tensor(weights, dtype=torch.float32, device=device)
