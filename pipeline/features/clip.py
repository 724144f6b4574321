"""Frozen CLIP frame embeddings (stage ``clip``) and the open_clip model factory.

Frames are preprocessed on the device as batched tensors, reproducing open_clip's own eval
transform (shortest-side bicubic resize, centre crop, normalise) without PIL on the hot path.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..store import FeatureWriter
from ..video import Probe, read_frames
from .common import (WeightsError, autocast, batched, count_done, decode_ahead, decode_workers,
                     sha256_of, skip_failed)

log = logging.getLogger("pipeline")
CONFIG_DIR = Path(__file__).resolve().parent.parent / "resources" / "open_clip"


def _open_clip():
    import open_clip
    if not getattr(open_clip, "_pipeline_configs_added", False):
        from ..demo_clip import register
        register()  # the demo CLIP's image tower, a timm model
        open_clip.add_model_config(CONFIG_DIR)  # the demo's tiny architectures
        open_clip._pipeline_configs_added = True
    return open_clip


def weights_identity(pretrained: str | None) -> str:
    """What the provenance records: the tag, ``sha256:<hex>`` of a local file, or ``random``."""
    if pretrained is None:
        return "random"
    if Path(pretrained).is_file():
        return "sha256:" + sha256_of(pretrained, 16)
    return pretrained


def load_clip(name: str, pretrained: str | None, device="cpu"):
    """An open_clip model (eval, frozen) by name and weights: a tag, a local file or None.

    Weights that cannot be had raise :class:`WeightsError` with what to do, not a traceback.
    """
    open_clip = _open_clip()
    if name not in open_clip.list_models():
        raise WeightsError(f"unknown open_clip model {name!r}; known: ViT-B-32, ViT-B-16, "
                           f"ViT-L-14, ... (open_clip.list_models()) or demo-tiny-ViT")
    if pretrained is None:
        log.warning("RANDOM WEIGHTS: CLIP model %s has no pretrained weights (clip.pretrained: "
                    "null). Fine for tests and the demo; features are meaningless otherwise.", name)
    elif not Path(pretrained).is_file():
        if Path(pretrained).suffix in (".pt", ".pth", ".bin", ".safetensors") or "/" in pretrained:
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
        with torch.random.fork_rng(devices=[]):
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


def _reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    import socket
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _check_download(open_clip, name: str, tag: str) -> None:
    """Fail fast (not after a minute of retries) when a tag needs a download that cannot happen."""
    from urllib.parse import urlparse
    cfg = open_clip.get_pretrained_cfg(name, tag)
    hub, url = cfg.get("hf_hub", ""), cfg.get("url", "")
    if hub:
        import huggingface_hub
        model_id, filename = hub.rstrip("/").rsplit("/", 1) if not hub.endswith("/") else (hub.rstrip("/"), "")
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        cached = any(isinstance(huggingface_hub.try_to_load_from_cache(model_id, n), str) for n in names)
        host = "huggingface.co"
    else:
        cached = bool(url) and (Path.home() / ".cache" / "clip" / Path(urlparse(url).path).name).is_file()
        host = urlparse(url).hostname or ""
    if not host or _reachable(host):
        return
    if not cached:
        raise WeightsError(
            f"CLIP weights {tag!r} for {name} are not in the local cache and {host} cannot be "
            f"reached from here. Download the checkpoint on a machine with network (open_clip "
            f"tag {tag!r}) and set clip.pretrained to the local file path")
    from huggingface_hub import constants
    constants.HF_HUB_OFFLINE = True  # use the cached file without minutes of retries


def preprocess_cfg(model) -> dict:
    open_clip = _open_clip()
    cfg = dict(open_clip.get_model_preprocess_cfg(model))
    size = cfg.get("size", 224)
    cfg["size"] = size[0] if isinstance(size, (tuple, list)) else int(size)
    cfg.setdefault("resize_mode", "shortest")
    cfg.setdefault("interpolation", "bicubic")
    if cfg["resize_mode"] not in ("shortest", "squash"):
        raise ValueError(f"resize_mode {cfg['resize_mode']!r} is not supported on the device path")
    return cfg


def crop_box(height: int, width: int, size: int, resize_mode: str = "shortest"):
    """Resized size and crop offsets exactly as torchvision's Resize(int) + CenterCrop do."""
    if resize_mode == "squash":
        return size, size, 0, 0
    short, long = (height, width) if height <= width else (width, height)
    new_long = int(size * long / short)
    new_h, new_w = (size, new_long) if height <= width else (new_long, size)
    return new_h, new_w, int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))


