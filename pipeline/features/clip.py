"""Frozen CLIP frame embeddings (stage ``clip``); the models come from :mod:`pipeline.factory`.

Frames are preprocessed on the device as batched tensors, reproducing open_clip's own eval
transform (shortest-side bicubic resize, centre crop, normalise) without PIL on the hot path.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..compute import batched, compute_precision, precision_context
from ..recipes import row_settings
from ..factory import load_clip, preprocess_cfg, weights_identity
from ..store import FeatureWriter
from ..video import Probe
from .common import decode_ahead, decode_workers, skip_failed
from .decoding import stack, video_decoder
from ..cache.reuse import shard_job

log = logging.getLogger("pipeline")


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


def normalise_pixels(x: torch.Tensor, cfg: dict) -> torch.Tensor:
    """uint8 (T, 3, S, S) -> float, normalised with the model's mean and std."""
    mean = torch.tensor(cfg["mean"], device=x.device).view(1, 3, 1, 1) * 255
    std = torch.tensor(cfg["std"], device=x.device).view(1, 3, 1, 1) * 255
    return ((x.float() - mean) / std).contiguous()


def preprocess(frames: torch.Tensor, cfg: dict) -> torch.Tensor:
    """uint8 (T, H, W, 3) RGB on any device -> normalised float (T, 3, S, S) on that device."""
    return normalise_pixels(resize_crop(frames, cfg), cfg)


def batch_size_for(requested: int, device: torch.device) -> int:
    """On CPU, batches beyond 32 frames only spill the caches (ViT-B-32: 192 frames per call
    run ~25% slower than 32); GPUs take what is asked."""
    return requested if device.type == "cuda" else min(requested, 32)


@dataclass
class ClipEncoder:
    """What the clip stage does to one video, in the pieces the stages share: ``shrink`` a
    decoded BGR frame (on a decode thread), ``embed`` videos' rows in batches across videos."""
    model: torch.nn.Module
    pcfg: dict
    attrs: dict
    dim: int
    dtype: type
    device: torch.device
    batch_size: int
    precision: str = "float32"

    def shrink(self, bgr: np.ndarray) -> np.ndarray:
        # resize and crop work per channel, so the decoded BGR frame is resized and only the
        # small crop has its channels swapped: no full-size colour conversion
        return resize_crop(torch.from_numpy(bgr)[None], self.pcfg)[0].flip(0).numpy()

    def shrink_rgb(self, frames: torch.Tensor) -> torch.Tensor:
        """The same for decoded uint8 (n, 3, H, W) RGB tensors, on their device."""
        return resize_crop(frames.permute(0, 2, 3, 1), self.pcfg)

    def pin(self, crops) -> torch.Tensor:
        x = torch.from_numpy(crops) if isinstance(crops, np.ndarray) else crops
        return x.pin_memory() if self.device.type == "cuda" and x.device.type == "cpu" else x

    def load(self, decoder: str):
        """``load(probe)`` on a decode thread: the video's planned crops, decoded by ``decoder``."""
        decode = video_decoder(decoder, self.device, lambda p: (
            sorted(set(p.sampled)), {"clip": (set(p.sampled), self.shrink, self.shrink_rgb)}))

        def load(p: Probe):
            rows = decode(p)["clip"]
            return self.pin(stack([rows[i] for i in p.sampled]))
        return load

    def embed(self, videos):
        """``(probe, uint8 crops)`` -> ``(probe, embeddings)`` in order, batched across videos."""
        @torch.inference_mode()
        def encode(x):
            with precision_context(self.precision, self.device):
                return self.model.encode_image(x)

        rows = ((p, normalise_pixels(x.to(self.device, non_blocking=True), self.pcfg)) for p, x in videos)
        for probe, emb in batched(rows, encode, self.batch_size):
            yield probe, emb.astype(self.dtype)


def clip_encoder(cfg: dict, device: torch.device, sampling: dict | None = None) -> ClipEncoder:
    model = load_clip(cfg["model"], cfg["pretrained"], device)
    pcfg = preprocess_cfg(model)
    dim = model.visual.output_dim
    attrs = {"model": cfg["model"], "weights": weights_identity(cfg["pretrained"]),
             "weights_source": cfg["pretrained"], "sampling": sampling,
             "preprocessing": {k: pcfg[k] for k in ("size", "mean", "std", "interpolation",
                                                    "resize_mode")},
             "normalised": False, "embed_dim": dim,
             "settings": row_settings("clip", {"clip": cfg, "sampling": sampling})}
    precision = compute_precision(cfg.get("precision", "auto"), device)
    # provenance and part of the settings: rows of another device or precision are not reused
    attrs.update(device_type=device.type, precision=precision)
    dtype = np.float16 if cfg["dtype"] == "float16" else np.float32
    return ClipEncoder(model, pcfg, attrs, dim, dtype, device, batch_size_for(cfg["batch_size"], device),
                       precision)


def clip_writer(out, enc: ClipEncoder) -> FeatureWriter:
    return FeatureWriter(out, "clip", (enc.dim,), enc.dtype, enc.attrs)


def extract_clip(probes: list[Probe], out: str | Path, cfg: dict, device: torch.device,
                 progress: bool = True, sampling: dict | None = None, decoder: str = "opencv",
                 reuse: Path | None = None) -> dict:
    """Embed the planned frames of ``probes`` into a clip feature shard at ``out``; rows the
    ``reuse`` pool holds for a video (same file content, same settings) are copied."""
    enc = clip_encoder(cfg, device, sampling)
    writer = clip_writer(out, enc)
    desc = f"clip {Path(out).parent.name}/{Path(out).stem}"
    with shard_job({"clip": writer}, probes, desc, progress, reuse) as (todo, stats, done):
        decoded = decode_ahead(todo, enc.load(decoder), workers=decode_workers(cfg, device))
        for probe, emb in enc.embed(skip_failed(decoded, stats)):
            writer.add(probe.video_id, probe.sampled, probe.timestamps(), emb, probe.fingerprint)
            done(probe)
    return stats
