"""Video probing, frame sampling plans and the one decoder every later stage uses.

Container headers lie about frame counts, so probing counts what the file really holds: its
video packets, read by demuxing (PyAV), one per frame, with only the first frame decoded. A file
is called truncated only on evidence: a frame count the container really stores (the MP4/MOV
sample table) that the packets fall short of, or a read or decode error. An estimate (duration x
fps of an mkv with a pause, an AVI header) that the packets fall short of is settled by decoding.
"""
from __future__ import annotations

import csv
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

log = logging.getLogger("pipeline")

# A file that announces N frames but yields fewer than this share of them broke mid-way.
TRUNCATION_TOLERANCE = 0.9
MAX_PIXELS = 8192 * 8192
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
# Full decoding passes started in this process, per file (``bench`` reports passes per video).
DECODE_PASSES: Counter = Counter()


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
    fingerprint: str = ""   # the file's content identity (:func:`fingerprint`)

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


def decode_error(path: str) -> str | None:
    """The error that decoding the whole video stream ends in, or None: what settles a frame
    count that only an estimate (an AVI header, duration x fps) says is short."""
    import av
    DECODE_PASSES[str(path)] += 1
    try:
        with av.open(path) as container:
            for _ in container.decode(container.streams.video[0]):
                pass
    except (av.error.FFmpegError, IndexError) as e:
        return str(e).splitlines()[0][:160] or type(e).__name__
    return None


def fingerprint(path: str | os.PathLike) -> str:
    """The file's content identity: its size and the SHA-256 of every byte (first 32 hex
    digits). Content, not mtime: a data set copied to a cluster or touched keeps its features,
    a file replaced under the same name does not. The probe demuxes the whole file anyway, so
    hashing it costs one more read from the page cache."""
    import hashlib
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return f"{os.path.getsize(path)}:{digest[:32]}"


def _unreadable(video_id, path, reason, frames=0, fps=0.0, width=0, height=0) -> "Probe":
    return Probe(video_id, path, False, reason, frames, fps, width, height)


def demux_video(path: str) -> dict:
    """Frame count, fps, size and the container's own claim, read from packet headers: only the
    first frame is decoded (its size after rotation, as the decoder will give it). Raises
    ``av.error.FFmpegError`` when the file cannot be opened; a read error part-way is returned
    as ``error`` with the packets counted before it."""
    import av
    with av.open(path) as container:
        if not container.streams.video:
            raise av.error.InvalidDataError(0, "no video stream", path)
        stream = container.streams.video[0]
        packets, first, error = 0, None, None
        try:
            for packet in container.demux(stream):
                if not packet.size:  # the demuxer's end-of-stream marker
                    continue
                packets += 1
                if first is None:
                    first = next(iter(stream.decode(packet)), None)
            if first is None:  # a decoder that holds frames back gives them on flushing
                first = next(iter(stream.decode(None)), None)
        except av.error.FFmpegError as e:
            error = str(e).splitlines()[0][:160] or type(e).__name__
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        claimed = int(stream.frames or 0)
        if not claimed and stream.duration and stream.time_base and fps:
            claimed = int(round(float(stream.duration * stream.time_base) * fps))  # an estimate
        if not claimed and container.duration and fps:  # an mkv's segment duration, in us
            claimed = int(round(container.duration / 1e6 * fps))
        width, height = (first.width, first.height) if first is not None else (0, 0)
        if first is not None and abs(getattr(first, "rotation", 0) or 0) % 180 == 90:
            width, height = height, width  # the decoders this project uses apply the rotation
        stored = any(f in container.format.name.split(",") for f in ("mov", "mp4")) and bool(stream.frames)
        return {"packets": packets, "decoded_first": first is not None, "error": error, "fps": fps,
                "width": width, "height": height, "claimed": claimed, "stored": stored}


def count_by_decoding(path: str) -> int:
    """Frames a full decode yields (``grab`` only): the slow count, kept as the reference."""
    import cv2  # here, not at the top: the workflow plans its DAG without OpenCV
    DECODE_PASSES[str(path)] += 1
    cap = cv2.VideoCapture(str(path))
    try:
        frames = 0
        while cap.grab():
            frames += 1
        return frames
    finally:
        cap.release()


