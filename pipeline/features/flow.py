"""Optical flow (stage ``flow``): ptlflow models (RAFT by default) or OpenCV's DIS / Farneback.

Flow row j of a video is the flow from sampled frame t to t + step in the original timeline
(the last frames use t - step -> t). It is computed on the field of view CLIP sees (the centre
square that CLIP's shortest-side resize + centre crop keeps), at ``work_size`` pixels, then
resized to ``size`` x ``size`` with vectors in stored pixels, quantised to uint8 within
+-``bound`` and stored one frame per chunk, losslessly compressed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..compute import batched
from ..factory import WeightsError
from ..files import sha256_of
from ..recipes import FLOW_QUANTISATION, row_settings
from ..store import FeatureWriter
from ..video import Probe
from .common import decode_ahead, decode_workers, skip_failed
from .decoding import centre_square_tensor, grey, stack, video_decoder
from ..cache.reuse import shard_job

log = logging.getLogger("pipeline")


def pair_partners(sampled: list[int], frames: int, step: int) -> list[int]:
    """The second frame of each flow pair: t + step, or t - step near the end (t itself if
    the video is shorter than step, which gives zero flow)."""
    out = []
    for t in sampled:
        if t + step < frames:
            out.append(t + step)
        elif t - step >= 0:
            out.append(t - step)
        else:
            out.append(t)
    return out


def centre_square(frame: np.ndarray, work_size: int, grey_from_bgr: bool = False) -> np.ndarray:
    """(H, W, 3) -> (work, work, 3): the centre square CLIP's crop keeps, resized. With
    ``grey_from_bgr`` a decoded BGR frame gives (work, work) grey, converted after the crop and
    before the resize: a third of the pixels to convert and resize (classical flow is grey)."""
    h, w = frame.shape[:2]
    side = min(h, w)
    top, left = int(round((h - side) / 2.0)), int(round((w - side) / 2.0))
    crop = frame[top:top + side, left:left + side]
    if grey_from_bgr:
        crop = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    if side == work_size:
        return np.ascontiguousarray(crop)
    interp = cv2.INTER_AREA if side > work_size else cv2.INTER_LINEAR
    return cv2.resize(crop, (work_size, work_size), interpolation=interp)


def quantise(flow, bound: float):
    """float flow (..., 2, H, W) in stored pixels -> uint8 (numpy, or torch on any device):
    128 + round(flow / bound * 127), so 1..255 covers -bound..+bound and zero flow is stored as
    128, which :func:`dequantise` returns as exactly zero (a still pixel renders white)."""
    if isinstance(flow, torch.Tensor):
        return (torch.round(flow.float().clamp(-bound, bound) / bound * 127) + 128).to(torch.uint8)
    q = np.round(np.clip(flow, -bound, bound) / bound * 127) + 128
    return q.astype(np.uint8)


def dequantise(q, bound: float):
    """Inverse of :func:`quantise` (numpy or torch); error at most bound / 254, zero exact."""
    q = q.astype(np.float32) if isinstance(q, np.ndarray) else q.float()
    return (q - 128) / 127 * bound


def resize_flow(flow, size: int):
    """(T, 2, h, w) flow in working pixels -> (T, 2, size, size) in stored pixels (numpy, or
    torch on any device). Numpy (classical flow, on the decode threads) uses OpenCV's area
    average: as antialiased as torch's and several times cheaper on a CPU."""
    h, w = flow.shape[-2:]
    if (h, w) == (size, size):
        return flow
    if isinstance(flow, np.ndarray):
        if not len(flow):
            return np.zeros((0, 2, size, size), np.float32)
        interp = cv2.INTER_AREA if w > size else cv2.INTER_LINEAR
        flow = np.ascontiguousarray(flow, dtype=np.float32)
        out = np.empty((len(flow), 2, size, size), np.float32)
        for i, c in np.ndindex(len(flow), 2):  # plane by plane: no transposed copies
            cv2.resize(flow[i, c], (size, size), dst=out[i, c], interpolation=interp)
        return out * np.array([size / w, size / h], np.float32).reshape(1, 2, 1, 1)
    scale = torch.tensor([size / w, size / h], device=flow.device).view(1, 2, 1, 1)
    return F.interpolate(flow.float(), size=(size, size), mode="bilinear", align_corners=False,
                         antialias=w > size) * scale


