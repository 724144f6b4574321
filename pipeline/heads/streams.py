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


def run_heads(config: dict) -> list[str]:
    """The heads a run trains and reports: those named in ``heads:``, and CLIP's zero-shot
    classifier, every run's baseline, named or not."""
    return list(config["heads"]) + ([] if "zero_shot" in config["heads"] else ["zero_shot"])


def motion_sources(config: dict) -> set[str]:
    """Where the run's motion streams come from: ``student`` (the distilled MoCLIP, whose
    training and export run only then) and/or ``flow_clip`` (the frozen CLIP on flow images)."""
    return {(config["heads"].get(h) or {}).get("motion_source", "student")
            for h in run_heads(config) if streams(h, config["heads"].get(h) or {})[1]}
