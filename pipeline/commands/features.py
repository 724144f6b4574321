"""Commands of per-frame features (clip, flow, or both from one decode), the text bank and the
class descriptions it can read."""
from __future__ import annotations

import logging

from . import DECODER, DEVICE, REUSE, arg, cache_of, command, optional_int, params

log = logging.getLogger("pipeline")


def _stage_inputs(a):
    from ..compute import pick_device
    from ..video import read_probes
    return read_probes(a.probe), pick_device(a.device)


def _report(stage: str, out, stats: dict) -> None:
    fps = stats["frames"] / max(stats["seconds"], 1e-9)
    log.info("%s: %d videos, %d frames in %.1f s (%.0f frames/s) -> %s", stage, stats["videos"],
             stats["frames"], stats["seconds"], fps, out)
    for vid, why in stats["failed"]:
        log.warning("%s: video %s skipped: %s", stage, vid, why)
    log.info("reused: %d videos, decoded: %d videos", stats.get("reused", 0), stats["videos"])


def _shard_args(name: str) -> tuple:
    return (arg("--probe", required=True, help="probe shard TSV (stage probe)"),
            arg("--out", required=True, help="feature shard (.h5) to write"),
            arg("--params", help=f"the {name}: config section as JSON"),
            arg("--sampling", help="the sampling: config section (recorded as provenance)"),
            DEVICE,
            arg("--batch-size", type=optional_int, help=f"{name}.batch_size (no effect on the "
                "features, so not part of --params)"),
            arg("--decode-workers", type=optional_int, help="decoding threads"),
            DECODER, REUSE)


def _section(a, name: str) -> dict:
    """The section from --params, the job's speed-only settings and this command's flags."""
    from ..runtime import with_runtime
    return with_runtime(name, a.params, {"batch_size": a.batch_size, "decode_workers": a.decode_workers})


def _one_stage(a, name: str) -> None:
    """The clip or the flow stage alone on one probe shard (extraction: separate)."""
    if name == "clip":
        from ..features.clip import extract_clip as extract
    else:
        from ..features.flow import extract_flow as extract
    probes, device = _stage_inputs(a)
    _report(name, a.out, extract(probes, a.out, _section(a, name), device,
                                 sampling=params(a.sampling, "sampling"), decoder=a.decoder,
                                 reuse=cache_of(a)))


@command("clip", "frozen CLIP frame embeddings of the planned frames of one probe shard -> HDF5",
         *_shard_args("clip"))
def cmd_clip(a):
    _one_stage(a, "clip")


@command("flow", "optical flow (quantised, CLIP's field of view) of the planned frames of one "
         "probe shard -> HDF5", *_shard_args("flow"))
def cmd_flow(a):
    _one_stage(a, "flow")


@command("extract", "clip and flow of one probe shard from one decode of each video -> both HDF5 "
         "shards (the same as the clip and flow commands)",
         arg("--probe", required=True, help="probe shard TSV (stage probe)"),
         arg("--clip-out", required=True, help="clip feature shard (.h5) to write"),
         arg("--flow-out", required=True, help="flow feature shard (.h5) to write"),
         arg("--clip", help="the clip: config section as JSON"),
         arg("--flow", help="the flow: config section as JSON"),
         arg("--sampling", help="the sampling: config section (recorded as provenance)"),
         DEVICE, DECODER, REUSE)
def cmd_extract(a):
    from ..runtime import with_runtime
    from ..features.extract import extract_both
    probes, device = _stage_inputs(a)
    stats = extract_both(probes, a.clip_out, a.flow_out, with_runtime("clip", a.clip),
                         with_runtime("flow", a.flow), device,
                         sampling=params(a.sampling, "sampling"), decoder=a.decoder, reuse=cache_of(a))
    _report("extract (clip + flow, one decode per video)", f"{a.clip_out}, {a.flow_out}", stats)


@command("text", "class prompt embeddings (templates + descriptions) -> text.h5",
         arg("--classes", required=True, help="classes.tsv (stage samples)"),
         arg("--species", nargs="*", metavar="TSV", help="species.tsv relation.tsv, for templates "
             "with {species} and the species bank"),
         arg("--text", help="the text: config section as JSON"),
         arg("--clip", help="the clip: config section (model, pretrained) as JSON"),
         arg("--out", required=True),
         DEVICE)
def cmd_text(a):
    from ..annotations import read_classes, read_species
    from ..compute import pick_device
    from ..features.text import extract_text
    classes = [r["name"] for r in read_classes(a.classes)]
    species, relation = read_species(*a.species) if a.species else (None, None)
    info = extract_text(classes, a.out, params(a.text, "text"), params(a.clip, "clip"),
                        pick_device(a.device), species, relation)
    log.info("text: %d prompts for %d classes (up to %d per class) -> %s", info["prompts"],
             info["classes"], info["max_per_class"], a.out)


@command("describe", "visual descriptions of each action (or species) from an OpenAI-compatible "
         "chat endpoint -> a description file for text.descriptions",
         arg("--classes", required=True, help="class file (id,name CSV, classes.tsv or one name per line)"),
         arg("--species", action="store_true", help="the file holds species: describe their looks"),
         arg("--endpoint", required=True, help="API base, e.g. http://127.0.0.1:8000/v1"),
         arg("--model", required=True, help="model name the server knows"),
         arg("--n", type=int, default=10, help="descriptions per name"),
         arg("--out", default="descriptions.yaml"),
         arg("--cache", default=".cache/describe", help="answers already had (re-runs ask nothing twice)"),
         arg("--api-key-env", default="OPENAI_API_KEY",
             help="environment variable holding the API key (never written anywhere)"),
         arg("--retries", type=int, default=3),
         arg("--timeout", type=float, default=120.0, help="seconds per request"))
def cmd_describe(a):
    from ..describe import describe, read_names, write_descriptions
    kind = "species" if a.species else "action"
    found = describe(read_names(a.classes), a.endpoint, a.model, a.n, kind, a.cache, a.retries,
                     a.timeout, a.api_key_env)
    path = write_descriptions(found, a.out)
    log.info("describe: %d %s descriptions -> %s", sum(map(len, found.values())), kind, path)
