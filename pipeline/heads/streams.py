"""Which feature streams each head reads: CLIP frame embeddings (``rgb``), MoCLIP motion
embeddings (``motion``). Free of torch, so that the workflow can build its DAG from it."""
from __future__ import annotations

# name -> (reads rgb, reads motion)
STREAMS = {"fusion": (True, True), "interleave": (True, True), "rgb_only": (True, False),
           "motion_only": (False, True), "rgb_linear": (True, False), "motion_linear": (False, True),
           "zero_shot": (True, False), "prompt": (True, False)}
# heads scored against the text bank
PROMPT_HEADS = ("zero_shot", "prompt")


def reads_text(name: str, params: dict) -> bool:
    """Whether a head is scored against the class text (the prompt heads, and the interleave
    head with ``classifier: text``, AnimalMotionCLIP's)."""
    return name in PROMPT_HEADS or params.get("classifier") == "text"


def streams(name: str, params: dict) -> tuple[bool, bool]:
    """(reads rgb, reads motion) of a head with these parameters (the prompt head reads motion
    with ``motion: true``)."""
    rgb, motion = STREAMS[name]
    return rgb, motion or (name == "prompt" and bool(params.get("motion")))
