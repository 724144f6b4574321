"""Clip and flow from one decode of each video (stage ``extract``, ``extraction: fused``).

Decoding is what a GPU run waits for, and the clip and flow stages want the same frames (flow
needs the planned ones and their partners), so one pass over each video feeds both: every
decoded frame is shrunk to CLIP's crop if it is planned and to flow's square if flow needs it.
The shards are the ones the separate stages write, bit for bit.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..video import Probe
from .clip import clip_encoder, clip_writer
from .common import decode_ahead, decode_workers, skip_failed
from .decoding import stack, video_decoder
from .flow import flow_computer
from ..cache.reuse import shard_job


def extract_both(probes: list[Probe], clip_out: str | Path, flow_out: str | Path, clip_cfg: dict,
                 flow_cfg: dict, device: torch.device, progress: bool = True,
                 sampling: dict | None = None, decoder: str = "opencv", reuse: Path | None = None) -> dict:
    """Write the clip shard ``clip_out`` and the flow shard ``flow_out`` of ``probes``; a video
    whose clip and flow rows the ``reuse`` pool both holds (same content, same settings) is
    copied, the others are decoded."""
    enc = clip_encoder(clip_cfg, device, sampling)
    fc = flow_computer(flow_cfg, device, sampling)

    def parts(p: Probe):
        wanted = fc.frames(p)  # the planned frames and their flow partners
        return wanted, {"clip": (set(p.sampled), enc.shrink, enc.shrink_rgb),
                        "flow": (set(wanted), fc.square, fc.square_rgb)}
    frames_of = video_decoder(decoder, device, parts)

    def decode(p: Probe):  # on a decode thread: one pass, both models' inputs
        rows = frames_of(p)
        crops = enc.pin(stack([rows["clip"][i] for i in p.sampled]))
        return crops, fc.pairs(p, rows["flow"])

    desc = f"extract {Path(clip_out).parent.name}/{Path(clip_out).stem}"
    clip_w, flow_w = clip_writer(clip_out, enc), fc.writer(flow_out)

    def with_flow(decoded):
        # flow rows are written as each video passes on its way to the clip batches; the
        # crops ride along with their video through the flow batches
        videos = (((p, crops), pairs) for p, (crops, pairs) in skip_failed(decoded, stats))
        for (p, crops), rows in fc.rows(videos):
            flow_w.add(p.video_id, p.sampled, p.timestamps(), rows, p.fingerprint)
            yield p, crops

    with shard_job({"clip": clip_w, "flow": flow_w}, probes, desc, progress, reuse) as (todo, stats, done):
        workers = max(decode_workers(clip_cfg, device), decode_workers(flow_cfg, device))
        decoded = decode_ahead(todo, decode, workers=workers)
        for p, emb in enc.embed(with_flow(decoded)):
            clip_w.add(p.video_id, p.sampled, p.timestamps(), emb, p.fingerprint)
            done(p)
    return stats
