"""``python -m pipeline predict``: label new videos with a trained run, in one process.

Every setting comes from the run's own files, never re-typed: the frame sampling, CLIP model
and weights, and flow settings from the feature files' provenance; the student and the head
from their checkpoints. The features are computed by the very functions the stages use, so
they equal the pipeline's own (within float16 rounding).
"""
from __future__ import annotations

import dataclasses

import logging
import tempfile
from pathlib import Path

import numpy as np

from .api import Run, open_run
from .factory import weights_identity
from .features.clip import extract_clip
from .features.extract import extract_both
from .heads.run import load_head
from .heads.data import SplitFeatures
from .heads.registry import DEFAULT_HEAD, HEAD_TYPES, is_prompt
from .heads.trainer import predict_logits
from .metrics import probabilities
from .files import local_path
from .moclip.export import export_motion
from .store import FeatureReader, read_attrs
from .video import VIDEO_SUFFIXES, expand_videos, probe_files
from .errors import PipelineError

log = logging.getLogger("pipeline")


class RunError(PipelineError, RuntimeError):
    pass


def _first_shard(run: Run, kind: str) -> Path:
    found = run.folder.shards(kind)
    if not found:
        raise RunError(f"{run.path}: no {kind} features; is this a finished run (results/<name>)?")
    return found[0]


def predictor(run: Run, head: str) -> dict:
    """What predict needs of a finished run (an opened :class:`~pipeline.api.Run`): the trained
    head and its entry, and the settings and models that made its features."""
    head_path = Path(run.folder.head(head))
    if not head_path.exists():
        trained = run.folder.trained_heads()
        raise RunError(f"{head_path} not found; trained heads in {run.path}: {', '.join(trained) or 'none'}")
    model, ckpt, entry = load_head(head_path)
    need_motion = entry.motion
    student = Path(run.folder.student)
    if need_motion and not student.exists():
        raise RunError(f"{student} not found: head {head!r} needs the motion student; finish the "
                       f"run (snakemake --cores N) or predict with a head that sees frames only "
                       f"({', '.join(t for t, h in HEAD_TYPES.items() if 'motion' not in h['streams'])})")
    clip_shard = FeatureReader([_first_shard(run, "clip")], kind="clip")
    clip_attrs = clip_shard.attrs
    if clip_attrs.get("sampling") is None:
        raise RunError(f"{run.path}: its features carry no sampling provenance (made by an older "
                       f"version); re-run the clip and flow stages")
    # a local checkpoint named relative to the run's own folder (data/demo/demo_clip.pt) is
    # found there, wherever predict runs from
    workdir = run.path.resolve().parent.parent
    source = local_path(clip_attrs["weights_source"], workdir)
    if ckpt.get("text"):
        attrs = ckpt["text"]["attrs"]
        attrs["pretrained"] = local_path(attrs.get("pretrained"), workdir)
    if weights_identity(source) != clip_attrs["weights"]:
        raise RunError(f"CLIP weights {source!r} are not the ones the run used "
                       f"({clip_attrs['weights']}); restore that file to predict with this run")
    clip_cfg = {"model": clip_attrs["model"], "pretrained": source, "batch_size": 256,
                "decode_workers": None,
                "dtype": "float16" if clip_shard.row_dtype == np.float16 else "float32"}
    flow_cfg = None
    if need_motion:  # a head that sees frames only never reads (or trusts) the flow shards
        flow_attrs = read_attrs(_first_shard(run, "flow"))
        flow_cfg = {k: flow_attrs[k] for k in ("backend", "step", "work_size", "size", "bound",
                                               "batch_size", "half")}
        flow_cfg.update({"model": flow_attrs["model"], "checkpoint": local_path(flow_attrs["weights_source"], workdir),
                         "decode_workers": None})
    return {"run": run, "head": head, "entry": entry, "model": model, "ckpt": ckpt, "clip_cfg": clip_cfg,
            "flow_cfg": flow_cfg, "sampling": clip_attrs["sampling"], "student": student,
            "classes": list(run.classes)}


