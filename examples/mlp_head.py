"""A head of your own: an MLP over the time-mean of the CLIP frames and the motion embeddings.

Train it beside the built-in heads by naming it in your config (docs/heads.md):

    heads:
      my_mlp:
        type: examples/mlp_head.py:MLPHead   # or my_package.heads:MLPHead, if importable
        hidden: 64                           # this class's own settings
        lr: 1.0e-3                           # the trainer's settings, as for any head
        epochs: 20
"""
import torch
from torch import nn


class MLPHead(nn.Module):
    streams = ("rgb", "motion")  # which per-frame embeddings forward() receives

    def __init__(self, *, rgb_dim, motion_dim, class_names, settings):
        super().__init__()
        unknown = set(settings) - {"hidden", "dropout"}
        if unknown:  # refuse what this head does not take, as the built-in heads do
            raise TypeError(f"MLPHead takes hidden and dropout; got {sorted(unknown)}")
        hidden = settings.get("hidden", 128)
        self.net = nn.Sequential(nn.Linear(rgb_dim + motion_dim, hidden), nn.GELU(),
                                 nn.Dropout(settings.get("dropout", 0.1)),
                                 nn.Linear(hidden, len(class_names)))

    def forward(self, rgb, motion, mask):
        """rgb (B, T, D), motion (B, T, Dm), mask (B, T) True on real rows -> logits (B, C)."""
        weight = mask.unsqueeze(-1).to(rgb.dtype)
        count = weight.sum(1).clamp(min=1)
        pooled = [(x * weight).sum(1) / count for x in (rgb, motion)]
        return self.net(torch.cat(pooled, dim=-1))
