"""Video probing, frame sampling plans and the one decoder every later stage uses.

Container headers lie about frame counts, so probing decodes the whole video (``grab`` only,
no colour conversion) and counts what really comes out. A file is called truncated only on
evidence: a frame count the container really stores (the MP4/MOV sample table) that decoding
falls short of, or a decode error. An estimate (duration x fps of an mkv with a pause, an AVI
header) that decoding falls short of is not evidence.
"""
from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

log = logging.getLogger("pipeline")

# A file that announces N frames but yields fewer than this share of them broke mid-way.
TRUNCATION_TOLERANCE = 0.9
MAX_PIXELS = 8192 * 8192
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass
class Probe:
    video_id: str
    path: str
    readable: bool
    reason: str = ""
    frames: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    sampled: list[int] = field(default_factory=list)

    def timestamps(self) -> np.ndarray:
        return np.asarray(self.sampled, dtype=np.float32) / np.float32(self.fps or 1.0)


def sampling_plan(frames: int, fps: float, cfg: dict) -> list[int]:
    """Frame indices to embed, per the ``sampling:`` config (all | stride | fps | uniform)."""
    if frames <= 0:
        return []
    mode, cap = cfg.get("mode", "uniform"), cfg.get("max_frames", 64)
    if mode == "all":
        idx = np.arange(frames)
    elif mode == "stride":
        idx = np.arange(0, frames, cfg.get("stride", 1))
    elif mode == "fps":
        step = max(fps, 1e-6) / cfg.get("fps", 4.0)
        idx = np.unique(np.floor(np.arange(0, frames, max(step, 1.0))).astype(int))
    elif mode == "uniform":
        n = min(cfg.get("frames", 16), frames)
        # Centre of n equal segments: the TSN convention.
        idx = np.floor((np.arange(n) + 0.5) * frames / n).astype(int)
    else:
        raise ValueError(f"unknown sampling mode {mode!r}; use all, stride, fps or uniform")
    if len(idx) > cap:  # keep the span, thin it evenly
        idx = idx[np.floor((np.arange(cap) + 0.5) * len(idx) / cap).astype(int)]
    return [int(i) for i in np.clip(idx, 0, frames - 1)]


def container_evidence(path: str) -> tuple[int | None, str | None]:
    """(frame count the container really stores, or None; decode error, or None).

    Only MP4/MOV store a per-frame table; other containers' counts are estimates or header
    claims, so for them the whole stream is decoded to see whether it ends in an error."""
    import av
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            if any(f in container.format.name.split(",") for f in ("mov", "mp4")) and stream.frames:
                return int(stream.frames), None
            for _ in container.decode(stream):
                pass
    except (av.error.FFmpegError, IndexError) as e:
        return None, str(e).splitlines()[0][:160] or type(e).__name__
    return None, None


def probe_video(path: str | os.PathLike, video_id: str, sampling: dict) -> Probe:
    """Decode ``path`` once to learn its real frame count, fps and size, and plan the sampling."""
    path = str(path)
    if not os.path.isfile(path):
        return Probe(video_id, path, False, "file not found")
    if os.path.getsize(path) == 0:
        return Probe(video_id, path, False, "empty file (0 bytes)")
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            return Probe(video_id, path, False, "cannot be opened as a video (not a video file, "
                         "unsupported codec, or its header is missing)")
        announced = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        ok, first = cap.read()
        if not ok or first is None:
            return Probe(video_id, path, False, "no decodable frame")
        height, width = first.shape[:2]
        if width * height > MAX_PIXELS:
            return Probe(video_id, path, False, f"frame size {width}x{height} is over the "
                         f"supported {MAX_PIXELS} pixels")
        frames = 1
        while cap.grab():
            frames += 1
    finally:
        cap.release()
    if announced > 1 and frames < TRUNCATION_TOLERANCE * announced:
        stored, error = container_evidence(path)
        if error or (stored and frames < TRUNCATION_TOLERANCE * stored):
            why = f"decode error: {error}" if error else f"the container stores {stored} frames"
            return Probe(video_id, path, False, f"decoding stopped at frame {frames} ({why}; "
                         f"truncated or corrupt file)", frames, fps, width, height)
        log.info("%s: %d frames decoded cleanly; the container's %d is an estimate", path,
                 frames, announced)
    if not (0 < fps < 1000):
        fps = 25.0  # the container gives no usable rate; timestamps then assume 25 fps
    return Probe(video_id, path, True, "", frames, fps, width, height,
                 sampling_plan(frames, fps, sampling))


