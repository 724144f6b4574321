"""`python -m pipeline weights`: every checkpoint a config needs, where it goes, whether it is
cached; fetching with the download functions replaced (no network here)."""
import os

import pytest
import yaml

from conftest import run_cli

pytestmark = pytest.mark.slow

CONFIG = {"dataset": {"name": "x", "format": "csv", "videos": "v", "classes": "c.csv", "annotations": "a.csv"}}


def _caches(tmp_path, monkeypatch):
    """Empty open_clip (Hugging Face) and torch hub caches for this test."""
    import torch
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch" / "hub"))
    return {"HF_HUB_CACHE": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}


def _fake_clip_download(model, tag):
    """What a download leaves: the checkpoint in the hub cache's snapshot layout."""
    from pathlib import Path
    from huggingface_hub import constants
    from pipeline.weights import clip_cache
    repo = Path(clip_cache(model, tag)["where"])
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc")
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "snapshots" / "abc" / "open_clip_model.safetensors").write_bytes(b"weights")
    assert constants.HF_HUB_CACHE in str(repo)


def _fake_flow_download(model, tag):
    from pathlib import Path
    from pipeline.weights import flow_cache
    path = Path(flow_cache(model, tag)["where"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights")


def test_weights_are_listed_fetched_and_found_where_the_stages_look(tmp_path, monkeypatch):
    from pipeline import weights
    from pipeline.config import resolve_config
    env = _caches(tmp_path, monkeypatch)
    cfg_file = tmp_path / "mine.yaml"
    cfg_file.write_text(yaml.safe_dump(CONFIG))
    check = run_cli("weights", "--check", "--configfile", cfg_file, check=False,
                    env={**os.environ, **env})
    assert check.returncode == 1 and "missing from the local caches" in check.stderr
    assert "MISSING  CLIP ViT-B-32 'openai'" in check.stdout and "MISSING  flow raft 'things'" in check.stdout
    assert "raft-things" in check.stdout and str(tmp_path / "torch" / "hub" / "checkpoints") in check.stdout
    fetched = []
    monkeypatch.setattr(weights, "download_clip", lambda m, t: (fetched.append(("clip", m, t)),
                                                                _fake_clip_download(m, t)))
    monkeypatch.setattr(weights, "download_flow", lambda m, t: (fetched.append(("flow", m, t)),
                                                                _fake_flow_download(m, t)))
    items = weights.fetch(weights.needed(resolve_config([cfg_file])[0]))
    assert fetched == [("clip", "ViT-B-32", "openai"), ("flow", "raft", "things")]
    assert all(i["cached"] for i in items)
    assert weights.fetch(weights.needed(resolve_config([cfg_file])[0])) and len(fetched) == 2  # nothing twice
    check = run_cli("weights", "--check", "--configfile", cfg_file, env={**os.environ, **env})
    assert check.stdout.count("cached ") == 2
    # a local checkpoint is checked, not fetched; random weights need nothing
    import torch
    torch.save({"state_dict": {}}, tmp_path / "mine.pt")
    CONFIG_LOCAL = {**CONFIG, "clip": {"pretrained": str(tmp_path / "mine.pt")}, "flow": {"backend": "dis"}}
    cfg_file.write_text(yaml.safe_dump(CONFIG_LOCAL))
    items = weights.needed(resolve_config([cfg_file])[0])
    assert [(i["kind"], i["cached"]) for i in items] == [("local", True)] and weights.fetch(items) == items
    cfg_file.write_text(yaml.safe_dump({**CONFIG, "clip": {"pretrained": None}, "flow": {"backend": "dis"}}))
    assert weights.needed(resolve_config([cfg_file])[0]) == []


@pytest.mark.parametrize("section, message", [
    ({"flow": {"checkpoint": "models/raft.ckpt"}}, "MISSING  flow raft file models/raft.ckpt: file not found"),
    ({"flow": {"checkpoint": "nonsense"}}, "ptlflow has no checkpoint 'nonsense' for raft; its tags: "),
    ({"clip": {"pretrained": "weights/missing.pt"}}, "CLIP ViT-B-32 file weights/missing.pt: file not found"),
    ({"clip": {"pretrained": "NOT_A_CKPT"}}, "not a checkpoint"),
    ({"clip": {"pretrained": "laion_typo"}}, "open_clip has no tag 'laion_typo' for ViT-B-32; its tags: openai"),
])
def test_weights_that_cannot_be_had_are_one_line_each(tmp_path, monkeypatch, section, message):
    env = _caches(tmp_path, monkeypatch)
    (tmp_path / "notes.txt").write_text("not weights\n")
    section = yaml.safe_load(yaml.safe_dump(section).replace("NOT_A_CKPT", str(tmp_path / "notes.txt")))
    (tmp_path / "my.yaml").write_text(yaml.safe_dump({**CONFIG, **section}))
    proc = run_cli("weights", "--check", "--configfile", tmp_path / "my.yaml", check=False,
                   env={**os.environ, **env})
    assert proc.returncode == 1 and message in proc.stdout and "Traceback" not in proc.stderr, \
        proc.stdout + proc.stderr
