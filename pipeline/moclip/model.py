"""The MoCLIP motion student: CLIP's image tower reading optical flow rendered as colour-wheel
images, a zero-initialised residual adapter toward the teacher's RGB embedding, and a small
classifier on the time-pooled embedding."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..features.flow import dequantise


def _colour_wheel() -> torch.Tensor:
    """Middlebury colour wheel (55 hues: RY 15, YG 6, GC 4, CB 11, BM 13, MR 6), RGB in [0, 1]."""
    segments = [(15, (1, 0, 0), (1, 1, 0)), (6, (1, 1, 0), (0, 1, 0)), (4, (0, 1, 0), (0, 1, 1)),
                (11, (0, 1, 1), (0, 0, 1)), (13, (0, 0, 1), (1, 0, 1)), (6, (1, 0, 1), (1, 0, 0))]
    rows = []
    for n, a, b in segments:
        t = torch.arange(n, dtype=torch.float32).unsqueeze(1) / n
        rows.append(torch.tensor(a) * (1 - t) + torch.tensor(b) * t)
    return torch.cat(rows)


_WHEEL = _colour_wheel()


def flow_to_rgb(flow: torch.Tensor, bound) -> torch.Tensor:
    """(B, 2, H, W) flow in stored pixels -> (B, 3, H, W) colour-wheel image in [0, 1].

    Hue is the direction, saturation the magnitude relative to ``bound``: a number (the fixed
    quantisation bound) or a tensor broadcast over (B, H, W) (e.g. each frame's maximum).
    Zero flow is white.
    """
    wheel = _WHEEL.to(flow.device, flow.dtype)
    u, v = flow[:, 0], flow[:, 1]
    radius = torch.sqrt(u * u + v * v) / bound
    angle = torch.atan2(-v, -u) / math.pi                 # [-1, 1]
    pos = (angle + 1) / 2 * (wheel.shape[0] - 1)
    k0 = pos.floor().long().clamp(0, wheel.shape[0] - 1)
    k1 = (k0 + 1) % wheel.shape[0]
    f = (pos - k0).unsqueeze(1)
    col = wheel[k0].permute(0, 3, 1, 2) * (1 - f) + wheel[k1].permute(0, 3, 1, 2) * f
    r = radius.unsqueeze(1)
    inside = 1 - r.clamp(max=1) * (1 - col)               # saturate with magnitude
    return torch.where(r <= 1, inside, col * 0.75)


def _ptlflow_wheel() -> torch.Tensor:
    """The same 55 hues as ptlflow's ``make_colorwheel`` stores them: each transition's steps
    truncated to whole 0-255 values, then scaled to [0, 1]."""
    hues = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1], [1, 0, 1], [1, 0, 0]],
                        dtype=torch.float64) * 255
    rows = []
    for (n, a, b) in zip((15, 6, 4, 11, 13, 6), hues[:-1], hues[1:]):
        t = torch.arange(n, dtype=torch.float64).unsqueeze(1) / n
        rows.append(torch.floor(a * (1 - t) + b * t))
    return (torch.cat(rows) / 255).float()


_PTLFLOW_WHEEL = _ptlflow_wheel()


def per_frame_rgb(flow: torch.Tensor, floor: float = 1.0) -> torch.Tensor:
    """(B, 2, H, W) flow in pixels -> (B, 3, H, W) image in [0, 1], as ptlflow's
    ``flow_to_rgb(flow)`` renders it (ViMoCLIP's rendering): hue the direction of ``u + iv``,
    saturation the magnitude over the frame's largest one, that peak floored at ``floor`` pixels
    (1 in ptlflow: sub-pixel noise stays pale), zero flow white."""
    wheel = _PTLFLOW_WHEEL.to(flow.device, flow.dtype)
    wheel = torch.cat([wheel, wheel[:1]])  # cyclic, for the interpolation
    u, v = flow[:, 0], flow[:, 1]
    radius = torch.sqrt(u * u + v * v)
    peak = radius.flatten(1).amax(1).clamp(min=floor).view(-1, 1, 1)
    radius = radius / peak
    angle = torch.atan2(v, u)
    angle = torch.where(angle < 0, angle + 2 * math.pi, angle) * ((len(wheel) - 2) / (2 * math.pi))
    low, frac = angle.floor(), (angle - angle.floor()).unsqueeze(-1)
    hue = wheel[low.long()] * (1 - frac) + wheel[angle.ceil().long()] * frac  # (B, H, W, 3)
    r = radius.unsqueeze(-1)
    colour = torch.where(r <= 1, 1 - r * (1 - hue), hue / r.clamp(min=1e-12))
    return colour.permute(0, 3, 1, 2)


class Adapter(nn.Module):
    """x + alpha * MLP(x), with the MLP's output layer zero-initialised (identity at start).
    ``kind``: ``default`` (LayerNorm, then a 2x-wide MLP) or ``vimoclip`` (the released
    student's Linear(d, d)-GELU-Linear(d, d), no LayerNorm)."""

    def __init__(self, dim: int, alpha: float = 1.0, kind: str = "default"):
        super().__init__()
        if kind not in ("default", "vimoclip"):
            raise ValueError(f"adapter must be 'default' or 'vimoclip'; got {kind!r}")
        self.alpha = alpha
        layers = [nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim)] if kind == "vimoclip" else \
            [nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)]
        self.mlp = nn.Sequential(*layers)
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x):
        return x + self.alpha * self.mlp(x)


