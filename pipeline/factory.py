"""CLIP models by name and weights (an open_clip tag, a local checkpoint file, or random for
tests and the demo), with what the provenance records of them and their preprocessing.
Weights that cannot be had raise :class:`WeightsError` saying what to do, before any download
is attempted."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from .files import sha256_of
from .errors import PipelineError

log = logging.getLogger("pipeline")
CONFIG_DIR = Path(__file__).resolve().parent / "resources" / "open_clip"


class WeightsError(PipelineError, RuntimeError):
    """Model weights that cannot be had; the message says how to point at a local file."""


def is_weights_file(pretrained: str | None) -> bool:
    """Whether ``clip.pretrained`` names a local file (a path, a file name with a suffix, or a file
    that is there), not an open_clip tag (``openai``, ``laion2b_s34b_b79k``); a named file that
    does not exist is still one, and an error where it is loaded. One rule for the workflow (the
    file is a job input), the weights command (a tag is fetched) and the loaders."""
    return bool(pretrained) and bool(Path(pretrained).suffix or "/" in pretrained
                                     or Path(pretrained).is_file())


def reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether ``host`` accepts a connection (checked before a download that could not happen)."""
    import socket
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def open_clip_module():
    import open_clip
    if not getattr(open_clip, "_pipeline_configs_added", False):
        from .demo_convnet import register
        register()  # the demo CLIP's image tower, a timm model
        open_clip.add_model_config(CONFIG_DIR)  # the demo's tiny architectures
        open_clip._pipeline_configs_added = True
    return open_clip


def embed_dim(name: str) -> int | None:
    """The embedding width of open_clip model ``name``, read from its config file (open_clip's
    own and the demo's) without importing open_clip, so that planning needs no torch; a model
    open_clip knows only at run time (a hub config) is asked of open_clip itself."""
    import importlib.util
    import json
    spec = importlib.util.find_spec("open_clip")
    folders = [CONFIG_DIR] + [Path(p) / "model_configs" for p in
                              (spec.submodule_search_locations or [] if spec else [])]
    for folder in folders:
        if (folder / f"{name}.json").is_file():
            return int(json.loads((folder / f"{name}.json").read_text())["embed_dim"])
    cfg = open_clip_module().get_model_config(name)
    return int(cfg["embed_dim"]) if cfg else None


def weights_identity(pretrained: str | None) -> str:
    """What the provenance records: the tag, ``sha256:<hex>`` of a local file, or ``random``."""
    if pretrained is None:
        return "random"
    if Path(pretrained).is_file():
        return "sha256:" + sha256_of(pretrained, 16)
    return pretrained


def load_clip(name: str, pretrained: str | None, device="cpu", quiet: bool = False):
    """An open_clip model (eval, frozen) by name and weights: a tag, a local file or None
    (random; announced unless ``quiet``, for a model whose weights are loaded right after).

    Weights that cannot be had raise :class:`WeightsError` with what to do, not a traceback.
    """
    import torch
    open_clip = open_clip_module()
    if name not in open_clip.list_models():
        raise WeightsError(f"unknown open_clip model {name!r}; known: ViT-B-32, ViT-B-16, "
                           f"ViT-L-14, ... (open_clip.list_models()) or demo-tiny-ViT")
    if pretrained is None:
        if not quiet:
            log.warning("RANDOM WEIGHTS: CLIP model %s has no pretrained weights (clip.pretrained: "
                        "null). Fine for tests and the demo; features are meaningless otherwise.", name)
    elif not Path(pretrained).is_file():
        if is_weights_file(pretrained):
            raise WeightsError(f"CLIP weights file {pretrained!r} not found; give an existing "
                               f"file or an open_clip tag in clip.pretrained")
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            raise WeightsError(f"{pretrained!r} is neither a file nor a pretrained tag of {name} "
                               f"(tags: {', '.join(tags) or 'none'})")
        _check_download(open_clip, name, pretrained)
    try:
        # Random weights must be the same in every process (one per shard, plus text and the
        # student), so they are drawn from a fixed seed without touching the global RNG.
        with torch.random.fork_rng(devices=[]), _no_random_weights_note():
            torch.manual_seed(0)
            model = open_clip.create_model(name, pretrained=pretrained, device="cpu").to(device)
    except Exception as e:  # noqa: BLE001 - library errors vary (network, hub, file format)
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise WeightsError(
            f"could not load CLIP weights {pretrained!r} for {name} ({reason}). Without network, "
            f"download the checkpoint on a machine that has it and set clip.pretrained to the "
            f"local file path (open_clip_pytorch_model.bin / .safetensors)") from None
    model.eval().requires_grad_(False)
    if not hasattr(model.visual, "output_dim"):  # open_clip's timm towers do not say their width
        size = model.visual.image_size
        size = size if isinstance(size, (tuple, list)) else (size, size)
        with torch.no_grad():
            probe = model.encode_image(torch.zeros(1, 3, *size, device=next(model.parameters()).device))
        model.visual.output_dim = int(probe.shape[-1])
    return model


