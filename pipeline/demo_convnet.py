"""The demo CLIP's image tower: a small VGG-style conv net, registered with timm as
``demo_convnet`` so that open_clip's timm tower builds it from the ``demo-tiny-CNN`` config."""
from __future__ import annotations

import torch.nn as nn


class DemoConvNet(nn.Module):
    """conv-BN-ReLU blocks with max pooling, global max pool: small shapes anywhere in a
    frame stay visible to the pooled feature (timm's trunk interface, for open_clip)."""

    def __init__(self, widths=(16, 32, 64, 64), global_pool: str = "max", **_):
        super().__init__()
        layers, c = [], 3
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.features = nn.Sequential(*layers)
        self.num_features, self.global_pool = c, global_pool
        self.default_cfg = self.pretrained_cfg = {"pool_size": None}

    def reset_classifier(self, num_classes: int = 0, global_pool: str = "max"):
        self.global_pool = global_pool or "max"

    def forward(self, x):
        x = self.features(x)
        return x.amax((2, 3)) if self.global_pool == "max" else x.mean((2, 3))


def register() -> None:
    """Make ``demo_convnet`` known to timm (idempotent)."""
    import timm
    from timm.models import register_model
    if "demo_convnet" in timm.list_models("demo_convnet"):
        return

    def demo_convnet(pretrained=False, **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if k in ("widths", "global_pool")}
        return DemoConvNet(**kwargs)
    demo_convnet.__module__ = __name__
    register_model(demo_convnet)
