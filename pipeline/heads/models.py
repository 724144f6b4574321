"""Heads on cached per-frame features. Every head maps ``(rgb, motion, mask)`` to class logits:
``rgb`` (B, T, D) CLIP frame embeddings, ``motion`` (B, T, Dm) MoCLIP embeddings of the same
frames (or None), ``mask`` (B, T) True where a row is real. Padding never changes an output:
attention ignores padded keys and pooling averages valid rows only."""
from __future__ import annotations

from importlib import import_module

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import attention, masked_mean, sinusoid
from .registry import HEAD_TYPES


class TextClassifier(nn.Module):
    """Scores against the class text, as AnimalMotionCLIP (X-CLIP) does: a learnt scale times
    the cosine of the projected representation with each class's text prototype (fixed, from
    the text bank), plus a bias."""

    def __init__(self, width: int, n_classes: int, text_dim: int):
        super().__init__()
        self.proj = nn.Linear(width, text_dim)
        self.register_buffer("protos", torch.zeros(n_classes, text_dim))
        self.logit_scale = nn.Parameter(torch.tensor(2.3))  # e^2.3 = 10: a sigmoid still learns
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        cos = F.normalize(self.proj(x), dim=-1) @ F.normalize(self.protos, dim=-1).T
        return self.logit_scale.exp() * cos + self.bias


def mlp_classifier(width: int, n_classes: int, dropout: float, variant: str = "default") -> nn.Module:
    """``reference``: ViMoCLIP's released classifier, LayerNorm-Linear(256)-GELU-Dropout-Linear."""
    if variant == "reference":
        return nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 256), nn.GELU(),
                             nn.Dropout(dropout), nn.Linear(256, n_classes))
    return nn.Sequential(nn.LayerNorm(width), nn.Dropout(dropout), nn.Linear(width, width),
                         nn.GELU(), nn.Dropout(dropout), nn.Linear(width, n_classes))


class FusionBlock(nn.Module):
    """Self-attention over RGB, cross-attention RGB -> motion, feed-forward; each residual +
    layer norm (post-norm, as in ViMoCLIP's TFAM)."""

    def __init__(self, width: int, attention_heads: int, ff_mult: int, dropout: float, cross: bool,
                 activation: str = "gelu"):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(width, attention_heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(width, attention_heads, dropout=dropout, batch_first=True) if cross else None
        act = nn.ReLU() if activation == "relu" else nn.GELU()
        self.ff = nn.Sequential(nn.Linear(width, width * ff_mult), act, nn.Dropout(dropout),
                                nn.Linear(width * ff_mult, width))
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(3 if cross else 2))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, pad, memory=None, memory_pad=None):
        x = self.norms[0](x + self.drop(attention(self.self_attn, x, x, pad)))
        if self.cross_attn is not None:
            x = self.norms[1](x + self.drop(attention(self.cross_attn, x, memory, memory_pad)))
        return self.norms[-1](x + self.drop(self.ff(x)))


class FusionHead(nn.Module):
    """TFAM (ViMoCLIP): RGB attends to itself and to motion. ``mode``: ``cross`` (default),
    ``temporal_concat`` (both sequences side by side in time, self-attention only) or
    ``channel_concat`` (per-frame concatenation projected to the width). ``variant:
    reference``: the released TFAM's ReLU feed-forward and 256-wide classifier."""

    def __init__(self, rgb_dim, motion_dim, n_classes, layers=4, attention_heads=8, width=None, ff_mult=4,
                 dropout=0.1, mode="cross", positions=False, variant="default"):
        super().__init__()
        width = width or rgb_dim
        self.mode, self.positions, self.width = mode, positions, width
        in_dim = rgb_dim + motion_dim if mode == "channel_concat" else rgb_dim
        self.rgb_in = nn.Linear(in_dim, width) if in_dim != width else nn.Identity()
        self.motion_in = nn.Linear(motion_dim, width) if motion_dim != width else nn.Identity()
        self.type_embed = nn.Parameter(torch.zeros(2, width)) if mode == "temporal_concat" else None
        act = "relu" if variant == "reference" else "gelu"
        self.blocks = nn.ModuleList(FusionBlock(width, attention_heads, ff_mult, dropout, mode == "cross", act)
                                    for _ in range(layers))
        self.classifier = mlp_classifier(width, n_classes, dropout, variant)

    def forward(self, rgb, motion, mask):
        pad = ~mask
        if self.mode == "channel_concat":
            x = self.rgb_in(torch.cat([rgb, motion], -1))
        else:
            x = self.rgb_in(rgb)
        m = self.motion_in(motion) if self.mode != "channel_concat" else None
        if self.positions:
            pe = sinusoid(x.shape[1], self.width, x.device)
            x = x + pe
            m = m + pe if m is not None else None
        if self.mode == "temporal_concat":
            x = torch.cat([x + self.type_embed[0], m + self.type_embed[1]], 1)
            pad, mask = torch.cat([pad, pad], 1), torch.cat([mask, mask], 1)
        for block in self.blocks:
            x = block(x, pad, m, pad) if self.mode == "cross" else block(x, pad)
        return self.classifier(masked_mean(x, mask))


