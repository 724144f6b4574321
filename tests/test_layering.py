"""Config layering: a user's --configfile replaces the demo's config.yaml; schema defaults fill
the rest; `python -m pipeline config` prints what the run uses and where each value came from.

End-to-end scenarios: a config that gives only its data set builds its DAG without the demo; a
nested --config value reaches a real run with the schema's type."""
import shutil

import pytest
import yaml

from conftest import DATA, ROOT, copy_workflow, run_cli, snakemake
from pipeline.config import ConfigError, resolve_config

AK = DATA / "animal_kingdom"


def _ak_only(tmp_path):
    """A config with nothing but a `dataset:` section (Animal Kingdom list excerpts)."""
    lines = (AK / "train_multi.head400.txt").read_text().splitlines()
    videos = tmp_path / "videos"
    videos.mkdir()
    for line in lines:
        (videos / line.split()[0]).touch()
    (tmp_path / "train.txt").write_text("\n".join(lines[:300]) + "\n")
    (tmp_path / "val.txt").write_text("\n".join(lines[300:]) + "\n")
    cfg = {"dataset": {"name": "ak_mine", "format": "animal_kingdom", "videos": str(videos),
                       "classes": str(AK / "ak_action.csv"),
                       "splits": {"train": str(tmp_path / "train.txt"), "val": str(tmp_path / "val.txt")}}}
    path = tmp_path / "my_ak.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_a_dataset_only_config_builds_its_dag_without_the_demo(tmp_path):
    (tmp_path / "wf").mkdir()
    work = copy_workflow(tmp_path / "wf", demo_clip=False)
    mine = _ak_only(tmp_path)
    proc = snakemake(work, "-n", "--configfile", mine)
    out = proc.stdout + proc.stderr
    assert "data/demo" not in out and "demo_clip" not in out and "demo_data" not in out
    assert "results/ak_mine/features/clip/train/shard-0.h5" in out
    printed = run_cli("config", "--configfile", mine, cwd=work).stdout
    for line in ("  model: ViT-B-32  # schema default", "  pretrained: openai  # schema default",
                 "  backend: ptlflow  # schema default", "  checkpoint: things  # schema default",
                 f"  name: ak_mine  # {mine}"):
        assert line in printed, line
    assert "data/demo" not in printed and "demo-tiny" not in printed


def test_without_a_configfile_the_default_job_is_the_demo(tmp_path):
    (tmp_path / "wf").mkdir()
    work = copy_workflow(tmp_path / "wf", demo_clip=False)
    shutil.copy(ROOT / "config.yaml", work / "config.yaml")
    printed = run_cli("config", cwd=work).stdout
    assert "  model: demo-tiny-CNN  # config.yaml" in printed
    assert "  format: demo  # config.yaml" in printed
    over = run_cli("config", "--config", "shards=3", cwd=work).stdout
    assert "shards: 3  # --config" in over and "  format: demo  # config.yaml" in over


def test_files_merge_in_order_and_overrides_go_on_top(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(yaml.safe_dump({"dataset": {"name": "x", "format": "csv", "videos": "v",
                                             "classes": "c.csv", "annotations": "a.csv"},
                                 "clip": {"model": "ViT-B-16", "batch_size": 8}}))
    b.write_text(yaml.safe_dump({"clip": {"batch_size": 16}, "shards": 2}))
    config, sources = resolve_config([a, b], {"shards": 5})
    assert config["clip"] == {"model": "ViT-B-16", "batch_size": 16, "pretrained": "openai",
                              "dtype": "float16", "decode_workers": None, "precision": "auto"}
    assert sources[("clip", "model")] == str(a) and sources[("clip", "batch_size")] == str(b)
    assert sources[("clip", "pretrained")] == "schema default"
    assert config["shards"] == 5 and sources[("shards",)] == "--config"


def test_config_command_names_the_bad_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: {name: x, format: csv, videos: v, classes: c, annotations: a}\n"
                   "clip: {modle: ViT-B-32}\n")
    proc = run_cli("config", "--configfile", bad, check=False)
    assert proc.returncode == 2 and "unknown key 'clip.modle'" in proc.stderr
    with pytest.raises(ConfigError, match="config file not found"):
        resolve_config([tmp_path / "nope.yaml"])


def test_nested_config_overrides_take_the_schema_types():
    """Snakemake hands `--config 'clip={batch_size: 32}'` over as text ('32', 'null')."""
    from pipeline.config import typed_overrides
    got = typed_overrides({"clip": {"batch_size": "32", "pretrained": "null", "model": "ViT-B-32"},
                           "heads": {"fusion": {"lr": "1e-3", "frames": "all"}},
                           "dataset": {"eval_split": "2019", "name": "inf"}, "shards": 3})
    assert got == {"clip": {"batch_size": 32, "pretrained": None, "model": "ViT-B-32"},
                   "heads": {"fusion": {"lr": 0.001, "frames": "all"}},
                   "dataset": {"eval_split": "2019", "name": "inf"}, "shards": 3}
    config, sources = resolve_config([], {"clip": {"batch_size": "32", "pretrained": "null"}})
    assert config["clip"]["batch_size"] == 32 and config["clip"]["pretrained"] is None
    with pytest.raises(ConfigError, match=r"^--config: key 'clip.batch_size' must be of type integer"):
        resolve_config([], {"clip": {"batch_size": "abc"}})
    with pytest.raises(ConfigError, match=r"^--config: unknown key 'clip.batch'"):
        resolve_config([], {"clip": {"batch": "3"}})


@pytest.mark.slow
def test_snakemake_nested_config_reaches_the_run_typed(tmp_path):
    (tmp_path / "wf").mkdir()
    work = copy_workflow(tmp_path / "wf", demo_clip=False)
    shutil.copy(ROOT / "config.yaml", work / "config.yaml")
    proc = snakemake(work, "-n", "--config", "clip={batch_size: 32, pretrained: null}")
    assert "clip/train/shard-0.h5" in proc.stdout
    bad = snakemake(work, "-n", "--config", "clip={batch_size: many}", check=False)
    assert bad.returncode != 0
    assert "error: --config: key 'clip.batch_size' must be of type integer; got 'many'" in bad.stderr
