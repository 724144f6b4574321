"""A head entry resolved once (:func:`resolve_head`): its type, its user class, the streams it
reads, whether it reads the class text, and its settings checked and filled with its type's and
the trainer's defaults. The workflow, the ``head`` job, the trainer, the model factory, ``plan``,
``predict`` and the report take this object rather than looking the name up again. Free of
torch: the workflow builds its DAG from it (a user's class is imported, and torch with it).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .registry import BUILT_IN_ONLY, HEAD_TYPES, config_trainer_keys, head_type, is_prompt, run_entries
from .user import USER_TRAINER_DEFAULTS, HeadTypeError, check_user_head, is_user_type, user_class

TRAIN_DEFAULTS = {"epochs": 40, "batch_size": 32, "frames": 16, "patience": 15, "loss": "bce",
                  "pos_weight": None, "focal_gamma": 2.0, "label_smoothing": 0.0, "seed": 0,
                  "warmup_epochs": 1, "grad_clip": 1.0, "schedule": "warmup_cosine", "min_lr": 0.0,
                  "select_by": "macro", "batch_rows": None, "betas": [0.9, 0.999],
                  "eval_scores": "logits", "weight_decay_1d": True}
# Keys the trainer (and run_head) read; everything else in a head's parameters builds its model.
TRAIN_KEYS = set(TRAIN_DEFAULTS) | {"lr", "weight_decay", "motion_source"} | set(BUILT_IN_ONLY)


@dataclass(frozen=True, eq=False)
class Head:
    """One head entry, resolved. ``given``: its settings as the config words them (its recipe);
    ``params``: those over the type's and the trainer's defaults; ``group``: the entry's name in
    the config, ``varies``: the grid and seed values its expansion varies; ``cls``: a user
    type's class (None for a built-in head)."""
    name: str
    type: str
    given: dict
    params: dict
    group: str
    varies: dict = field(default_factory=dict)
    rgb: bool = True
    motion: bool = False
    reads_text: bool = False
    cls: type | None = None

    @property
    def prompt(self) -> bool:
        """Built from the class text bank and scored against it (it can take new classes)."""
        return is_prompt(self.type)

    @property
    def motion_source(self) -> str | None:
        """Where its motion stream comes from (``student`` or ``flow_clip``); None without one."""
        return self.params.get("motion_source", "student") if self.motion else None

    @property
    def model_kwargs(self) -> dict:
        """The settings that build its model (the trainer's are left out)."""
        return {k: v for k, v in self.params.items() if k not in TRAIN_KEYS}

    @property
    def code(self) -> str | None:
        """A user's head in a file: the file (editing it re-runs the head)."""
        target = self.type.rsplit(":", 1)[0]
        return target if self.cls is not None and target.endswith(".py") else None

    def takes(self, key: str) -> bool:
        """Whether a built-in head type has the setting ``key``."""
        return self.cls is None and key in HEAD_TYPES[self.type]["defaults"]


def head_params(name: str, given: dict | None) -> dict:
    """Defaults of the head type ``name``, then the trainer's, overridden by ``given``, which is
    checked against the type's own schema: a key that does not reach this head is an error. A
    user's head takes the trainer's keys and passes the rest to its constructor."""
    from ..config import head_section
    if is_user_type(name):
        return {**TRAIN_DEFAULTS, **USER_TRAINER_DEFAULTS, **(given or {})}
    return {**TRAIN_DEFAULTS, **head_type(name)["defaults"], **head_section(name, given)}


def resolve_head(name: str, given: dict | None = None, type: str | None = None,
                 group: str | None = None, varies: dict | None = None, where=".") -> Head:
    """Entry ``name`` (``heads.<name>``) of ``type`` (default: the name) with settings ``given``,
    resolved: its user class imported (a file relative to ``where``), its settings checked.
    HeadTypeError names the entry when its type cannot be used."""
    kind = type or name
    try:
        cls = user_class(kind, where) if is_user_type(kind) else None
        if cls is None:
            head_type(kind)  # an unknown name: HeadTypeError listing the types
    except HeadTypeError as e:
        raise HeadTypeError(f"heads.{name}: type {kind!r}: {e}") from None
    params = head_params(kind, dict(given or {}))
    return Head(name, kind, dict(given or {}), params, group or name, dict(varies or {}),
                *_reads(kind, cls, params), cls)


def as_resolved(type: str, params: dict, name: str | None = None, where=".") -> Head:
    """A head of settings resolved before (a checkpoint's, as it was trained): neither checked
    again against today's schema nor filled with today's defaults."""
    cls = user_class(type, where) if is_user_type(type) else None
    return Head(name or type, type, dict(params), dict(params), name or type, {},
                *_reads(type, cls, params), cls)


def _reads(kind: str, cls, params: dict) -> tuple[bool, bool, bool]:
    """(rgb, motion, class text): what a head of this type and settings reads (the prompt head
    reads motion with ``motion: true``; a user's class says so in ``streams`` and
    ``reads_text``)."""
    if cls is not None:
        declared, text = getattr(cls, "streams", ()), bool(getattr(cls, "reads_text", False))
    else:
        spec = HEAD_TYPES[kind]
        declared = spec["streams"] + (("motion",) if params.get(spec.get("motion_setting")) else ())
        text = is_prompt(kind) or params.get("classifier") == "text"
    return "rgb" in declared, "motion" in declared, text


def run_heads(config: dict, where=".", check: bool = False) -> dict[str, Head]:
    """The heads a run trains and reports, by name (grids and seeds expanded, CLIP's zero-shot
    baseline added), each resolved once. ``check``: build every user head once with the run's
    embedding sizes, so that one that cannot be built stops the run at start."""
    heads = {name: resolve_head(name, e["settings"], e["type"], e["group"], e["varies"], where)
             for name, e in run_entries(config).items()}
    if check and any(h.cls is not None for h in heads.values()):
        from ..factory import embed_dim
        dim = embed_dim(config["clip"]["model"]) or 1  # the student's embeddings are the teacher's size
        trainer = set(config_trainer_keys()) | set(BUILT_IN_ONLY)
        for h in heads.values():
            if h.cls is not None:
                check_user_head(h.name, h.type, {k: v for k, v in h.given.items() if k not in trainer},
                                where, dims=(dim, dim))
    return heads

