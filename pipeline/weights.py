"""Every checkpoint a config needs, where it goes, whether it is there; fetching them on a node
with network (``python -m pipeline weights``), for compute nodes that have none.

CLIP tags go to open_clip's cache (the Hugging Face hub cache, or ``~/.cache/clip`` for URL
weights), ptlflow tags to torch hub's ``checkpoints`` folder: where the stages look for them.
Local files and random weights need nothing; the demo's CLIP is made by its own rule.
"""
from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

from .factory import clip_cache

log = logging.getLogger("pipeline")


def hub_checkpoint(url: str) -> Path:
    """Where torch hub (and so ptlflow) keeps the checkpoint downloaded from ``url``."""
    import torch
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def flow_cache(model: str, tag: str) -> dict:
    """Where torch hub keeps ptlflow's ``tag`` of ``model``, and whether it is there."""
    import ptlflow
    url = (getattr(ptlflow.get_model_reference(model), "pretrained_checkpoints", {}) or {})[tag]
    path = hub_checkpoint(url)
    return {"where": str(path), "cached": path.is_file(), "host": urlparse(url).hostname or "",
            "source": url}


def checkpoint_problem(path) -> str | None:
    """Why a local weights file cannot be one (missing, empty, not a torch or safetensors file),
    from its first bytes: nothing is loaded."""
    path = Path(path)
    if not path.is_file():
        return "file not found"
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch.save: a zip, or a pickle
        return None
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: a length, then its JSON header
        return None
    return "not a checkpoint (neither a torch.save file nor safetensors)"


def _local(what: str, path: str) -> dict:
    problem = checkpoint_problem(path)
    return {"what": f"{what} {path}", "kind": "local", "where": str(path), "cached": problem is None,
            "problem": problem and f"{problem}; fix the path in the config"}


def _clip_item(model: str, tag: str) -> dict:
    from .factory import is_weights_file, open_clip_module
    what = f"CLIP {model} {tag!r}"
    if is_weights_file(tag):
        return _local(f"CLIP {model} file", tag)
    if not open_clip_module().get_pretrained_cfg(model, tag):
        known = open_clip_module().list_pretrained_tags_by_model(model)
        return {"what": what, "kind": "clip", "where": "-", "cached": False,
                "problem": f"open_clip has no tag {tag!r} for {model}; its tags: "
                           f"{', '.join(known) or 'none (a local file, or null)'}"}
    return {"what": what, "kind": "clip", "model": model, "tag": tag, **clip_cache(model, tag)}


def _flow_item(model: str, tag: str) -> dict:
    from .factory import is_weights_file
    what = f"flow {model} {tag!r}"
    if is_weights_file(tag):
        return _local(f"flow {model} file", tag)
    import ptlflow
    try:
        tags = getattr(ptlflow.get_model_reference(model), "pretrained_checkpoints", {}) or {}
    except Exception:  # noqa: BLE001 - ptlflow raises several kinds for an unknown model
        return {"what": what, "kind": "flow", "where": "-", "cached": False,
                "problem": f"ptlflow has no model {model!r}"}
    if tag not in tags:
        return {"what": what, "kind": "flow", "where": "-", "cached": False,
                "problem": f"ptlflow has no checkpoint {tag!r} for {model}; its tags: "
                           f"{', '.join(sorted(tags)) or 'none'}"}
    return {"what": what, "kind": "flow", "model": model, "tag": tag, **flow_cache(model, tag)}


def needed(config: dict) -> list[dict]:
    """Every checkpoint ``config`` names (tags, with their cache place and state; local files,
    checked), random weights excepted."""
    out = []
    clip, flow = config["clip"], config["flow"]
    if clip["pretrained"]:
        out.append(_clip_item(clip["model"], clip["pretrained"]))
    if flow["backend"] == "ptlflow" and flow["checkpoint"]:
        out.append(_flow_item(flow["model"], flow["checkpoint"]))
    return out


def download_clip(model: str, tag: str) -> None:
    from .factory import open_clip_module
    from open_clip.pretrained import download_pretrained
    download_pretrained(open_clip_module().get_pretrained_cfg(model, tag))


def download_flow(model: str, tag: str) -> None:
    import torch
    torch.hub.load_state_dict_from_url(flow_cache(model, tag)["source"], map_location="cpu",
                                       progress=True)


def fetch(items: list[dict]) -> list[dict]:
    """Download the items that are not cached; returns them with their state after."""
    done = []
    for item in items:
        if not item["cached"] and not item.get("problem"):
            log.info("weights: fetching %s from %s", item["what"], item["source"])
            (download_clip if item["kind"] == "clip" else download_flow)(item["model"], item["tag"])
            fresh = (clip_cache if item["kind"] == "clip" else flow_cache)(item["model"], item["tag"])
            item = {**item, **fresh}
        done.append(item)
    return done


def format_items(items: list[dict]) -> str:
    if not items:
        return "this config needs no checkpoint (random weights only)"

    def line(i):
        if i.get("problem"):
            return f"MISSING  {i['what']}: {i['problem']}"
        state = "ok     " if i["kind"] == "local" else "cached "
        return (f"{state if i['cached'] else 'MISSING'}  {i['what']}  ->  {i['where']}"
                + ("" if i["cached"] else f"  (from {i['source']})"))
    return "\n".join(map(line, items))
