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


def test_keys_added_with_a_neutral_default_stay_out_of_rerun_triggers():
    """A run made before moclip.adapter existed re-runs nothing when its config gains the key at
    its default; another value re-runs the student."""
    from pipeline.config import section
    from pipeline.recipes import NEUTRAL_DEFAULTS, trigger_view
    moclip = section("moclip", {})
    assert "adapter" not in trigger_view("moclip", moclip) and "val_windows" not in trigger_view("moclip", moclip)
    assert trigger_view("moclip", {**moclip, "adapter": "vimoclip"})["adapter"] == "vimoclip"
    assert "description_units" not in trigger_view("text", section("text", {}))
    for name, keys in NEUTRAL_DEFAULTS.items():  # each is the schema's default (heads: the code's)
        if name == "heads":
            from pipeline.heads.registry import HEAD_TYPES
            from pipeline.heads.entry import head_params
            for kind in HEAD_TYPES:
                got = head_params(kind, {})
                assert {k: got[k] for k in keys if k in got} == {k: v for k, v in keys.items() if k in got}
            continue
        assert {k: section(name, {})[k] for k in keys} == keys


def test_a_renamed_key_is_refused_with_its_new_name(tmp_path):
    """heads.<head>.heads (attention heads, beside the classifier heads of `heads:`) is now
    attention_heads: an old config says what to rename, not just "unknown key"."""
    cfg = {"dataset": {"name": "x", "format": "csv", "videos": "v", "classes": "c.csv",
                       "annotations": "a.csv"}, "heads": {"fusion": {"heads": 8}}}
    with pytest.raises(ConfigError, match=r"'heads\.fusion\.heads' is now called 'attention_heads'"):
        validate_config(cfg)
    cfg["heads"]["fusion"] = {"attention_heads": 8}
    assert validate_config(cfg)["heads"]["fusion"]["attention_heads"] == 8


def test_speed_settings_are_marked_once_and_reach_the_jobs_but_not_the_triggers(monkeypatch):
    """The schema marks the speed-only keys (x-runtime); the rules' triggers leave them out, the
    jobs get them from the environment, and a batch size that changes training stays a setting
    (moclip.batch_size once reached neither the student nor its trigger)."""
    import json
    from pipeline.config import section
    from pipeline.recipes import runtime_keys, trigger_view
    from pipeline.runtime import RUNTIME_ENV, runtime_settings, with_runtime
    assert runtime_keys() == {"": ("decoder", "device", "tracking"), "clip": ("batch_size", "decode_workers"),
                              "flow": ("batch_size", "decode_workers", "storage"), "moclip": ("num_workers",)}
    assert "batch_size" not in trigger_view("clip", section("clip", {}))
    assert trigger_view("moclip", section("moclip", {"batch_size": 8}))["batch_size"] == 8
    config = {"device": "cpu", "decoder": "opencv", "clip": section("clip", {"batch_size": 16}),
              "flow": section("flow", {}), "moclip": section("moclip", {"num_workers": 3})}
    monkeypatch.setenv(RUNTIME_ENV, json.dumps(runtime_settings(config)))
    assert with_runtime("clip", {"model": "ViT-B-16"})["batch_size"] == 16  # from the workflow
    assert with_runtime("clip", {}, {"batch_size": 4})["batch_size"] == 4   # a flag wins
    assert with_runtime("moclip", {"batch_size": 8}) == section("moclip", {"batch_size": 8, "num_workers": 3})