# ---------------------------------------------------------------- backends

def classical_flow(first: np.ndarray, second: np.ndarray, method: str) -> np.ndarray:
    """(T, H, W) grey or (T, H, W, 3) RGB pairs -> (T, 2, H, W) float32 flow with OpenCV."""
    out = np.empty((first.shape[0], 2, *first.shape[1:3]), np.float32)
    if method == "dis":
        solver = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    elif method == "tvl1":  # Dual TV-L1 (AnimalMotionCLIP's flow), OpenCV's contrib modules
        solver = tvl1_solver()
    else:
        solver = None
    grey = (lambda f: f) if first.ndim == 3 else (lambda f: cv2.cvtColor(f, cv2.COLOR_RGB2GRAY))
    for i, (a, b) in enumerate(zip(first, second)):
        ga, gb = grey(a), grey(b)
        if solver is not None:
            f = solver.calc(ga, gb, None)
        else:
            f = cv2.calcOpticalFlowFarneback(ga, gb, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        out[i] = f.transpose(2, 0, 1)
    return out


def tvl1_solver():
    if not hasattr(cv2, "optflow"):
        raise WeightsError("flow.backend tvl1 needs OpenCV's contrib modules (cv2.optflow), which "
                           "this OpenCV lacks: pip install --force-reinstall --no-deps "
                           f"opencv-contrib-python-headless=={cv2.__version__}.*")
    return cv2.optflow.DualTVL1OpticalFlow_create()


def _ptlflow_weights(model_ref, checkpoint: str | None) -> tuple[str | None, str]:
    """(what to give ptlflow, identity for provenance); fail fast when a download can't happen."""
    if checkpoint is None:
        log.warning("RANDOM WEIGHTS: flow model has no checkpoint (flow.checkpoint: null); "
                    "fine for tests, flow is meaningless otherwise.")
        return None, "random"
    if Path(checkpoint).is_file():
        return checkpoint, "sha256:" + sha256_of(checkpoint, 16)
    tags = getattr(model_ref, "pretrained_checkpoints", {}) or {}
    if checkpoint not in tags:
        raise WeightsError(f"flow checkpoint {checkpoint!r} is neither a file nor a tag of "
                           f"{model_ref.__name__} (tags: {', '.join(tags) or 'none'})")
    from ..weights import hub_checkpoint
    url = tags[checkpoint]
    cached = hub_checkpoint(url)
    if not cached.is_file():
        from ..factory import reachable
        host = urlparse(url).hostname or ""
        if not reachable(host):
            raise WeightsError(f"flow checkpoint {checkpoint!r} is not in the local cache "
                               f"({cached}) and {host} cannot be reached from here. Fetch it on "
                               f"a node with network (python -m pipeline weights --configfile "
                               f"YOUR.yaml), or download {url} and set flow.checkpoint to the "
                               f"local file")
    return checkpoint, checkpoint


def load_flow_model(name: str, checkpoint: str | None, device):
    import ptlflow
    try:
        model_ref = ptlflow.get_model_reference(name)
    except Exception:  # noqa: BLE001
        raise WeightsError(f"unknown ptlflow model {name!r}; e.g. raft, raft_small, rapidflow "
                           f"(ptlflow.get_model_names())") from None
    ckpt, identity = _ptlflow_weights(model_ref, checkpoint)
    try:
        with torch.random.fork_rng(devices=[]):  # random weights identical in every process
            torch.manual_seed(0)
            model = ptlflow.get_model(name, ckpt_path=ckpt)
    except Exception as e:  # noqa: BLE001
        raise WeightsError(f"could not load flow checkpoint {checkpoint!r} for {name}: "
                           f"{str(e).splitlines()[0][:160]}") from None
    return model.eval().requires_grad_(False).to(device), identity


def ptlflow_pairs(model, pairs: torch.Tensor, device, half: bool) -> torch.Tensor:
    """Float flow (B, 2, H, W) on the device of uint8 RGB frame pairs (B, 2, H, W, 3); ``half``:
    float16 autocast on CUDA (bfloat16 on CPU, where autocast has no float16)."""
    pairs = pairs.to(device, non_blocking=True)
    # ptlflow expects BGR in [0, 1], shaped (B, 2, 3, H, W)
    x = pairs.permute(0, 1, 4, 2, 3).flip(2).float() / 255.0
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=bool(half)):
        return model({"images": x})["flows"][:, 0].float()