class _RandomWeightsNote(logging.Filter):
    def filter(self, record):
        return not str(record.msg).startswith("No pretrained weights loaded")


@contextmanager
def _no_random_weights_note():
    """open_clip notes random weights on the root logger even where trained ones are loaded
    right after (the student's skeleton); random weights that stay are announced above, loudly."""
    note = _RandomWeightsNote()
    logging.getLogger().addFilter(note)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(note)


def _check_download(open_clip, name: str, tag: str) -> None:
    """Fail fast (not after a minute of retries) when a tag needs a download that cannot happen."""
    cache = clip_cache(name, tag)
    if not cache["host"] or reachable(cache["host"]):
        return
    if not cache["cached"]:
        raise WeightsError(
            f"CLIP weights {tag!r} for {name} are not in the local cache and {cache['host']} cannot "
            f"be reached from here. Fetch them on a node with network (python -m pipeline weights "
            f"--configfile YOUR.yaml), or download the checkpoint and set clip.pretrained to the "
            f"local file path")
    from huggingface_hub import constants
    constants.HF_HUB_OFFLINE = True  # use the cached file without minutes of retries


def clip_cache(name: str, tag: str) -> dict:
    """Where open_clip keeps ``tag`` of model ``name``, and whether it is there."""
    cfg = open_clip_module().get_pretrained_cfg(name, tag)
    hub, url = cfg.get("hf_hub", ""), cfg.get("url", "")
    if hub:
        import huggingface_hub
        from huggingface_hub import constants
        model_id, filename = hub.rstrip("/").rsplit("/", 1) if not hub.endswith("/") else (hub.rstrip("/"), "")
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        found = [p for n in names if isinstance(p := huggingface_hub.try_to_load_from_cache(model_id, n), str)]
        folder = Path(constants.HF_HUB_CACHE) / ("models--" + model_id.replace("/", "--"))
        return {"where": found[0] if found else str(folder), "cached": bool(found),
                "host": "huggingface.co", "source": f"hf://{model_id}"}
    path = Path.home() / ".cache" / "clip" / Path(urlparse(url).path).name
    return {"where": str(path), "cached": path.is_file(), "host": urlparse(url).hostname or "",
            "source": url}


def preprocess_cfg(model) -> dict:
    open_clip = open_clip_module()
    cfg = dict(open_clip.get_model_preprocess_cfg(model))
    size = cfg.get("size", 224)
    cfg["size"] = size[0] if isinstance(size, (tuple, list)) else int(size)
    cfg.setdefault("resize_mode", "shortest")
    cfg.setdefault("interpolation", "bicubic")
    if cfg["resize_mode"] not in ("shortest", "squash"):
        raise ValueError(f"resize_mode {cfg['resize_mode']!r} is not supported on the device path")
    return cfg
