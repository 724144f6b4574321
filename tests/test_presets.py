"""The presets in configs/: with their paths pointed at real annotation excerpts, each passes a
dry run and resolves to the published protocol's values.

End-to-end scenarios: a dry run of every preset (Animal Kingdom's ViMoCLIP, Animal-CLIP and
AnimalMotionCLIP protocols, MammalNet, LoTE) on real annotation excerpts."""
import pytest
import yaml

from conftest import DATA, ROOT, copy_workflow, snakemake
from pipeline.config import resolve_config

pytestmark = pytest.mark.slow


def _lists(tmp_path, src, n_train, sep=None, n_val=0):
    """Train/(val)/test list files from one real excerpt, and the (empty) videos they name."""
    lines = src.read_text().splitlines()
    videos = tmp_path / "videos"
    for line in lines:
        path = videos / line.split(sep)[0].strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    (tmp_path / "train.txt").write_text("\n".join(lines[:n_train]) + "\n")
    (tmp_path / "val.txt").write_text("\n".join(lines[n_train:n_train + n_val]) + "\n")
    (tmp_path / "test.txt").write_text("\n".join(lines[n_train + n_val:]) + "\n")
    return {"videos": str(videos), "train": str(tmp_path / "train.txt"), "val": str(tmp_path / "val.txt"),
            "test": str(tmp_path / "test.txt")}


