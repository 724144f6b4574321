"""The student's training rate where no bench has timed it, from its own arithmetic: the image
tower's multiply-accumulates per frame, three times a forward pass for the forward and backward,
at a stated share of one H100's dense peak in the precision it trains in. A model of the cost,
stated with its assumptions wherever it is shown; ``bench`` measures the real step."""
from __future__ import annotations

# forward multiply-accumulates of one 224-px frame through open_clip's image towers (GMAC)
TOWER_GMAC = {"ViT-B-32": 4.4, "ViT-B-16": 17.6, "ViT-L-14": 81.1}
# one H100 SXM's dense peak (TFLOPS) per precision torch trains in: float32 matmuls run as
# float32 (torch leaves TF32 off), bfloat16/float16 autocast on the tensor cores
H100_PEAK_TFLOPS = {"float32": 67.0, "bfloat16": 989.0, "float16": 989.0}
UTILISATION = 0.5  # the share of that peak a training step is assumed to reach
TRAIN_PASSES = 3  # forward and backward: about three forward passes of arithmetic


def training_precision(precision: str) -> str:
    """What ``moclip.precision`` trains in on a GPU (``auto``: bfloat16 autocast)."""
    return "bfloat16" if precision == "auto" else precision


def student_rate(model: str, precision: str) -> tuple[float | None, str]:
    """(frames/s of one training step on an H100, the statement of how it was modelled); None
    and the reason for a tower whose arithmetic is not tabled."""
    precision = training_precision(precision)
    gmac = TOWER_GMAC.get(model)
    if gmac is None:
        return None, (f"the student's training: no arithmetic tabled for {model} "
                      f"(pass --bench with a timed student_train row)")
    flops = UTILISATION * H100_PEAK_TFLOPS[precision] * 1e12
    rate = flops / (TRAIN_PASSES * 2 * gmac * 1e9)
    return rate, (f"the student's training modelled from its arithmetic: {model} {gmac} GMAC a "
                  f"frame forward, {TRAIN_PASSES}x that forward and backward, in {precision} at "
                  f"{UTILISATION:.0%} of an H100's dense peak ({H100_PEAK_TFLOPS[precision]:g} "
                  f"TFLOPS): {rate:,.0f} frames/s")