def compute_features(probes, r: dict, device, tmp: Path) -> dict:
    """clip / flow / motion readers for ``probes``, made by the stage functions; ``failed``:
    (video id, reason) of the videos whose decoding failed (the others go on)."""
    need_motion = r["entry"].motion
    out = {}
    if need_motion:  # one decode of each video for both
        stats = extract_both(probes, tmp / "clip.h5", tmp / "flow.h5", r["clip_cfg"], r["flow_cfg"],
                             device, progress=False, sampling=r["sampling"])
    else:
        stats = extract_clip(probes, tmp / "clip.h5", r["clip_cfg"], device, progress=False,
                             sampling=r["sampling"])
    out["failed"] = stats["failed"]
    out["clip"] = FeatureReader([tmp / "clip.h5"], kind="clip", expect=r["ckpt"]["identity"].get("clip"))
    if need_motion:
        export_motion(r["student"], tmp / "flow.h5", tmp / "motion.h5", device)
        out["motion"] = FeatureReader([tmp / "motion.h5"], kind="motion",
                                      expect=r["ckpt"]["identity"].get("motion"))
    return out


def _split(feats: dict, videos: list[str], rows: dict | None = None) -> SplitFeatures:
    """In-memory features of ``videos`` (optionally only ``rows[v]`` of each)."""
    def stack(reader):
        if reader is None:
            return None
        arrays = [reader.video(v).data if rows is None else reader.video(v).data[rows[v]] for v in videos]
        lmax = max(a.shape[0] for a in arrays)
        out = np.zeros((len(videos), lmax, arrays[0].shape[1]), np.float16)
        for i, a in enumerate(arrays):
            out[i, : a.shape[0]] = a
        return out
    base = feats.get("clip")
    lengths = np.array([(base.n_rows(v) if rows is None else len(rows[v])) for v in videos])
    return SplitFeatures(videos, stack(feats.get("clip")), stack(feats.get("motion")), lengths,
                         np.zeros(len(videos), np.int64), {})


def open_vocabulary(r: dict, names: list[str], device) -> None:
    """Open vocabulary: the trained prompt head also scores ``names``, encoded now with the
    run's CLIP text tower and templates."""
    from .heads.prompt import add_classes as add_to_head
    ckpt = r["ckpt"]
    if not r["entry"].prompt:
        kinds = [t for t in HEAD_TYPES if is_prompt(t)]
        raise RunError(f"head {ckpt['name']!r} has a fixed set of classes; new classes need a "
                       f"head of type {' or '.join(kinds)} (--head {kinds[-1]})")
    known = r["classes"]
    r["classes"] = add_to_head(r["model"], known, names, ckpt["text"]["attrs"], device)
    r["new_classes"] = set(r["classes"][len(known):])
    if r["new_classes"]:
        log.info("predict: %d new classes scored without retraining: %s", len(r["new_classes"]),
                 ", ".join(r["classes"][len(known):]))


def predict_videos(paths, run: str | Path, head: str = DEFAULT_HEAD, top_k: int = 5, device=None,
                   timeline: Path | None = None, window_s: float = 2.0,
                   extra_classes: list[str] | None = None) -> list[dict]:
    import torch
    device = device or torch.device("cpu")
    r = predictor(open_run(run), head)
    r["model"].to(device)
    if extra_classes:
        open_vocabulary(r, extra_classes, device)
    params, multilabel = r["ckpt"]["params"], r["ckpt"]["multilabel"]
    try:
        videos = expand_videos(paths)
    except FileNotFoundError:
        raise RunError(f"no video file in {', '.join(map(str, paths))} (looked for "
                       f"{', '.join(VIDEO_SUFFIXES)}); give video files or folders that hold them") from None
    probes = {p.video_id: p for p in probe_files(videos, r["sampling"])}
    plan = {v: set(p.sampled) for v, p in probes.items()}  # the rows the whole-video scores read
    dense = {}  # the timeline's own rows: decoded with the run's, scored apart from them
    if timeline is not None:
        sampling = {"mode": "fps", "fps": max(2.0, params["frames"] / window_s), "max_frames": 100000}
        dense = {p.video_id: set(p.sampled) for p in probe_files(videos, sampling) if p.readable}
        probes = {v: dataclasses.replace(p, sampled=sorted(set(p.sampled) | dense.get(v, set())))
                  for v, p in probes.items()}
    for p in probes.values():
        if not p.readable:
            log.warning("skipping %s: %s", p.path, p.reason)
    readable = [p for p in probes.values() if p.readable]
    results = [{"video": str(p.path), "error": p.reason} for p in probes.values() if not p.readable]
    if not readable:
        return results
    names = timeline_names([p.path for p in readable])
    with tempfile.TemporaryDirectory() as tmp:
        feats = compute_features(readable, r, device, Path(tmp))
        failed = dict(feats.pop("failed"))
        results += [{"video": str(p.path), "error": f"decoding failed: {failed[p.video_id]}"}
                    for p in readable if p.video_id in failed]
        readable = [p for p in readable if p.video_id not in failed]
        if not readable:
            return results
        ids = [p.video_id for p in readable]
        rows = {v: _rows_of(feats, v, plan[v]) for v in ids} if dense else None
        scores = probabilities(predict_logits(r["model"], _split(feats, ids, rows), params, device), multilabel)
        for p, s in zip(readable, scores):
            order = np.argsort(-s)[:top_k]
            item = {"video": str(p.path), "frames": p.frames, "fps": p.fps, "head": head,
                    "top": [{"class": r["classes"][c], "score": float(s[c]),
                             **({"new": True} if r["classes"][c] in r.get("new_classes", ()) else {})}
                            for c in order]}
            if timeline is not None:
                item["timeline"] = _timeline(feats, p, r, params, multilabel, device, window_s,
                                             Path(timeline) / names[p.path], dense[p.video_id])
            results.append(item)
    return results


