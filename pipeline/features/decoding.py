"""How the extraction stages decode: OpenCV on the CPU (``decoder: opencv``, the default), or
torchcodec (``decoder: torchcodec``), which decodes with NVDEC on the job's CUDA device.

torchcodec's frames come out as uint8 RGB tensors on the device, so CLIP's resize and crop and
flow's centre square run there. Without a CUDA device torchcodec decodes on the CPU (the same
code, which is how it is tested on a machine without a GPU). A video torchcodec cannot decode (a
codec NVDEC lacks, a broken file) goes back to OpenCV on the CPU; each reason is logged once, not
once per video.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..video import DECODE_PASSES, iter_frames

log = logging.getLogger("pipeline")

CHUNK = 32  # frames decoded per call: a long clip never sits whole in device memory
FELL_BACK: set = set()  # videos torchcodec could not decode in this process (bench reports them)


def torchcodec_decoder(device: torch.device) -> Callable | None:
    """A function ``(path, indices) -> iterator of uint8 (n, 3, H, W) RGB chunks`` on
    ``device``, in the order of ``indices``; None (logged) when torchcodec cannot be loaded."""
    try:
        from torchcodec.decoders import VideoDecoder
        # `import torchcodec` succeeds without FFmpeg; its libraries load on the first decoder,
        # so load them now: a machine that cannot is said once, not blamed on a video
        from torchcodec import _internally_replaced_utils as libs
        getattr(libs, "load_core_libraries", lambda: None)()
    except Exception as e:  # noqa: BLE001 - ImportError, or its FFmpeg libraries missing
        torchcodec_unloadable(e)
        return None
    where = str(device) if device.type == "cuda" else "cpu"
    if device.type != "cuda":
        log.info("decoder: torchcodec without a CUDA device decodes on the CPU (no NVDEC)")

    def decode(path: str, indices: list[int]):
        DECODE_PASSES[str(path)] += 1
        dec = VideoDecoder(str(path), device=where, seek_mode="exact")
        for s in range(0, len(indices), CHUNK):
            yield dec.get_frames_at(indices[s:s + CHUNK]).data
    return decode


def torchcodec_unloadable(e: Exception) -> None:
    log.warning("decoder: torchcodec asked for, but it cannot be loaded on this machine (%s); "
                "every video is decoded on the CPU with OpenCV. torchcodec needs an FFmpeg it "
                "supports (shared libraries, versions 4 to 9) and a matching torch",
                str(e).strip().splitlines()[0][:160])


def with_fallback(decode: Callable, fallback: Callable) -> Callable:
    """``decode(job)``, or ``fallback(job)`` when it raises; each kind of failure logged once.
    torchcodec that cannot load its libraries is said once and not tried again."""
    said, lock = set(), threading.Lock()

    def run(job):
        if "unloadable" in said:
            return fallback(job)
        try:
            return decode(job)
        except Exception as e:  # noqa: BLE001 - reported, then the CPU path decides
            if "Could not load libtorchcodec" in str(e):
                with lock:
                    first = "unloadable" not in said
                    said.add("unloadable")
                if first:
                    torchcodec_unloadable(e)
                return fallback(job)
            why = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
            with lock:
                first = why not in said
                said.add(why)
                FELL_BACK.add(str(getattr(job, "path", job)))
            if first:
                log.warning("torchcodec could not decode %s (%s); this and any other video failing "
                            "this way are decoded on the CPU", getattr(job, "path", job), why)
            return fallback(job)
    return run


def centre_square_tensor(frames: torch.Tensor, work: int) -> torch.Tensor:
    """uint8 (n, 3, H, W) -> uint8 (n, work, work, 3): the centre square CLIP's crop keeps,
    area-averaged down (bilinear up), as the CPU path does with OpenCV."""
    h, w = frames.shape[-2:]
    side = min(h, w)
    top, left = int(round((h - side) / 2.0)), int(round((w - side) / 2.0))
    x = frames[:, :, top:top + side, left:left + side]
    if side != work:
        mode = "area" if side > work else "bilinear"
        x = F.interpolate(x.float(), size=(work, work), mode=mode,
                          **({} if mode == "area" else {"align_corners": False}))
        x = x.round_().clamp_(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous()


def grey(squares: torch.Tensor) -> torch.Tensor:
    """uint8 (n, h, w, 3) RGB -> uint8 (n, h, w), with OpenCV's BT.601 weights."""
    y = squares.float() @ torch.tensor([0.299, 0.587, 0.114], device=squares.device)
    return y.round_().clamp_(0, 255).to(torch.uint8)


def stack(rows: list):
    """Rows of one video (numpy arrays or tensors) as one array of their kind."""
    return torch.stack(rows) if isinstance(rows[0], torch.Tensor) else np.stack(rows)


def decode_video(path: str, wanted: list[int], parts: dict, source: Callable | None = None) -> dict:
    """Decode the frames ``wanted`` (increasing) of ``path`` once and give each frame to the
    parts that need it: ``parts[name] = (indices, per_bgr_frame, per_rgb_chunk)``; returns
    ``{name: {index: row}}``. With ``source`` (a :func:`torchcodec_decoder`) frames come in
    chunks of RGB tensors on its device; without, from OpenCV one BGR frame at a time."""
    out = {name: {} for name in parts}
    if source is None:
        for i, bgr in iter_frames(path, wanted, colour="bgr"):
            for name, (indices, one, _) in parts.items():
                if i in indices:
                    out[name][i] = one(bgr)
        return out
    for start, chunk in zip(range(0, len(wanted), CHUNK), source(path, wanted)):
        ids = wanted[start:start + CHUNK]
        for name, (indices, _, many) in parts.items():
            keep = [k for k, i in enumerate(ids) if i in indices]
            if keep:
                out[name].update(zip((ids[k] for k in keep), many(chunk[keep])))
    return out


def video_decoder(decoder: str, device: torch.device, parts_of: Callable) -> Callable:
    """``decode(probe) -> {name: {index: row}}`` for a stage whose ``parts_of(probe)`` gives
    (wanted frames, parts) as :func:`decode_video` takes them; ``decoder`` is the config's."""
    def cpu(p):
        return decode_video(p.path, *parts_of(p))
    source = torchcodec_decoder(device) if decoder == "torchcodec" else None
    if source is None:
        return cpu
    return with_fallback(lambda p: decode_video(p.path, *parts_of(p), source=source), cpu)
