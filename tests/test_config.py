import pytest

from pipeline.config import ConfigError, load_config, validate_config

BASE = {"dataset": {"name": "ak", "format": "animal_kingdom", "videos": "v", "classes": "c.csv",
                    "splits": {"train": "t.txt"}}}


def test_defaults_are_filled():
    cfg = validate_config(BASE)
    assert cfg["shards"] == 4 and cfg["clip"]["model"] == "ViT-B-32"
    assert cfg["flow"]["bound"] == 20 and cfg["sampling"]["mode"] == "uniform"


@pytest.mark.parametrize("change, words", [
    ({"shards": "four"}, ["'shards'", "integer", "four"]),
    ({"dataset": {**BASE["dataset"], "format": "kinetics"}}, ["dataset.format", "animal_kingdom"]),
    ({"dataset": {**BASE["dataset"], "fromat": "x"}}, ["unknown key 'dataset.fromat'", "format"]),
    ({"clip": {"batchsize": 3}}, ["unknown key 'clip.batchsize'", "batch_size"]),
    ({"sampling": {"mode": "every"}}, ["sampling.mode", "uniform"]),
    ({"shards": 0}, ["shards"]),
])
def test_wrong_key_or_value_names_the_key_and_what_is_allowed(change, words):
    with pytest.raises(ConfigError) as e:
        validate_config({**BASE, **change})
    for w in words:
        assert w in str(e.value)


def test_format_specific_requirements():
    with pytest.raises(ConfigError, match="dataset.annotations"):
        validate_config({"dataset": {**BASE["dataset"], "format": "csv"}})
    ds = {k: v for k, v in BASE["dataset"].items() if k != "splits"}
    with pytest.raises(ConfigError, match="dataset.splits"):
        validate_config({"dataset": ds})


def test_shipped_config_is_valid(tmp_path):
    from conftest import ROOT
    cfg = load_config(ROOT / "config.yaml")
    assert cfg["dataset"]["format"] == "demo" and cfg["clip"]["pretrained"] == "data/demo/demo_clip.pt"
    bad = tmp_path / "c.yaml"
    bad.write_text("dataset: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