class TemporalHead(nn.Module):
    """Single-stream baseline (``rgb_only`` / ``motion_only``): a temporal transformer over one
    stream, masked mean, MLP classifier."""

    def __init__(self, in_dim, n_classes, layers=2, attention_heads=8, width=None, ff_mult=4, dropout=0.1,
                 positions=True, stream="rgb", variant="default"):
        super().__init__()
        width = width or in_dim
        self.stream, self.positions, self.width = stream, positions, width
        self.proj = nn.Linear(in_dim, width) if in_dim != width else nn.Identity()
        act = "relu" if variant == "reference" else "gelu"
        self.blocks = nn.ModuleList(FusionBlock(width, attention_heads, ff_mult, dropout, False, act)
                                    for _ in range(layers))
        self.classifier = mlp_classifier(width, n_classes, dropout, variant)

    def forward(self, rgb, motion, mask):
        x = self.proj(rgb if self.stream == "rgb" else motion)
        if self.positions:
            x = x + sinusoid(x.shape[1], self.width, x.device)
        for block in self.blocks:
            x = block(x, ~mask)
        return self.classifier(masked_mean(x, mask))


class LinearProbe(nn.Module):
    """Mean-pooled features of one stream -> one linear layer (``rgb_linear`` / ``motion_linear``)."""

    def __init__(self, in_dim, n_classes, stream="rgb"):
        super().__init__()
        self.stream = stream
        self.norm = nn.LayerNorm(in_dim)
        self.linear = nn.Linear(in_dim, n_classes)

    def forward(self, rgb, motion, mask):
        return self.linear(self.norm(masked_mean(rgb if self.stream == "rgb" else motion, mask)))


def aggregation_steps(n_steps: int, scheme: str, k: int = 2, n_sparse: int = 3) -> list[int]:
    """Time steps whose classifier outputs are averaged: ``dense`` all, ``semi_dense`` every
    k-th, ``sparse`` n evenly spaced."""
    if scheme == "dense":
        return list(range(n_steps))
    if scheme == "semi_dense":
        return list(range(0, n_steps, k))
    if scheme == "sparse":
        n = min(n_sparse, n_steps)
        return sorted({int((i + 0.5) * n_steps / n) for i in range(n)})
    raise ValueError(f"unknown aggregation {scheme!r}; use dense, semi_dense, sparse or all")


def window_plan(n_steps: int, windows: int, scheme: str, k: int = 2, n_sparse: int = 3) -> list[list[int]]:
    """The steps each temporal window reads: the video's steps cut into ``windows`` consecutive
    windows (the middle one the main window, the others its context; fewer when the video has
    fewer steps), each thinned by the frame-selection ``scheme`` within it."""
    bounds = [round(i * n_steps / windows) for i in range(windows + 1)]
    return [[lo + s for s in aggregation_steps(hi - lo, scheme, k, n_sparse)]
            for lo, hi in zip(bounds, bounds[1:]) if hi > lo]


