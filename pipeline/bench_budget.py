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
    half_check: bool     # a flow model on CUDA: the half-precision check runs


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
    once = baseline * few * c.flow_native + (2 * half * c.flow if c.half_check else 0.0)
    warm = 2 * min(frames, 64) * (c.clip + c.flow)  # warm-up on the first video
    return repeats * per_round + once + warm


def fit_budget(c: Costs, frames: int, repeats: int, baseline: bool, few: int, half: int,
               budget: float | None, enough: int = 16) -> Choice:
    """The most frames that fit ``budget`` seconds. The stages' own figures come first: while
    fewer than ``enough`` frames fit, one repeat, then fewer baseline frames and half-precision
    pairs (8, then 2, then no pair-by-pair baseline) are tried; the step that keeps the most
    frames wins."""
    if not budget:
        return Choice(frames, repeats, few, half, estimate_s(c, frames, repeats, baseline, few, half), True)

    def most(r, f_few, f_half) -> int:
        fixed = estimate_s(c, 0, r, baseline, f_few, f_half)
        per_frame = estimate_s(c, 1, r, baseline, f_few, f_half) - fixed
        return min(frames, int((budget - fixed) / per_frame)) if budget > fixed else 0

    steps = [(repeats, few, half), (1, few, half), (1, min(few, 8), min(half, 8)),
             (1, min(few, 2), min(half, 2)), (1, 0, min(half, 2))]
    found = [(most(*step), step) for step in steps]
    good = [(n, step) for n, step in found if n >= min(frames, enough)]
    n, step = good[0] if good else max(found, key=lambda f: f[0])
    if n >= MIN_FRAMES:
        return Choice(n, *step, estimate_s(c, n, *step[:1], baseline, *step[1:]), True)
    n, step = min(frames, MIN_FRAMES), steps[-1]
    return Choice(n, *step, estimate_s(c, n, step[0], baseline, *step[1:]), False)


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
    if choice.baseline_flow_frames == 0:
        cut += "; the pair-by-pair flow baseline (and the student's) skipped: it would not fit"
    tail = (f"; budget {budget:.0f} s, estimated {choice.estimate_s:.0f} s from each model "
            f"timed on a few frames{cut}")
    if not choice.fits:
        tail += " (the fewest frames it can measure do not fit: it will run over)"
    return head + tail + "; --budget 0 measures every planned frame"
