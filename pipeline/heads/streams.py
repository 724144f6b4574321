"""Which feature streams each head reads: CLIP frame embeddings (``rgb``), MoCLIP motion
embeddings (``motion``). Free of torch, so that the workflow can build its DAG from it."""
from __future__ import annotations

from .user import is_user_type, user_class

# name -> (reads rgb, reads motion)
STREAMS = {"fusion": (True, True), "interleave": (True, True), "rgb_only": (True, False),
           "motion_only": (False, True), "rgb_linear": (True, False), "motion_linear": (False, True),
           "zero_shot": (True, False), "prompt": (True, False)}
# heads scored against the text bank
PROMPT_HEADS = ("zero_shot", "prompt")


def reads_text(head_type: str, params: dict, where: str = ".") -> bool:
    """Whether a head type is scored against the class text (the prompt heads, the interleave
    head with ``classifier: text``, AnimalMotionCLIP's, and a user head that sets
    ``reads_text = True``)."""
    if is_user_type(head_type):
        return bool(getattr(user_class(head_type, where), "reads_text", False))
    return head_type in PROMPT_HEADS or params.get("classifier") == "text"


def streams(head_type: str, params: dict, where: str = ".") -> tuple[bool, bool]:
    """(reads rgb, reads motion) of a head type with these settings (the prompt head reads
    motion with ``motion: true``; a user head says which in its ``streams``)."""
    if is_user_type(head_type):
        declared = getattr(user_class(head_type, where), "streams", ())
        return "rgb" in declared, "motion" in declared
    rgb, motion = STREAMS[head_type]
    return rgb, motion or (head_type == "prompt" and bool(params.get("motion")))