def _preset(tmp_path, name, dataset, sections=None):
    cfg = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
    for section, values in (sections or {}).items():
        cfg[section] = {**(cfg.get(section) or {}), **values}
    for key, value in dataset.items():
        if isinstance(value, dict):
            cfg["dataset"][key] = {**(cfg["dataset"].get(key) or {}), **value}
        else:
            cfg["dataset"][key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    (tmp_path / "wf").mkdir()
    work = copy_workflow(tmp_path / "wf", demo_clip=False)
    out = snakemake(work, "-n", "--configfile", path)
    assert "data/demo" not in out.stdout + out.stderr
    return resolve_config([path])[0], out.stdout


def _ak_preset(tmp_path, name):
    """An Animal Kingdom preset's dry run on the official lists' excerpt."""
    ak = DATA / "animal_kingdom"
    lists = _lists(tmp_path, ak / "train_multi.head400.txt", 300)
    return _preset(tmp_path, name, {
        "videos": lists["videos"], "classes": str(ak / "ak_action.csv"),
        "segments": str(ak / "ak_action_segments.csv"),
        "splits": {"train": lists["train"], "test": lists["test"]}})


def test_animal_kingdom_preset_is_vimoclips_protocol(tmp_path):
    config, dag = _ak_preset(tmp_path, "animal_kingdom")
    assert "results/animal_kingdom/heads/fusion/metrics.json" in dag
    assert config["sampling"]["mode"] == "all" and config["sampling"]["max_frames"] >= 10000
    assert (config["flow"]["model"], config["flow"]["checkpoint"], config["flow"]["work_size"],
            config["flow"]["size"]) == ("raft", "things", 360, 224)
    m = config["moclip"]
    assert (m["seq_len"], m["lr"], m["head_lr"], m["weight_decay"], m["schedule"], m["grad_clip"],
            m["adapter_alpha"], m["classifier"], m["cls_weight"], m["pos_weight"], m["select_by"],
            m["epochs"], m["batch_size"], m["epoch"], m["flow_norm"], m["adapter"], m["val_windows"],
            m["precision"]) == \
        (30, 1e-3, 1e-3, 0.0, "none", None, 0.1, "mlp", 1.0, 10, "val_loss", 10, 32, "all_windows",
         "per_frame_work", "vimoclip", "all", "float32")
    header = (ROOT / "configs" / "animal_kingdom.yaml").read_text().split("\ndataset:")[0]
    assert "ViT-B/16" in header and "clip='{model: ViT-B-16" in header
    f = config["heads"]["fusion"]
    assert (f["layers"], f["attention_heads"], f["ff_mult"], f["dropout"], f["positions"], f["variant"],
            f["lr"], f["weight_decay"], f["schedule"], f["min_lr"], f["epochs"], f["batch_size"],
            f["loss"], f["pos_weight"], f["select_by"], f["frames"]) == \
        (4, 8, 4, 0.1, False, "reference", 1e-4, 0.1, "cosine_epoch", 1e-6, 30, 8, "bce", None, "micro", "all")
    for h in ("rgb_only", "motion_only"):
        assert config["heads"][h]["layers"] == 4 and config["heads"][h]["positions"] is False


def test_mammalnet_preset(tmp_path):
    mn = DATA / "mammalnet"
    lists = _lists(tmp_path, mn / "composition_train.head300.txt", 200, n_val=50)
    config, dag = _preset(tmp_path, "mammalnet", {
        "videos": lists["videos"], "classes": str(mn / "behavior_to_id.csv"),
        "splits": {"train": lists["train"], "val": lists["val"], "test": lists["test"]},
        "species": {"names": str(mn / "genus_to_id.csv"), "relation": str(mn / "relation.txt")}})
    assert config["dataset"]["multilabel"] is False and config["dataset"]["eval_split"] == "test"
    assert config["dataset"]["segments"] == "animal_clip_mammalnet"
    assert "results/mammalnet/heads/prompt/metrics.json" in dag


def test_lote_preset_without_a_val_list(tmp_path):
    lote = DATA / "lote_animal"
    lists = _lists(tmp_path, lote / "LoTE_train.head300.txt", 250)
    config, dag = _preset(tmp_path, "lote", {
        "videos": lists["videos"], "classes": str(lote / "LoTE_label.csv"),
        "splits": {"train": lists["train"], "test": lists["test"]},
        "species": {"names": str(lote / "animal_label.csv"), "relation": str(lote / "relation.txt")}})
    assert config["dataset"]["multilabel"] is False and "val" not in config["dataset"]["splits"]
    assert config["dataset"]["segments"] == "animal_clip_lote"
    assert "features/clip/val" not in dag and "results/lote/heads/fusion/metrics.json" in dag


def test_animal_kingdom_species_preset_is_animal_clips_protocol(tmp_path):
    ak = DATA / "animal_kingdom"
    lists = _lists(tmp_path, ak / "train_all.head300.txt", 240, sep="\t")
    descriptions = tmp_path / "descriptions.csv"  # their file's format, our words
    descriptions.write_text('name,description\nEating,"The animal chews food. It swallows."\n')
    path_keys = {"videos": lists["videos"], "classes": str(ak / "label_titlecase.csv"),
                 "splits": {"train": lists["train"], "test": lists["test"]},
                 "species": {"names": str(ak / "animal_label.csv"),
                             "relation": str(ak / "animal-action-relation.txt")}}
    config, dag = _preset(tmp_path, "animal_kingdom_species", path_keys,
                          {"text": {"descriptions": str(descriptions)}})
    assert "results/animal_kingdom_species/heads/prompt/metrics.json" in dag
    assert config["dataset"]["segments"] == "animal_clip_ak" and config["clip"]["model"] == "ViT-B-16"
    assert config["text"]["description_units"] == "whole"
    p = config["heads"]["prompt"]
    assert (p["refine"], p["species_train"], p["pooling"], p["loss"], p["label_smoothing"],
            p["eval_scores"], p["lr"], p["betas"], p["weight_decay"], p["warmup_epochs"],
            p["schedule"], p["min_lr"], p["epochs"], p["batch_size"], p["frames"]) == \
        ("gcn", "oracle", "animal_clip", "ce_multi_hot", 0.0, "softmax", 8e-5, [0.9, 0.98], 1e-3, 5,
         "warmup_cosine_timm", 8e-8, 30, 64, 8)
    # the terms Animal-CLIP has not, off, as the head resolves them
    from pipeline.heads.entry import head_params
    resolved = head_params("prompt", p)
    assert (resolved["relation_prior"], resolved["softmax_weight"], resolved["anchor_weight"],
            resolved["species_weight"], resolved["grad_clip"]) == (False, 0.0, 0.0, 0.0, None)
    header = (ROOT / "configs" / "animal_kingdom_species.yaml").read_text().split("\ndataset:")[0]
    for cannot in ("fine-tunes its CLIP backbone", "Mixup/cutmix", "4 clips x 3 crops",
                   "373 species-action pairs found only in the test list", "no\n# label smoothing"):
        assert cannot in header, cannot


def test_animal_kingdom_motionclip_preset_uses_flow_images_and_no_student(tmp_path):
    config, dag = _ak_preset(tmp_path, "animal_kingdom_motionclip")
    assert config["flow"]["backend"] == "tvl1"
    i = config["heads"]["interleave"]
    assert (i["motion_source"], i["classifier"], i["loss"], i["temporal"]) == ("flow_clip", "text", "ce", "windows")
    assert "features/flow_clip/test/shard-0.h5" in dag and "rule flow_clip_model" in dag
    assert "rule moclip_train" not in dag and "features/motion/" not in dag  # no student


@pytest.mark.parametrize("name, data, names, relation, lists, sep", [
    ("mammalnet_animal_clip", "mammalnet", "genus_to_id.csv", "relation.txt", "composition_train.head300.txt", None),
    ("lote_animal_clip", "lote_animal", "animal_label.csv", "relation.txt", "LoTE_train.head300.txt", None)])
def test_animal_clips_mammalnet_and_lote_presets(tmp_path, name, data, names, relation, lists, sep):
    """ViT-B/16, 8 frames, the graph, the annotated species, their CE: on the real lists."""
    d = DATA / data
    split = _lists(tmp_path, d / lists, 240, sep=sep)
    classes = {"mammalnet": "behavior_to_id.csv", "lote_animal": "LoTE_label.csv"}[data]
    config, dag = _preset(tmp_path, name, {
        "videos": split["videos"], "classes": str(d / classes),
        "splits": {"train": split["train"], "test": split["test"]},
        "species": {"names": str(d / names), "relation": str(d / relation)}})
    assert f"results/{name}/heads/prompt/metrics.json" in dag and config["clip"]["model"] == "ViT-B-16"
    p = config["heads"]["prompt"]
    assert (p["refine"], p["species_train"], p["frames"], p["label_smoothing"], p["relation_prior"],
            p["grad_clip"], p["min_lr"]) == ("gcn", "oracle", 8, 0.0, False, None, 8e-8)
    assert config["text"]["species_templates"] == [] and config["dataset"]["multilabel"] is False
    # their class text without a description file: the label file's name, nothing else
    from pipeline.annotations import build_samples
    from pipeline.prompts import build_prompts
    s = build_samples(config["dataset"])
    prompts, _ = build_prompts(s.classes.names, config["text"]["templates"], None,
                               s.species.names, s.relation)
    assert prompts == [[n.lower()] for n in s.classes.names]
    # their relation file is the training pairs (no test-only pair), and the header says so
    assert set(build_samples({**config["dataset"], "species": {
        **config["dataset"]["species"], "relation_from": "train"}}).relation) <= set(s.relation)
    header = (ROOT / "configs" / f"{name}.yaml").read_text().split("\ndataset:")[0]
    assert "built from the training and the test list" not in header and "pairs of the" in header


def test_the_relation_from_the_training_list_only(tmp_path):
    """relation_from: train keeps the (species, action) pairs of training videos only."""
    from pipeline.annotations import build_samples
    ak = DATA / "animal_kingdom"
    split = _lists(tmp_path, ak / "train_all.head300.txt", 150, sep="\t")
    ds = {"format": "animal_kingdom_species", "videos": split["videos"],
          "classes": str(ak / "label_titlecase.csv"),
          "splits": {"train": split["train"], "test": split["test"]}, "train_split": "train",
          "species": {"names": str(ak / "animal_label.csv"), "relation": str(ak / "animal-action-relation.txt")}}
    from_file = set(build_samples(ds).relation)
    s = build_samples({**ds, "species": {**ds["species"], "relation_from": "train"}})
    from_train = set(s.relation)
    from pipeline.annotations.readers import parse_pairs
    listed = set()  # the (species, action) pairs the training list writes, by name
    for line in (ak / "train_all.head300.txt").read_text().splitlines()[:150]:
        listed |= set(parse_pairs(line.partition("\t")[2]))
    named = {(s.species.names[sp], s.classes.names[c]) for sp, c in from_train}
    assert named == listed and from_train != from_file and len(from_train) < len(from_file)
    # not every species of a video with every action of it: a video of two species pairs each
    # with its own actions (46 of these 300 lines would gain edges that way)
    crossed = {(sp, c) for r in s.rows if r["split"] == "train" for sp in r["species"] for c in r["labels"]}
    assert from_train < crossed