def resize_crop(frames: torch.Tensor, cfg: dict) -> torch.Tensor:
    """uint8 (T, H, W, 3) RGB -> uint8 (T, 3, S, S): open_clip's resize and centre crop. On CPU
    a uint8 antialiased kernel (~15x faster than float, rounds and clips like PIL), so decode
    threads can do it and only small frames travel to the device."""
    size = cfg["size"]
    x = frames.permute(0, 3, 1, 2)
    new_h, new_w, top, left = crop_box(x.shape[2], x.shape[3], size, cfg["resize_mode"])
    mode = "bicubic" if cfg["interpolation"] == "bicubic" else "bilinear"
    if (new_h, new_w) != tuple(x.shape[2:]):
        if x.device.type == "cpu":
            x = F.interpolate(x.contiguous(memory_format=torch.channels_last), size=(new_h, new_w),
                              mode=mode, antialias=True)
        else:
            x = F.interpolate(x.float(), size=(new_h, new_w), mode=mode, antialias=True,
                              align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
    return x[:, :, top:top + size, left:left + size].contiguous()


def normalise(x: torch.Tensor, cfg: dict) -> torch.Tensor:
    """uint8 (T, 3, S, S) -> float, normalised with the model's mean and std."""
    mean = torch.tensor(cfg["mean"], device=x.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(cfg["std"], device=x.device).view(1, 3, 1, 1) * 255
    return ((x.float() - mean) / std).contiguous()


def preprocess(frames: torch.Tensor, cfg: dict) -> torch.Tensor:
    """uint8 (T, H, W, 3) RGB on any device -> normalised float (T, 3, S, S) on that device."""
    return normalise(resize_crop(frames, cfg), cfg)


def batch_size_for(requested: int, device: torch.device) -> int:
    """On CPU, batches beyond 32 frames only spill the caches (ViT-B-32: 192 frames per call
    run ~25% slower than 32); GPUs take what is asked."""
    return requested if device.type == "cuda" else min(requested, 32)


def extract_clip(probes: list[Probe], out: str | Path, cfg: dict, device: torch.device,
                 progress: bool = True, sampling: dict | None = None) -> dict:
    """Embed the planned frames of ``probes`` into a clip feature shard at ``out``."""
    from tqdm import tqdm
    model = load_clip(cfg["model"], cfg["pretrained"], device)
    pcfg = preprocess_cfg(model)
    dim = model.visual.output_dim
    attrs = {"model": cfg["model"], "weights": weights_identity(cfg["pretrained"]),
             "weights_source": cfg["pretrained"], "sampling": sampling,
             "preprocessing": {k: pcfg[k] for k in ("size", "mean", "std", "interpolation",
                                                    "resize_mode")},
             "normalised": False, "embed_dim": dim}
    dtype = np.float16 if cfg["dtype"] == "float16" else np.float32
    total = sum(len(p.sampled) for p in probes)
    stats = {"videos": 0, "frames": 0, "failed": []}
    bar = tqdm(total=total, desc=f"clip {Path(out).parent.name}/{Path(out).stem}", unit="frame",
               disable=not progress, smoothing=0.1)

    def small(bgr: np.ndarray) -> np.ndarray:
        # resize and crop work per channel, so the decoded BGR frame is resized and only the
        # small crop has its channels swapped: no full-size colour conversion
        return resize_crop(torch.from_numpy(bgr)[None], pcfg)[0].flip(0).numpy()

    def load(p: Probe) -> torch.Tensor:  # on a decode thread: decode, resize, crop, pin
        x = torch.from_numpy(read_frames(p.path, p.sampled, small, colour="bgr"))
        return x.pin_memory() if device.type == "cuda" else x

    def segments():
        decoded = decode_ahead(probes, load, workers=decode_workers(cfg, device))
        for probe, x in skip_failed(decoded, stats):
            yield probe, normalise(x.to(device, non_blocking=True), pcfg)

    @torch.inference_mode()
    def encode(x):
        with autocast(device):
            return model.encode_image(x)

    start = time.perf_counter()
    with FeatureWriter(out, "clip", (dim,), dtype, attrs) as writer:
        for probe, emb in batched(segments(), encode, batch_size_for(cfg["batch_size"], device)):
            writer.add(probe.video_id, probe.sampled, probe.timestamps(), emb.astype(dtype))
            count_done(stats, bar, probe)
    bar.close()
    stats["seconds"] = time.perf_counter() - start
    return stats
