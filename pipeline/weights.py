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

log = logging.getLogger("pipeline")


def clip_cache(name: str, tag: str) -> dict:
    """Where open_clip keeps ``tag`` of model ``name``, and whether it is there."""
    from .factory import open_clip_module
    cfg = open_clip_module().get_pretrained_cfg(name, tag)
    hub, url = cfg.get("hf_hub", ""), cfg.get("url", "")
    if hub:
        import huggingface_hub
        from huggingface_hub import constants
        model_id, filename = hub.rstrip("/").rsplit("/", 1) if not hub.endswith("/") else (hub.rstrip("/"), "")
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        found = [p for n in names if isinstance(p := huggingface_hub.try_to_load_from_cache(model_id, n), str)]
        folder = Path(constants.HF_HUB_CACHE) / ("models--" + model_id.replace("/", "--"))
        return {"where": found[0] if found else str(folder), "cached": bool(found),
                "host": "huggingface.co", "source": f"hf://{model_id}"}
    path = Path.home() / ".cache" / "clip" / Path(urlparse(url).path).name
    return {"where": str(path), "cached": path.is_file(), "host": urlparse(url).hostname or "",
            "source": url}


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


def needed(config: dict) -> list[dict]:
    """The checkpoints ``config`` needs that are tags (not local files, not random), each with
    its cache place and state."""
    out = []
    clip = config["clip"]
    from .factory import is_weights_file
    if clip["pretrained"] and not is_weights_file(clip["pretrained"]):
        out.append({"what": f"CLIP {clip['model']} {clip['pretrained']!r}", "kind": "clip",
                    "model": clip["model"], "tag": clip["pretrained"],
                    **clip_cache(clip["model"], clip["pretrained"])})
    flow = config["flow"]
    if flow["backend"] == "ptlflow" and flow["checkpoint"] and not Path(flow["checkpoint"]).is_file():
        out.append({"what": f"flow {flow['model']} {flow['checkpoint']!r}", "kind": "flow",
                    "model": flow["model"], "tag": flow["checkpoint"],
                    **flow_cache(flow["model"], flow["checkpoint"])})
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
        if not item["cached"]:
            log.info("weights: fetching %s from %s", item["what"], item["source"])
            (download_clip if item["kind"] == "clip" else download_flow)(item["model"], item["tag"])
            fresh = (clip_cache if item["kind"] == "clip" else flow_cache)(item["model"], item["tag"])
            item = {**item, **fresh}
        done.append(item)
    return done


def format_items(items: list[dict]) -> str:
    if not items:
        return "this config needs no checkpoint download (local files or random weights only)"
    return "\n".join(f"{'cached ' if i['cached'] else 'MISSING'}  {i['what']}  ->  {i['where']}"
                     + ("" if i["cached"] else f"  (from {i['source']})") for i in items)