def ptlflow_flow(model, first: np.ndarray, second: np.ndarray, device, batch_size: int,
                 half: bool, finish=None) -> np.ndarray:
    """Flow of one video's frame pairs in batches; ``finish`` (a function of the device tensor)
    runs on the device before the copy back."""
    out = []
    for s in range(0, first.shape[0], batch_size):
        pairs = torch.from_numpy(np.stack([first[s:s + batch_size], second[s:s + batch_size]], 1))
        flow = ptlflow_pairs(model, pairs, device, half and device.type == "cuda")
        with torch.inference_mode():
            out.append((flow if finish is None else finish(flow)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 2) + first.shape[1:3], np.float32)


# ---------------------------------------------------------------- stage

@dataclass
class FlowComputer:
    """What the flow stage does to one video, in the pieces the stages share: ``square`` a
    decoded BGR frame and ``pairs`` of a video's squares (on a decode thread: classical flow is
    computed there), then ``rows`` (on the main thread: a flow model runs there, in batches
    across videos)."""
    cfg: dict
    attrs: dict
    square: Callable[[np.ndarray], np.ndarray]
    square_rgb: Callable[[torch.Tensor], object]
    compute: Callable
    on_device: bool

    def frames(self, p: Probe) -> list[int]:
        """The frames a video's flow needs: the planned ones and their partners."""
        return sorted(set(p.sampled) | set(pair_partners(p.sampled, p.frames, self.cfg["step"])))

    def pairs(self, p: Probe, squares: dict):
        """The video's (first, second) square stacks, always forward in time (t -> t + step, or
        t - step -> t at the end); for classical flow, already its rows."""
        partners = pair_partners(p.sampled, p.frames, self.cfg["step"])
        first = stack([squares[min(t, u)] for t, u in zip(p.sampled, partners)])
        second = stack([squares[max(t, u)] for t, u in zip(p.sampled, partners)])
        if not self.on_device:
            return self.compute(first, second)
        if isinstance(first, torch.Tensor):  # decoded on the device
            return torch.stack([first, second], 1)
        pairs = torch.from_numpy(np.stack([first, second], 1))
        return pairs.pin_memory() if torch.cuda.is_available() else pairs

    def load(self, decoder: str, device: torch.device):
        """``load(probe)`` on a decode thread: the video's pairs (or classical rows), its frames
        decoded by ``decoder``."""
        def parts(p: Probe):
            wanted = self.frames(p)
            return wanted, {"flow": (set(wanted), self.square, self.square_rgb)}
        decode = video_decoder(decoder, device, parts)
        return lambda p: self.pairs(p, decode(p)["flow"])

    def rows(self, videos):
        """``(key, pairs)`` -> ``(key, flow rows)`` in order. A flow model runs on batches of
        ``batch_size`` pairs that span videos, so short clips still fill the device."""
        if not self.on_device:
            yield from videos
            return
        for key, rows in batched(videos, self.compute, self.cfg["batch_size"]):
            yield key, rows.astype(np.uint8)

    def writer(self, out) -> FeatureWriter:
        size = self.cfg["size"]
        return FeatureWriter(out, "flow", (2, size, size), np.uint8, self.attrs,
                             compression=self.cfg.get("storage", "jpegls"))


