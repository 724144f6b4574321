"""The bundled demo data set: synthetic clips whose action label is their *motion*.

Each clip shows one or two objects on a static textured background. Shape, colour, size,
background and position are drawn at random, independent of the label; only how an object
moves (left, right, up, down, rotating, still) says which class it is. A model that looks at
single frames therefore does poorly, one that sees motion does well. Everything is
deterministic given the seed.

The shapes are the demo's *species*: each shape performs only some motions (``RELATION``, written
as an Animal Kingdom style relation file), so a species prior has something to say.
"""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

CLASSES = ["moving left", "moving right", "moving up", "moving down", "rotating", "staying still"]
SHAPES = ("square", "triangle", "bar", "cross")
# species (shape) -> the classes it performs
RELATION = {"square": [0, 1, 2, 3, 5], "triangle": [0, 1, 4, 5], "bar": [2, 3, 4, 5],
            "cross": [0, 1, 2, 3, 4]}
SPECIES_DESCRIPTIONS = {
    "square": ["A shape with four equal sides and four right angles."],
    "triangle": ["A shape with three straight sides and three corners."],
    "bar": ["A long thin rectangle, like a stick."],
    "cross": ["Two bars crossing at right angles, like a plus sign."],
}
DESCRIPTIONS = {
    "moving left": ["An animal travels steadily towards the left side of the frame.",
                    "The body shifts leftwards while the background stays still."],
    "moving right": ["An animal travels steadily towards the right side of the frame.",
                     "The body shifts rightwards while the background stays still."],
    "moving up": ["An animal climbs or rises towards the top of the frame.",
                  "The body moves upwards across the picture."],
    "moving down": ["An animal descends towards the bottom of the frame.",
                    "The body moves downwards across the picture."],
    "rotating": ["An animal turns around on the spot.", "The body spins about its own centre."],
    "staying still": ["An animal keeps still and does not move.",
                      "Nothing in the scene changes position."],
}


def _polygon(shape: str, size: float) -> np.ndarray:
    s = size / 2
    if shape == "square":
        pts = [(-s, -s), (s, -s), (s, s), (-s, s)]
    elif shape == "triangle":
        pts = [(0, -s), (s, s), (-s, s)]
    elif shape == "bar":
        pts = [(-s, -s / 3), (s, -s / 3), (s, s / 3), (-s, s / 3)]
    else:  # cross
        t = s / 3
        pts = [(-t, -s), (t, -s), (t, -t), (s, -t), (s, t), (t, t), (t, s), (-t, s), (-t, t),
               (-s, t), (-s, -t), (-t, -t)]
    return np.asarray(pts, dtype=np.float64)


def _background(rng, height: int, width: int) -> np.ndarray:
    base = rng.integers(30, 226, size=3)
    noise = rng.normal(0, 1, size=(height // 8 + 1, width // 8 + 1, 3))
    noise = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(base + 25 * noise, 0, 255).astype(np.uint8)


def _object(rng, label: int, cfg: dict) -> dict:
    w, h, n = cfg["width"], cfg["height"], cfg["frames"]
    side = min(w, h)
    x0 = (w - side) / 2  # keep objects inside the centre square that CLIP's crop sees
    size = rng.uniform(0.18, 0.28) * side
    margin = size * 0.75
    # ~1 px/frame at 64 px, never so fast that the path leaves the square
    speed = min(rng.uniform(0.9, 1.3) * side / 64, 0.9 * (side - 2 * margin) / max(n - 1, 1))
    travel = speed * (n - 1)
    direction = {0: (-1, 0), 1: (1, 0), 2: (0, -1), 3: (0, 1)}.get(label, (0, 0))
    lo_x, hi_x = x0 + margin, x0 + side - margin
    lo_y, hi_y = margin, h - margin
    # Start so that the whole path stays inside the square.
    sx = rng.uniform(lo_x + max(0, -direction[0]) * travel, hi_x - max(0, direction[0]) * travel)
    sy = rng.uniform(lo_y + max(0, -direction[1]) * travel, hi_y - max(0, direction[1]) * travel)
    shapes = [sh for sh in SHAPES if label in RELATION[sh]]
    return {"label": label, "shape": shapes[rng.integers(len(shapes))], "size": size,
            "colour": tuple(int(c) for c in rng.integers(0, 256, size=3)),
            "start": (sx, sy), "velocity": (direction[0] * speed, direction[1] * speed),
            "angle0": rng.uniform(0, np.pi),
            "spin": (rng.choice([-1, 1]) * rng.uniform(0.12, 0.2)) if label == 4 else 0.0}


def render_clip(rng, labels: list[int], cfg: dict) -> tuple[np.ndarray, list[str]]:
    """(frames, H, W, 3) uint8 RGB frames of one clip with one object per label, and the
    objects' shapes."""
    bg = _background(rng, cfg["height"], cfg["width"])
    objects = [_object(rng, lab, cfg) for lab in labels]
    frames = []
    for t in range(cfg["frames"]):
        img = bg.copy()
        for o in objects:
            a = o["angle0"] + o["spin"] * t
            rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
            centre = np.array(o["start"]) + t * np.array(o["velocity"])
            pts = _polygon(o["shape"], o["size"]) @ rot.T + centre
            cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], o["colour"],
                         lineType=cv2.LINE_AA, shift=4)
        frames.append(img)
    return np.stack(frames), [o["shape"] for o in objects]


def write_video(path: Path, frames: np.ndarray, fps: float) -> None:
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write mp4 files here ({path}); is opencv-python installed?")
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


def demo_split(i: int) -> str:
    """The split of the demo's i-th video: 60/20/20, balanced over the primary class (small
    sets still get every split)."""
    return ("train", "val", "test", "train", "train")[(i // len(CLASSES)) % 5]


def make_demo(out: str | Path, cfg: dict) -> dict:
    """Write the demo data set under ``out``: videos/, classes.csv, annotations.csv (with
    species), species.csv, relation.tsv, descriptions.yaml, species_descriptions.yaml."""
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.get("seed", 0))
    n = cfg["n_videos"]
    rows = []
    for i in range(n):
        primary = i % len(CLASSES)
        labels = [primary]
        if rng.random() < cfg.get("two_object_fraction", 0.3):
            labels.append(int(rng.choice([c for c in range(len(CLASSES)) if c != primary])))
        split = demo_split(i)
        name = f"clip_{i:03d}.mp4"
        frames, shapes = render_clip(rng, labels, cfg)
        write_video(out / "videos" / name, frames, cfg["fps"])
        rows.append((name, split, ";".join(CLASSES[c] for c in sorted(set(labels))),
                     ";".join(sorted(set(shapes)))))
    with open(out / "classes.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([("id", "name"), *enumerate(CLASSES)])
    with open(out / "annotations.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([("video", "split", "labels", "species"), *rows])
    with open(out / "species.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([("id", "name"), *enumerate(SHAPES)])
    (out / "relation.tsv").write_text("".join(f"{sh}\t{RELATION[sh]}\t{len(RELATION[sh])}\n"
                                              for sh in SHAPES))
    import yaml
    (out / "descriptions.yaml").write_text(yaml.safe_dump(DESCRIPTIONS, sort_keys=False))
    (out / "species_descriptions.yaml").write_text(yaml.safe_dump(SPECIES_DESCRIPTIONS, sort_keys=False))
    return {"videos": n, "classes": len(CLASSES)}
