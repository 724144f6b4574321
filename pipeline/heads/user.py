"""A user's own head: a ``torch.nn.Module`` named ``package.module:ClassName`` or
``path/to/file.py:ClassName`` in ``heads.<name>.type`` (the contract: docs/heads.md)."""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from ..errors import PipelineError

# the trainer's keys a user head takes besides TRAIN_DEFAULTS (the model's own keys go to its
# constructor, checked there)
USER_TRAINER_DEFAULTS = {"lr": 1e-3, "weight_decay": 1e-4, "standardise": True}


class HeadTypeError(PipelineError, ValueError):
    """A head entry whose type cannot be used; the message names the entry."""


def is_user_type(head_type: str) -> bool:
    return ":" in head_type


def user_class(head_type: str, where: str = "."):
    """The class a user type names (``module:Class`` or ``file.py:Class``, a file relative to
    ``where``); HeadTypeError saying what is wrong."""
    target, _, cls_name = head_type.rpartition(":")
    before, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ beside their file
    try:
        if target.endswith(".py"):
            path = Path(where) / target if not Path(target).is_absolute() else Path(target)
            if not path.is_file():
                raise HeadTypeError(f"{path}: file not found")
            mod_name = f"user_head_{re.sub(r'[^A-Za-z0-9_]', '_', str(path.resolve()))}"
            module = sys.modules.get(mod_name)
            if module is None:
                spec = importlib.util.spec_from_file_location(mod_name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[mod_name] = module
                spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except HeadTypeError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the user's module raises on import
        raise HeadTypeError(f"cannot import {target!r} ({e.__class__.__name__}: {e})") from None
    finally:
        sys.dont_write_bytecode = before
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise HeadTypeError(f"{target!r} has no {cls_name!r}")
    import torch
    if not (inspect.isclass(cls) and issubclass(cls, torch.nn.Module)):
        raise HeadTypeError(f"{head_type} is not a torch.nn.Module class")
    bad = [s for s in getattr(cls, "streams", ()) if s not in ("rgb", "motion")] or \
        (not getattr(cls, "streams", ()) and ["(none)"])
    if bad:
        raise HeadTypeError(f"{head_type}.streams must list 'rgb' and/or 'motion'; got "
                            f"{getattr(cls, 'streams', None)!r}")
    return cls


def check_user_head(name: str, head_type: str, settings: dict, where: str = ".",
                    dims: tuple | None = None) -> None:
    """Stop a run at start when a user head cannot be imported, does not take the documented
    arguments (docs/heads.md) or, built once with the run's embedding sizes (``dims``), refuses
    its settings; naming the entry."""
    try:
        cls = user_class(head_type, where)
        declared = getattr(cls, "streams", ())
        rgb, motion = dims or (1, 1)  # as the job gives them: 0 for a stream not declared
        rgb, motion = (rgb if "rgb" in declared else 0), (motion if "motion" in declared else 0)
        kwargs = {"rgb_dim": rgb, "motion_dim": motion, "class_names": ["class 0", "class 1"],
                  "settings": dict(settings)}
        if getattr(cls, "reads_text", False):
            kwargs["class_text"] = None
        inspect.signature(cls).bind(**kwargs)
        if dims is not None:
            try:
                cls(**kwargs)
            except Exception as e:  # noqa: BLE001 - whatever the user's constructor raises
                raise HeadTypeError(f"its constructor refused the entry's settings "
                                    f"{dict(settings)!r} ({e.__class__.__name__}: {e})") from None
    except HeadTypeError as e:
        raise HeadTypeError(f"heads.{name}: type {head_type!r}: {e}") from None
    except TypeError as e:
        raise HeadTypeError(f"heads.{name}: type {head_type!r}: its constructor does not take "
                            f"the documented arguments (rgb_dim, motion_dim, class_names, "
                            f"settings{', class_text' if getattr(cls, 'reads_text', False) else ''}, "
                            f"all by keyword; docs/heads.md): {e}") from None