class InterleaveHead(nn.Module):
    """AnimalMotionCLIP on cached features: rgb_1, motion_1, rgb_2, motion_2, ... interleaved.

    ``temporal: steps``: one temporal transformer over the whole clip and a classifier on every
    time step (each rgb+motion pair), outputs averaged over the steps a scheme selects
    (``dense``, ``semi_dense``, ``sparse``, or ``all`` = the mean of the three).
    ``temporal: windows``: the clip cut into ``windows`` temporal windows (a main window and its
    contextual windows), the scheme selecting the frames of each; one transformer and one
    classifier, shared by all windows, see each window alone, and the windows' logits are
    averaged. (The published method fine-tunes X-CLIP end to end on frames and flow images;
    this head trains on frozen features.)"""

    def __init__(self, rgb_dim, motion_dim, n_classes, layers=2, attention_heads=8, width=None, ff_mult=4,
                 dropout=0.1, aggregation="dense", semi_dense_k=2, sparse_n=3, temporal="steps",
                 windows=3, classifier="mlp"):
        super().__init__()
        width = width or rgb_dim
        self.width, self.aggregation = width, aggregation
        self.k, self.n_sparse = semi_dense_k, sparse_n
        self.temporal, self.windows = temporal, windows
        self.rgb_in = nn.Linear(rgb_dim, width) if rgb_dim != width else nn.Identity()
        self.motion_in = nn.Linear(motion_dim, width)
        self.type_embed = nn.Parameter(torch.zeros(2, width))
        self.blocks = nn.ModuleList(FusionBlock(width, attention_heads, ff_mult, dropout, False) for _ in range(layers))
        # the class text's dimension is CLIP's, that of the frame embeddings
        self.step_classifier = (TextClassifier(width, n_classes, rgb_dim) if classifier == "text"
                                else mlp_classifier(width, n_classes, dropout))

    def per_step_logits(self, rgb, motion, mask):
        b, t = mask.shape
        x = torch.stack([self.rgb_in(rgb) + self.type_embed[0],
                         self.motion_in(motion) + self.type_embed[1]], 2)   # (B, T, 2, W)
        x = x + sinusoid(t, self.width, x.device).view(1, t, 1, -1)
        x = x.reshape(b, 2 * t, self.width)                                # interleaved
        pad = ~mask.repeat_interleave(2, dim=1)
        for block in self.blocks:
            x = block(x, pad)
        return self.step_classifier(x.view(b, t, 2, self.width).mean(2))   # (B, T, C)

    def window_logits(self, rgb, motion, mask, scheme):
        """(B, N, C) logits of each video's windows and (B, N) which windows exist."""
        b, t = mask.shape
        plans = [window_plan(int(mask[i].sum()), self.windows, scheme, self.k, self.n_sparse)
                 for i in range(b)]
        n, length = self.windows, max(len(w) for p in plans for w in p)
        idx = torch.zeros(b, n, length, dtype=torch.long, device=mask.device)
        valid = torch.zeros(b, n, length, dtype=torch.bool, device=mask.device)
        for i, plan in enumerate(plans):
            for j, steps in enumerate(plan):
                idx[i, j, :len(steps)] = torch.tensor(steps, device=mask.device)
                valid[i, j, :len(steps)] = True
        x = torch.stack([self.rgb_in(rgb) + self.type_embed[0],
                         self.motion_in(motion) + self.type_embed[1]], 2)   # (B, T, 2, W)
        x = x + sinusoid(t, self.width, x.device).view(1, t, 1, -1)        # where in the clip
        x = x[torch.arange(b, device=x.device)[:, None, None], idx]        # (B, N, L, 2, W)
        x = x.reshape(b * n, 2 * length, self.width)                        # each window alone
        exists = valid.any(-1)
        valid[..., 0] |= ~exists  # a window a short video lacks reads one row, then counts for nothing
        keep = valid.view(b * n, length).repeat_interleave(2, dim=1)
        for block in self.blocks:
            x = block(x, ~keep)
        logits = self.step_classifier(masked_mean(x, keep))                 # shared classifier
        return logits.view(b, n, -1), exists

    def windowed(self, rgb, motion, mask, scheme):
        logits, exists = self.window_logits(rgb, motion, mask, scheme)
        w = exists.to(logits.dtype)[..., None]
        return (logits * w).sum(1) / w.sum(1)

    def aggregate(self, logits, mask, scheme):
        """Average the logits of the scheme's steps, counted among each video's valid rows."""
        out = []
        for i in range(mask.shape[0]):
            n = int(mask[i].sum())
            steps = aggregation_steps(n, scheme, self.k, self.n_sparse)
            out.append(logits[i, steps].mean(0))
        return torch.stack(out)

    def forward(self, rgb, motion, mask):
        if self.temporal == "windows":
            schemes = ("dense", "semi_dense", "sparse") if self.aggregation == "all" else (self.aggregation,)
            return torch.stack([self.windowed(rgb, motion, mask, s) for s in schemes]).mean(0)
        logits = self.per_step_logits(rgb, motion, mask)
        if self.aggregation == "all":
            return torch.stack([self.aggregate(logits, mask, s)
                                for s in ("dense", "semi_dense", "sparse")]).mean(0)
        return self.aggregate(logits, mask, self.aggregation)


