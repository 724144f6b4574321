"""A tiny CLIP that knows the demo's world (``python -m pipeline demo-clip``).

The demo's CLIP is trained here, contrastively with open_clip's own loss, on single frames of
the demo's renderer and captions that say what one frame shows: shape, colour, background and
position. No caption mentions motion, which one frame cannot show; so zero-shot *species*
(shapes) works and zero-shot *action* stays near chance, as with real CLIP on animal behaviour.
The result is an ordinary open_clip checkpoint that the demo config loads through
``clip.pretrained: <file>``, the path users take for downloaded checkpoints.

The image tower is a small VGG-style conv net (:mod:`pipeline.demo_convnet`, used through
open_clip's timm tower): on 2 CPU cores it learns the shapes in about a minute, where
a ViT of the same cost, trained from scratch, does not.
"""
from __future__ import annotations

import colorsys
import logging
import time

import numpy as np
import torch

from . import demo
from .files import replacing

log = logging.getLogger("pipeline")
MODEL = "demo-tiny-CNN"
TRAIN_THREADS = 2


# ------------------------------------------------------------------ captions of one frame

def colour_name(rgb) -> str:
    r, g, b = (c / 255 for c in rgb)
    h, s, v = colorsys.rgb_to_hsv(r, g, b)
    if v < 0.25:
        return "black"
    if s < 0.25:
        return "white" if v > 0.8 else "grey"
    hue = h * 360
    for limit, name in ((15, "red"), (45, "orange"), (70, "yellow"), (160, "green"), (200, "cyan"),
                        (255, "blue"), (290, "purple"), (335, "pink"), (361, "red")):
        if hue < limit:
            return name
    return "red"


def position_name(x: float, y: float, size: int) -> str:
    col = ("left", "", "right")[min(2, int(3 * x / size))]
    row = ("top", "", "bottom")[min(2, int(3 * y / size))]
    return f"{row} {col}".strip() or "centre"


# Short captions name the shape only; detailed ones add colour, position and background. A
# batch of detailed captions can be told apart by colour and position alone, which a tiny model
# learns first and then never needs the shape; so training starts with short captions and
# brings in detailed ones as it goes (a curriculum).
SHORT = ("a {shape}", "a photo of a {shape}", "a video of a {shape}")
DETAILED = ("a {colour} {shape}", "a {colour} {shape} in the {position}",
            "a {shape} on a {background} background",
            "a {colour} {shape} in the {position} on a {background} background")


def frame_and_caption(rng, size: int, detail: float = 0.5) -> tuple[np.ndarray, str, list[str]]:
    """One square frame of the demo's world (as CLIP sees it), a caption of what it shows (a
    detailed one with probability ``detail``) and the shapes in it."""
    import cv2

    from .prompts import fill
    n_objects = 2 if rng.random() < 0.3 else 1
    labels = list(rng.choice(len(demo.CLASSES), n_objects, replace=False))
    cfg = {"width": size, "height": size, "frames": 1}
    bg = demo._background(rng, size, size)
    objects = [demo._object(rng, int(lab), cfg) for lab in labels]
    t = int(rng.integers(0, 24))  # anywhere along its path, like a frame of a clip
    img = bg.copy()
    parts = []
    for o in objects:
        a = o["angle0"] + o["spin"] * t
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        centre = np.clip(np.array(o["start"]) + t * np.array(o["velocity"]), 0, size - 1)
        pts = demo._polygon(o["shape"], o["size"]) @ rot.T + centre
        cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], o["colour"], lineType=cv2.LINE_AA, shift=4)
        words = {"shape": o["shape"], "colour": colour_name(o["colour"]),
                 "background": colour_name(bg.reshape(-1, 3).mean(0)),
                 "position": position_name(*centre, size)}
        kind = rng.random()
        if kind < 0.1:
            parts.append(demo.SPECIES_DESCRIPTIONS[o["shape"]][0].rstrip("."))
        else:
            templates = DETAILED if kind < 0.1 + 0.9 * detail else SHORT
            parts.append(fill(templates[int(rng.integers(len(templates)))], **words))
    return img, " and ".join(parts), [o["shape"] for o in objects]


# ------------------------------------------------------------------ training

def train_demo_clip(out, cfg: dict, progress: bool = True) -> dict:
    """Train :data:`MODEL` on ``cfg["steps"]`` batches of fresh frames (seeded) and write an
    open_clip checkpoint (a state dict) to ``out``. Returns shape accuracy on held-out frames."""
    from .factory import open_clip_module
    open_clip = open_clip_module()
    # Seeded means the same weights from the rule, the command and the tests: the float sums of
    # a CPU step depend on the thread count, so it is fixed (the rule asks for 2 cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(TRAIN_THREADS)
    try:
        return _train(out, cfg, progress, open_clip)
    finally:
        torch.set_num_threads(threads)


def _train(out, cfg: dict, progress: bool, open_clip) -> dict:
    from tqdm import tqdm

    from .factory import preprocess_cfg
    from .features.clip import normalise_pixels
    torch.manual_seed(cfg["seed"])
    rng = np.random.default_rng(cfg["seed"])
    model = open_clip.create_model(MODEL, pretrained=None)
    tokenizer = open_clip.get_tokenizer(MODEL)
    pcfg = preprocess_cfg(model)
    size = pcfg["size"]
    loss_fn = open_clip.loss.ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.05)
    steps, bs = cfg["steps"], cfg["batch_size"]
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg["lr"], total_steps=steps, pct_start=0.1)

    def batch(n, detail):
        pairs = [frame_and_caption(rng, size, detail) for _ in range(n)]
        x = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).contiguous()
        return normalise_pixels(x, pcfg), tokenizer([p[1] for p in pairs])

    start = time.perf_counter()
    model.train()
    bar = tqdm(range(steps), desc="demo CLIP", disable=not progress)
    for step in bar:
        images, texts = batch(bs, cfg["detail"] * max(0.0, 2 * step / steps - 0.5))
        image_f, text_f, scale = model(images, texts)[:3]
        loss = loss_fn(image_f, text_f, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    accuracy = shape_accuracy(model, tokenizer, pcfg, np.random.default_rng(cfg["seed"] + 1))
    with replacing(out) as partial:
        torch.save(model.state_dict(), partial)
    return {"steps": steps, "seconds": time.perf_counter() - start, "shape_accuracy": accuracy,
            "loss": loss.item()}


@torch.no_grad()
def shape_accuracy(model, tokenizer, pcfg, rng, n: int = 400) -> float:
    """Zero-shot shape accuracy on held-out single-object frames, prompts "a photo of a {shape}"."""
    import torch.nn.functional as F

    from .features.clip import normalise_pixels
    frames, truth = [], []
    while len(frames) < n:
        img, _, shapes = frame_and_caption(rng, pcfg["size"])
        if len(shapes) == 1:
            frames.append(img)
            truth.append(demo.SHAPES.index(shapes[0]))
    x = normalise_pixels(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous(), pcfg)
    image = F.normalize(model.encode_image(x), dim=-1)
    text = F.normalize(model.encode_text(tokenizer([f"a photo of a {s}" for s in demo.SHAPES])), dim=-1)
    return float(((image @ text.T).argmax(1).numpy() == np.array(truth)).mean())