FLOW_NORMS = ("bound", "per_frame", "per_frame_work")


class MotionStudent(nn.Module):
    def __init__(self, visual: nn.Module, n_classes: int, input_size: int, mean, std,
                 bound: float, train_blocks="all", adapter_alpha: float = 1.0,
                 flow_norm: str = "bound", classifier: str = "linear", adapter: str = "default",
                 floor: float = 1.0):
        super().__init__()
        if flow_norm not in FLOW_NORMS:
            raise ValueError(f"flow_norm must be one of {', '.join(FLOW_NORMS)}; got {flow_norm!r}")
        # per_frame_work: ptlflow's 1-px floor in working pixels (``floor`` stored pixels)
        self.flow_norm, self.floor = flow_norm, (floor if flow_norm == "per_frame_work" else 1.0)
        self.visual = visual
        dim = visual.output_dim
        self.adapter = Adapter(dim, adapter_alpha, adapter)
        # mlp: the released student's Linear(d, d/2)-ReLU-Linear(d/2, C)
        self.classifier = (nn.Sequential(nn.Linear(dim, dim // 2), nn.ReLU(), nn.Linear(dim // 2, n_classes))
                           if classifier == "mlp" else nn.Linear(dim, n_classes))
        self.input_size, self.bound = input_size, float(bound)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        set_trainable(visual, train_blocks)
        self._wheel_tables: dict = {}  # per device; derived from bound, so not in the state dict

    def _wheel_table(self, device) -> torch.Tensor:
        """(3, 256 * 256): the colour of every pair of quantised (dx, dy) values. Flow arrives
        as uint8, so a lookup gives exactly flow_to_rgb's colours for a fraction of its work."""
        tables = self._wheel_tables
        if device not in tables:
            q = torch.arange(256, dtype=torch.float32, device=device)
            grid = torch.stack(torch.meshgrid(q, q, indexing="ij"))[None]  # [0] = dx, [1] = dy
            tables[device] = flow_to_rgb(dequantise(grid, self.bound), self.bound)[0].reshape(3, -1)
        return tables[device]

    def images(self, flow_uint8: torch.Tensor) -> torch.Tensor:
        """Quantised flow (N, 2, h, w) uint8 -> normalised colour-wheel images at input size.
        ``flow_norm``: saturation relative to the fixed bound (the same motion always looks
        the same) or ptlflow's ``flow_to_rgb`` (ViMoCLIP's README rendering: relative to each
        frame's largest magnitude, floored at 1 px; :func:`per_frame_rgb`)."""
        n, _, h, w = flow_uint8.shape
        if self.flow_norm != "bound":
            rgb = per_frame_rgb(dequantise(flow_uint8, self.bound), self.floor)
        else:
            index = flow_uint8[:, 0].long() * 256 + flow_uint8[:, 1].long()
            table = self._wheel_table(flow_uint8.device)
            rgb = table[:, index.flatten()].view(3, n, h, w).transpose(0, 1).contiguous()
        if rgb.shape[-1] != self.input_size:
            rgb = F.interpolate(rgb, size=(self.input_size, self.input_size), mode="bilinear",
                                align_corners=False)
        return (rgb - self.mean) / self.std

    def embed(self, flow_uint8: torch.Tensor) -> torch.Tensor:
        """Per-frame student embeddings (before the adapter)."""
        return self.visual(self.images(flow_uint8))

    def forward(self, flow_uint8: torch.Tensor, mask: torch.Tensor):
        """flow (B, T, 2, h, w), mask (B, T) -> (embeddings, adapted embeddings, logits)."""
        b, t = mask.shape
        emb = self.embed(flow_uint8.flatten(0, 1)).view(b, t, -1)
        adapted = self.adapter(emb)
        m = mask.unsqueeze(-1).to(emb.dtype)
        pooled = (emb * m).sum(1) / m.sum(1).clamp(min=1)
        return emb, adapted, self.classifier(pooled)


def set_trainable(visual: nn.Module, train_blocks) -> None:
    """``all``, ``none`` (frozen tower, adapter only) or N: the last N transformer blocks
    (plus the final norm and projection)."""
    if train_blocks == "all":
        visual.requires_grad_(True)
        return
    visual.requires_grad_(False)
    if train_blocks == "none":
        return
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is None:
        raise ValueError("moclip.train_blocks: N needs a ViT image tower (transformer.resblocks)")
    n = int(train_blocks)
    if not 0 < n <= len(blocks):
        raise ValueError(f"moclip.train_blocks: {n} is outside 1..{len(blocks)} blocks")
    for block in list(blocks)[-n:]:
        block.requires_grad_(True)
    for name in ("ln_post", "proj"):
        part = getattr(visual, name, None)
        if isinstance(part, nn.Module):
            part.requires_grad_(True)
        elif isinstance(part, nn.Parameter):
            part.requires_grad_(True)


def distill_loss(adapted: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, kind: str):
    """Mean over valid rows of 1 - cos (or MSE); finite for all-zero inputs."""
    if kind == "cosine":
        per_row = 1 - (F.normalize(adapted.float(), dim=-1, eps=1e-6)
                       * F.normalize(teacher.float(), dim=-1, eps=1e-6)).sum(-1)
    else:
        per_row = ((adapted.float() - teacher.float()) ** 2).mean(-1)
    m = mask.to(per_row.dtype)
    return (per_row * m).sum() / m.sum().clamp(min=1)