class Standardised(nn.Module):
    """Per-dimension standardisation of each stream with training-set statistics, then the head.

    Frame embeddings share a large common direction (strongly so for random or fine-tuned
    towers); removing it is what lets small heads learn from few videos."""

    def __init__(self, head: nn.Module, rgb_dim: int, motion_dim: int, enabled: bool = True):
        super().__init__()
        self.head, self.enabled = head, enabled
        for name, dim in (("rgb", rgb_dim), ("motion", motion_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(max(dim, 1)))
            self.register_buffer(f"{name}_std", torch.ones(max(dim, 1)))

    def set_stats(self, name: str, mean, std):
        if not self.enabled:  # standardise: false, the features reach the head as stored
            return
        getattr(self, f"{name}_mean").copy_(torch.as_tensor(mean))
        getattr(self, f"{name}_std").copy_(torch.as_tensor(std).clamp(min=1e-6))

    def forward(self, rgb, motion, mask):
        if rgb is not None:
            rgb = (rgb - self.rgb_mean) / self.rgb_std
        if motion is not None:
            motion = (motion - self.motion_mean) / self.motion_std
        return self.head(rgb, motion, mask)


def build_head(head, rgb_dim: int, motion_dim: int, n_classes: int, text: dict | None = None,
               multilabel: bool = True, class_names: list[str] | None = None) -> nn.Module:
    """The model of a resolved head entry (:func:`pipeline.heads.entry.resolve_head`;
    :data:`pipeline.heads.registry.HEAD_TYPES` says what builds a built-in type). ``text``
    (class prototypes etc., see :func:`prompt.build_prompt`) is used by the heads that read the
    class text."""
    params = head.model_kwargs
    if head.cls is not None:
        return _user_head(head.cls, rgb_dim, motion_dim, n_classes, params, text, class_names)
    module, _, attr = HEAD_TYPES[head.type]["model"].rpartition(".")
    build = getattr(import_module(f"{__package__}.{module}"), attr)
    if head.prompt:
        return build(rgb_dim, motion_dim, n_classes, params, text, multilabel)
    standardise = params.pop("standardise", True)
    if head.rgb and head.motion:
        head_model = build(rgb_dim, motion_dim, n_classes, **params)
        if params.get("classifier") == "text" and text is not None and text.get("protos") is not None:
            head_model.step_classifier.protos.copy_(torch.as_tensor(text["protos"], dtype=torch.float32))
    else:
        head_model = build(rgb_dim if head.rgb else motion_dim, n_classes,
                           stream="rgb" if head.rgb else "motion", **params)
    return Standardised(head_model, rgb_dim, motion_dim, standardise)


def _user_head(cls, rgb_dim: int, motion_dim: int, n_classes: int, params: dict,
               text: dict | None, class_names: list[str] | None) -> nn.Module:
    """A user's head (docs/heads.md): built with the documented keywords, standardised inputs
    unless ``standardise: false``."""
    settings = dict(params)
    standardise = settings.pop("standardise", True)
    kwargs = {"rgb_dim": rgb_dim, "motion_dim": motion_dim,
              "class_names": list(class_names or [f"class {i}" for i in range(n_classes)]),
              "settings": settings}
    if getattr(cls, "reads_text", False):
        kwargs["class_text"] = None if text is None else torch.as_tensor(text["protos"], dtype=torch.float32)
    return Standardised(cls(**kwargs), rgb_dim, motion_dim, standardise)