def probe_video(path: str | os.PathLike, video_id: str, sampling: dict) -> Probe:
    """Frame count, fps and size of ``path`` by demuxing (no full decode), and its sampling plan.

    One packet is one frame; the count is checked against what the container claims. A file
    that holds fewer packets than the frames its MP4/MOV sample table stores, or that hits a
    read error, is truncated. A shortfall against an estimate (an AVI header, duration x fps)
    is settled by decoding the whole stream once: an error there means truncated, none means
    the estimate was wrong."""
    import av
    path = str(path)
    if not os.path.isfile(path):
        return _unreadable(video_id, path, "file not found")
    if os.path.getsize(path) == 0:
        return _unreadable(video_id, path, "empty file (0 bytes)")
    try:
        d = demux_video(path)
    except (av.error.FFmpegError, OSError) as e:
        return _unreadable(video_id, path, "cannot be opened as a video (not a video file, unsupported "
                           f"codec, or its header is missing: {str(e).splitlines()[0][:120]})")
    frames, fps, width, height = d["packets"], d["fps"], d["width"], d["height"]
    if not d["decoded_first"]:
        why = f"; read error: {d['error']}" if d["error"] else ""
        return _unreadable(video_id, path, f"no decodable frame{why}")
    if width * height > MAX_PIXELS:
        return _unreadable(video_id, path, f"frame size {width}x{height} is over the supported "
                           f"{MAX_PIXELS} pixels")
    if d["error"]:
        return _unreadable(video_id, path, f"reading stopped at frame {frames} (read error: "
                           f"{d['error']}; truncated or corrupt file)", frames, fps, width, height)
    claimed = d["claimed"]
    if claimed > 1 and frames < TRUNCATION_TOLERANCE * claimed:
        stored, error = (claimed, None) if d["stored"] else (None, decode_error(path))
        if error or stored:
            why = f"decode error: {error}" if error else f"the container stores {stored} frames"
            return _unreadable(video_id, path, f"decoding stopped at frame {frames} ({why}; "
                               f"truncated or corrupt file)", frames, fps, width, height)
    note = ""
    if claimed > 1 and frames < TRUNCATION_TOLERANCE * claimed:
        # Kept: every frame read decodes, and such counts are often wrong (an mkv with a
        # pause, an AVI header written before an edit); the table says so for a look.
        note = (f"possibly truncated: the container says {claimed} frames, {frames} read "
                f"and decode cleanly; kept")
        log.warning("%s: %s", path, note)
    if not (0 < fps < 1000):
        fps = 25.0  # the container gives no usable rate; timestamps then assume 25 fps
    return Probe(video_id, path, True, note, frames, fps, width, height,
                 sampling_plan(frames, fps, sampling), fingerprint(path))


PROBE_COLUMNS = ["video_id", "path", "readable", "reason", "frames", "fps", "width", "height", "sampled",
                 "fingerprint"]


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
                                    p.width, p.height, " ".join(map(str, p.sampled)), p.fingerprint]
                                   for p in probes))


def read_probes(path: str | Path, readable_only: bool = True) -> list[Probe]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    probes = [Probe(r["video_id"], r["path"], r["readable"] == "1", r["reason"], int(r["frames"]),
                    float(r["fps"]), int(r["width"]), int(r["height"]),
                    [int(v) for v in r["sampled"].split()], r.get("fingerprint") or "") for r in rows]
    return [p for p in probes if p.readable] if readable_only else probes


class DecodeError(RuntimeError):
    pass


def iter_frames(path: str, indices: Iterable[int], colour: str = "rgb") -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, frame)`` for the wanted frame indices in increasing order, RGB uint8
    (``colour="bgr"``: as decoded, for callers that crop or convert to grey before anything else).

    Frames in between are ``grab``-bed (decoded but not converted), so memory stays at one frame.
    Raises DecodeError when the video ends before a wanted frame.
    """
    import cv2
    wanted = sorted(set(int(i) for i in indices))
    DECODE_PASSES[str(path)] += 1
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