def flow_computer(cfg: dict, device: torch.device, sampling: dict | None = None) -> FlowComputer:
    backend, size, bound, work = cfg["backend"], cfg["size"], float(cfg["bound"]), cfg["work_size"]
    if backend == "ptlflow":
        model, identity = load_flow_model(cfg["model"], cfg["checkpoint"], device)
        name = cfg["model"]

        def finish(flow):
            if not torch.isfinite(flow).all():
                raise RuntimeError(
                    f"the flow model gave NaN/inf. RAFT-style models need flow.work_size >= 128 "
                    f"(their correlation pyramid divides the frame by 64); now {work}")
            return quantise(resize_flow(flow, size), bound)

        def compute(pairs):  # on the device: a batch of pairs that may span videos
            return finish(ptlflow_pairs(model, pairs, device, cfg["half"] and device.type == "cuda"))

        def square(bgr):  # resizing works per channel: swap the channels of the small square only
            return np.ascontiguousarray(centre_square(bgr, work)[..., ::-1])

        def square_rgb(frames):
            return centre_square_tensor(frames, work)
    else:
        name, identity = backend, "opencv-" + cv2.__version__
        if backend == "tvl1":
            tvl1_solver()  # says what to install before any video is decoded

        def compute(a, b):  # on the decode threads, in parallel
            return quantise(resize_flow(classical_flow(a, b, backend), size), bound)

        def square(bgr):
            return centre_square(bgr, work, grey_from_bgr=True)

        def square_rgb(frames):  # classical flow runs on the CPU
            return grey(centre_square_tensor(frames, work)).cpu().numpy()
    half = backend == "ptlflow" and cfg["half"] and device.type == "cuda"
    attrs = {"device_type": device.type if backend == "ptlflow" else "cpu",  # OpenCV: the CPU
             "precision": "float16" if half else "float32",
             "model": name, "weights": identity, "backend": backend, "step": cfg["step"],
             "weights_source": cfg.get("checkpoint") if backend == "ptlflow" else None,
             "sampling": sampling, "batch_size": cfg["batch_size"], "half": cfg["half"],
             "bound": bound, "size": size, "work_size": work,
             "field_of_view": "centre square (CLIP shortest-side resize + centre crop)",
             "quantisation": FLOW_QUANTISATION,
             "units": "stored pixels; channel 0 = dx (right), 1 = dy (down)",
             "settings": row_settings("flow", {"flow": cfg, "sampling": sampling})}
    return FlowComputer(cfg, attrs, square, square_rgb, compute, backend == "ptlflow")


def extract_flow(probes: list[Probe], out: str | Path, cfg: dict, device: torch.device,
                 progress: bool = True, sampling: dict | None = None, decoder: str = "opencv",
                 reuse: Path | None = None) -> dict:
    """Flow rows for the planned frames of ``probes`` into a flow shard at ``out``; rows the
    ``reuse`` pool holds for a video (same file content, same settings) are copied."""
    fc = flow_computer(cfg, device, sampling)
    w = fc.writer(out)
    desc = f"flow {Path(out).parent.name}/{Path(out).stem}"
    with shard_job({"flow": w}, probes, desc, progress, reuse) as (todo, stats, done):
        decoded = decode_ahead(todo, fc.load(decoder, device), workers=decode_workers(cfg, device))
        for probe, rows in fc.rows(skip_failed(decoded, stats)):
            w.add(probe.video_id, probe.sampled, probe.timestamps(), rows, probe.fingerprint)
            done(probe)
    return stats