def timeline_names(paths) -> dict:
    """A timeline file name per video path, distinct for every path: the file's name with its
    suffix (clip.mp4, clip.mkv), preceded by as many of its folders as needed to tell apart
    two files of one name (a__clip.mp4, b__clip.mp4)."""
    parts = {p: Path(p).resolve().parts for p in paths}
    depth = 1
    while True:
        names = {p: "__".join(q[-depth:]) for p, q in parts.items()}
        if len(set(names.values())) == len(names) or depth >= max(map(len, parts.values()), default=1):
            return {p: f"{n}.timeline.png" for p, n in names.items()}
        depth += 1


def _rows_of(feats, video_id: str, frames: set) -> np.ndarray:
    """Positions of a video's rows whose frames are ``frames``."""
    return np.flatnonzero(np.isin(feats["clip"].video(video_id).frame_index, sorted(frames)))


def _timeline(feats, probe, r, params, multilabel, device, window_s, path: Path, frames: set) -> str:
    """Scores of sliding windows (``window_s`` long, one starting every second) over the
    timeline's own rows (``frames``) -> a per-second action timeline plot."""
    t = feats["clip"].video(probe.video_id).timestamps
    own = np.zeros(len(t), bool)
    own[_rows_of(feats, probe.video_id, frames)] = True
    starts = np.arange(0.0, max(float(t[-1]) - window_s, 0.0) + 1.0, 1.0)
    rows = {f"w{i}": np.flatnonzero(own & (t >= s) & (t < s + window_s)) for i, s in enumerate(starts)}
    rows = {k: v for k, v in rows.items() if len(v)}
    split = _split({k: _Alias(feats[k], probe.video_id) for k in feats}, list(rows), rows)
    scores = probabilities(predict_logits(r["model"], split, params, device), multilabel)
    from .plots import pyplot
    plt = pyplot()
    top = np.argsort(-scores.max(0))[: min(8, scores.shape[1])]
    fig, ax = plt.subplots(figsize=(max(5, 0.3 * len(rows) + 2), 0.4 * len(top) + 1.5))
    im = ax.imshow(scores[:, top].T, aspect="auto", cmap="viridis", vmin=0, vmax=1,
                   extent=(0, len(rows), len(top) - 0.5, -0.5))
    ax.set_yticks(range(len(top)), [r["classes"][c] for c in top])
    ax.set_xlabel("time (s), window start"), fig.colorbar(im, ax=ax, label="score")
    ax.set_title(f"{Path(probe.path).name}: {r['head']}, {window_s:g} s windows")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


class _Alias:
    """A reader that answers every video id with the rows of one video (for windows)."""

    def __init__(self, reader, video_id):
        self.reader, self.video_id = reader, video_id

    def video(self, _):
        return self.reader.video(self.video_id)

    def n_rows(self, _):
        return self.reader.n_rows(self.video_id)


def format_results(results: list[dict]) -> str:
    lines = []
    for item in results:
        if "error" in item:
            lines.append(f"{item['video']}: skipped ({item['error']})")
            continue
        lines.append(f"{item['video']}  ({item['frames']} frames, {item['fps']:.1f} fps, head {item['head']})")
        lines.append(f"  {'rank':<6}{'action':<34}{'score':>9}")
        for k, t in enumerate(item["top"], 1):
            name = t["class"] + (" (new)" if t.get("new") else "")
            lines.append(f"  {k:<6}{name:<34}{t['score']:>9.4g}")
        if item.get("timeline"):
            lines.append(f"  timeline: {item['timeline']}")
    return "\n".join(lines)