PROBE_COLUMNS = ["video_id", "path", "readable", "reason", "frames", "fps", "width", "height", "sampled"]


def expand_videos(paths) -> list[Path]:
    """Video files given by the user: files as they are, folders searched for video suffixes."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix.lower() in VIDEO_SUFFIXES)
        else:
            out.append(p)
    if not out:
        raise FileNotFoundError("no video found in the given paths")
    return out


def probe_listed(rows: list[dict], root, sampling: dict, desc: str = "probe") -> list[Probe]:
    """Stage ``probe``: the videos of samples.tsv rows (paths relative to ``root``), each under
    its own video id, with a progress bar; an unreadable video is kept with its reason."""
    from tqdm import tqdm
    probes = []
    for r in tqdm(rows, desc=desc, unit="video", disable=None):
        p = probe_video(Path(root) / r["path"], r["video_id"], sampling)
        if not p.readable:
            log.warning("skipping %s: %s", p.path, p.reason)
        probes.append(p)
    return probes


def probe_files(videos: list[Path], sampling: dict) -> list[Probe]:
    """Probe loose video files (not a data set's list), each named ``NNNN_<stem>`` by its
    position, so that two files with one name in different folders stay apart."""
    return [probe_video(v, f"{i:04d}_{v.stem}", sampling) for i, v in enumerate(videos)]


def write_probes(probes: Iterable[Probe], out: str | Path) -> None:
    from .files import write_tsv
    write_tsv(out, PROBE_COLUMNS, ([p.video_id, p.path, int(p.readable), p.reason, p.frames, f"{p.fps:.6g}",
                                    p.width, p.height, " ".join(map(str, p.sampled))] for p in probes))


def read_probes(path: str | Path, readable_only: bool = True) -> list[Probe]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    probes = [Probe(r["video_id"], r["path"], r["readable"] == "1", r["reason"], int(r["frames"]),
                    float(r["fps"]), int(r["width"]), int(r["height"]),
                    [int(v) for v in r["sampled"].split()]) for r in rows]
    return [p for p in probes if p.readable] if readable_only else probes


class DecodeError(RuntimeError):
    pass


def iter_frames(path: str, indices: Iterable[int], colour: str = "rgb") -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, frame)`` for the wanted frame indices in increasing order, RGB uint8
    (``colour="bgr"``: as decoded, for callers that crop or convert to grey before anything else).

    Frames in between are ``grab``-bed (decoded but not converted), so memory stays at one frame.
    Raises DecodeError when the video ends before a wanted frame.
    """
    wanted = sorted(set(int(i) for i in indices))
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DecodeError(f"{path}: cannot be opened")
    try:
        pos = 0
        for index in wanted:
            while pos < index:
                if not cap.grab():
                    raise DecodeError(f"{path}: video ended at frame {pos}, before frame {index}")
                pos += 1
            ok, bgr = cap.read()
            if not ok:
                raise DecodeError(f"{path}: video ended at frame {pos}, before frame {index}")
            pos += 1
            yield index, bgr if colour == "bgr" else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def read_frames(path: str, indices: list[int], transform=None, colour: str = "rgb") -> np.ndarray:
    """The wanted frames as one (T, H, W, 3) uint8 array, in the order of ``indices``.
    ``transform`` (frame -> array) is applied to each frame as it is decoded, so a 720p video
    never sits in memory at full size when only a small crop of it is used."""
    frames = iter_frames(path, indices, colour)
    got = {i: transform(f) for i, f in frames} if transform else dict(frames)
    return np.stack([got[i] for i in indices]) if indices else np.zeros((0, 0, 0, 3), np.uint8)
