"""The bench's time budget: how many frames it can afford on this device.

ViT-B-32 and RAFT on a CPU take seconds per frame, and the bench runs each stage, its floor
and its baseline several times: on one 30-second clip it ran past 25 minutes. Before measuring,
each model is timed on a few frames; the bench then keeps as many frames (then as few repeats,
baseline frames and half-precision pairs) as fit the budget, and says what it sampled.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

MIN_FRAMES = 2  # per video: a flow pair and a clip row


@dataclass
class Costs:
    """Seconds per frame of each model alone, timed on a few frames."""
    clip: float          # CLIP (and the student: the same tower at the same size)
    flow: float          # the flow stage's model at its working size
    flow_native: float   # the pair-by-pair baseline, at the videos' own resolution
    ptlflow: bool        # a flow model (the half-precision check runs)


@dataclass
class Choice:
    frames: int          # planned frames kept in all
    repeats: int
    baseline_flow_frames: int
    half_pairs: int
    estimate_s: float
    fits: bool


def estimate_s(c: Costs, frames: int, repeats: int, baseline: bool, few: int, half: int) -> float:
    """Seconds the bench will take: each stage, its floor and its baseline ``repeats`` times
    (clip, flow, fused extraction, the student's export), once the slow pair-by-pair baseline
    and the half-precision check."""
    per_round = frames * (c.clip * (2 + baseline) + 2 * c.flow + (c.clip + c.flow)
                          + c.clip * 2) + baseline * few * c.clip
    once = baseline * few * c.flow_native + (2 * half * c.flow if c.ptlflow else 0.0)
    warm = 2 * min(frames, 64) * (c.clip + c.flow)  # warm-up on the first video
    return repeats * per_round + once + warm


def fit_budget(c: Costs, frames: int, repeats: int, baseline: bool, few: int, half: int,
               budget: float | None) -> Choice:
    """The most frames that fit ``budget`` seconds; when even ``MIN_FRAMES`` do not, one
    repeat, then fewer baseline frames and half-precision pairs (at least 8 each)."""
    def best(r, f_few, f_half) -> int:
        fixed = estimate_s(c, 0, r, baseline, f_few, f_half)
        per_frame = estimate_s(c, 1, r, baseline, f_few, f_half) - fixed
        return min(frames, int((budget - fixed) / per_frame)) if budget > fixed else 0

    if not budget:
        return Choice(frames, repeats, few, half, estimate_s(c, frames, repeats, baseline, few, half), True)
    for r, f_few, f_half in ((repeats, few, half), (1, few, half), (1, min(few, 8), min(half, 8))):
        n = best(r, f_few, f_half)
        if n >= MIN_FRAMES:
            return Choice(n, r, f_few, f_half, estimate_s(c, n, r, baseline, f_few, f_half), True)
    n = min(frames, MIN_FRAMES)
    return Choice(n, 1, min(few, 8), min(half, 8), estimate_s(c, n, 1, baseline, min(few, 8), min(half, 8)),
                  False)


def cap_frames(probes: list, total: int) -> list:
    """The probes cut to about ``total`` planned frames, spread over the videos (the same number
    from each, from its start) rather than all from the first."""
    if total >= sum(len(p.sampled) for p in probes):
        return probes
    per = max(MIN_FRAMES, total // len(probes))
    keep = max(1, math.ceil(total / per))
    return [replace(p, sampled=p.sampled[:per]) for p in probes[:keep]]


def describe(choice: Choice, probes: list, all_frames: int, budget: float | None) -> str:
    """What the bench sampled, and why."""
    kept = sum(len(p.sampled) for p in probes)
    head = (f"sampled: {kept} of {all_frames} planned frames ({len(probes)} video(s), up to "
            f"{max(len(p.sampled) for p in probes)} each), best of {choice.repeats} run(s)")
    if not budget:
        return head + "; no time budget (--budget 0)"
    cut = "" if kept == all_frames else "; frames cut to fit"
    tail = (f"; budget {budget:.0f} s, estimated {choice.estimate_s:.0f} s from each model "
            f"timed on a few frames{cut}")
    if not choice.fits:
        tail += " (the fewest frames it can measure do not fit: it will run over)"
    return head + tail + "; --budget 0 measures every planned frame"
