"""Published protocols as settings: Animal-CLIP's oracle species, softmax-ranked evaluation,
AdamW betas and label-smoothed cross-entropy on multi-label sets."""
import numpy as np
import pytest
import torch

from pipeline.heads.run import evaluate_head
from pipeline.heads.entry import as_resolved, head_params
from pipeline.heads.trainer import loss_fn, main_metric, predict_logits, ranking_scores, train_head
from pipeline.metrics import evaluate_logits
from pipeline.report import summary_rows
from test_prompt import C, CPU, _split, _text

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_species_train_oracle_trains_and_tests_on_the_annotated_species(tmp_path, monkeypatch):
    seen = []
    from pipeline.heads import prompt
    real = prompt.PromptHead.species_distribution

    def spy(self, video, species=None):
        p, logits = real(self, video, species)
        seen.append((self.training, p.detach().clone(), None if species is None else species.clone()))
        return p, logits
    monkeypatch.setattr(prompt.PromptHead, "species_distribution", spy)
    params = head_params("prompt", {"attention_heads": 4, "epochs": 2, "batch_size": 16, "frames": 6,
                                    "lr": 1e-3, "species_train": "oracle"})
    model, _ = train_head(as_resolved("prompt", params), _split(), None, C, False, CPU, progress=False, text=_text())
    training = [(p, s) for t, p, s in seen if t]
    assert training and all(torch.equal(p, s.float()) for p, s in training)  # weight 1 per species
    split = _split(seed=1)
    metrics = evaluate_head(model, split, predict_logits(model, split, params, CPU), params, False, None, CPU)
    assert metrics["species_source"] == "oracle" and "oracle_species" not in metrics
    rows = summary_rows([_write(tmp_path, {**metrics, "head": "prompt", "split": "test"})])
    assert [r["head"] for r in rows] == ["prompt (oracle species)"]
    # the default predicts species and reports the oracle beside it, as an ablation
    params = head_params("prompt", {"attention_heads": 4, "epochs": 1, "batch_size": 16, "frames": 6})
    model, _ = train_head(as_resolved("prompt", params), _split(), None, C, False, CPU, progress=False, text=_text())
    metrics = evaluate_head(model, split, predict_logits(model, split, params, CPU), params, False, None, CPU)
    assert metrics["species_source"] == "predicted" and "oracle_species" in metrics
    rows = summary_rows([_write(tmp_path, {**metrics, "head": "prompt", "split": "test"})])
    assert [r["head"] for r in rows] == ["prompt (predicted species)", "prompt (oracle species)"]


def _write(tmp_path, metrics):
    import json
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(metrics))
    return path


def test_softmax_ranked_evaluation_is_a_setting_and_is_recorded():
    """A video with large logits everywhere tops every class by its logits; a softmax over
    each video's classes ranks it by how its classes compare, as Animal-CLIP evaluates."""
    logits = np.array([[9.0, 8.0], [1.0, 3.0], [2.0, 0.0]])
    targets = np.array([[0, 1], [0, 1], [1, 0]])
    by_logits = evaluate_logits(ranking_scores(logits, {}), targets, multilabel=True)
    by_softmax = evaluate_logits(ranking_scores(logits, {"eval_scores": "softmax"}), targets, multilabel=True)
    assert by_logits["mAP"] == pytest.approx((1 / 2 + 1) / 2)  # video 0 outranks the eater
    assert by_softmax["mAP"] == pytest.approx(1.0)
    assert head_params("zero_shot", {"eval_scores": "softmax"})["eval_scores"] == "softmax"
    assert head_params("fusion", {})["eval_scores"] == "logits"


def test_epochs_are_selected_on_the_score_that_is_reported():
    """Under eval_scores: softmax the validation metric (what selects the epoch) ranks the
    softmax, as the reported mAP does (Animal-CLIP selects so); else the logits."""
    from test_head_params import C as classes, _split as multilabel_split
    train, val = multilabel_split(seed=0), multilabel_split(seed=1)
    for scores in ("softmax", "logits"):
        params = head_params("rgb_linear", {"epochs": 1, "batch_size": 8, "frames": 4,
                                            "eval_scores": scores})
        torch.manual_seed(0)
        model, history = train_head(as_resolved("rgb_linear", params), train, val, classes, True, CPU, progress=False)
        logits = predict_logits(model, val, params, CPU)
        reported = main_metric(ranking_scores(logits, params), val.targets, True)
        other = main_metric(ranking_scores(logits, {"eval_scores": "logits" if scores == "softmax"
                                                    else "softmax"}), val.targets, True)
        assert history[0]["val_metric"] == pytest.approx(reported) and abs(reported - other) > 1e-3


def test_adamw_betas_and_smoothed_cross_entropy_reach_the_training(monkeypatch):
    got = {}
    real = torch.optim.AdamW

    def spy(params, **kw):
        got.update(kw)
        return real(params, **kw)
    monkeypatch.setattr(torch.optim, "AdamW", spy)
    params = head_params("prompt", {"attention_heads": 4, "epochs": 1, "batch_size": 16, "frames": 6,
                                    "betas": [0.9, 0.98], "weight_decay": 1e-3})
    train_head(as_resolved("prompt", params), _split(), None, C, False, CPU, progress=False, text=_text())
    assert got["betas"] == (0.9, 0.98) and got["weight_decay"] == 1e-3
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5]])
    y = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    target = 0.9 * y / 2 + 0.1 / 4
    want = -(target * torch.log_softmax(logits, -1)).sum()
    got_loss = loss_fn(logits, y, True, {"loss": "ce", "label_smoothing": 0.1})
    assert float(got_loss) == pytest.approx(float(want))


def test_animal_clips_class_text_is_the_max_of_raw_description_embeddings(tmp_path, micro_clip):
    from pipeline.factory import open_clip_module
    from pipeline.features.text import read_descriptions
    from pipeline.heads.text_bank import prototypes
    bank = torch.tensor([[[3.0, 0.0], [0.0, 1.0], [1.0, 0.5], [2.0, 2.0]],
                         [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True] * 4, [True, False, False, False]])
    groups = [["name", "descriptions", "descriptions", "template:1"], ["name"]]
    got = prototypes(bank, mask, groups, pooling="animal_clip")
    # descriptions only ([0, 1], [1, 0.5]): raw max [1, 1]; normalising each first gives another
    torch.testing.assert_close(got[0], torch.tensor([1.0, 1.0]) / 2 ** 0.5)
    torch.testing.assert_close(got[1], torch.tensor([1.0, 1.0]) / 2 ** 0.5)  # no description: mean
    # whole descriptions, as written: not split, not filtered; CLIP's tokenizer cuts at 77 tokens
    long = "The animal walks slowly across the grass. " * 20
    path = tmp_path / "d.csv"
    path.write_text(f'name,description\nwalking,"{long}"\neating,"Chews. Swallows."\n')
    whole = read_descriptions(path, ["walking", "eating"], units="whole")
    assert whole == {0: [long.strip()], 1: ["Chews. Swallows."]}
    assert read_descriptions(path, ["walking", "eating"])[1] == ["Chews.", "Swallows."]
    tokens = open_clip_module().get_tokenizer(micro_clip)([long.strip()])
    assert tokens.shape[-1] == 77


def test_the_summary_says_which_rows_rank_a_softmax_and_which_trained_on_the_true_species(tmp_path):
    import json
    from pipeline.report import summary
    base = {"split": "test", "n_videos": 4, "mAP": 0.5, "mAP_micro": 0.5, "per_class_ap": [0.5, 0.5],
            "chance": {"mAP": 0.2, "mAP_micro": 0.2}}
    files = []
    for head, extra in (("prompt", {"species_source": "oracle", "eval_scores": "softmax"}),
                        ("zero_shot", {"eval_scores": "softmax"}), ("fusion", {"eval_scores": "logits"})):
        path = tmp_path / f"{head}.json"
        path.write_text(json.dumps({**base, **extra, "head": head}))
        files.append(path)
    text = summary(files, tmp_path / "rep").read_text()
    assert "mAP of prompt (oracle species), zero_shot ranks a softmax" in text
    assert "Animal-CLIP (trained" not in text  # no protocol was given: no number is cited
    assert "`species_train: oracle`" in text


def test_the_readme_presets_table_names_rows_its_presets_give():
    """Each README preset row names a head its preset trains (the AK preset once claimed an
    oracle prompt row without species or a prompt head)."""
    import re
    from conftest import ROOT
    from pipeline.config import resolve_config
    rows = [line for line in (ROOT / "README.md").read_text().splitlines()
            if re.match(r"\| `[a-z_]+\.yaml` \|", line)]
    assert len(rows) >= 5
    for line in rows:
        preset, _, row = [c.strip() for c in line.strip("|").split("|")][:3]
        config, _ = resolve_config([ROOT / "configs" / preset.strip("`")])
        if not row.startswith("`"):
            continue  # a metric (top-1 ...), every head gives it
        head = re.match(r"`([a-z_]+)", row).group(1)
        assert head in config["heads"], (preset, head)
        if "oracle species" in row:
            assert config["dataset"].get("species"), preset


def _protocol_row(preset, head, overrides=None, run_overrides=None):
    """A summary row of ``head`` as ``preset`` resolves it (with ``overrides`` on the entry and
    ``run_overrides`` on the config), and the run view the report job is given."""
    from pipeline.config import resolve_config
    from pipeline.heads.registry import run_entries
    from pipeline.protocols import run_view
    config, _ = resolve_config([ROOT / "configs" / f"{preset}.yaml"], run_overrides or {})
    if overrides:
        config["heads"][head] = {**config["heads"][head], **overrides}
    entries = run_entries(config)
    rows = [{"head": name, "type": e["type"], "entry": e, "species_source": "oracle"}
            for name, e in entries.items() if e["type"] == head]
    return rows, run_view(config)


@pytest.mark.parametrize("preset, head, cite", [
    ("animal_kingdom", "fusion", "77.09"),
    ("animal_kingdom_species", "prompt", "Animal-CLIP (trained and tested on the true species"),
    ("mammalnet_animal_clip", "prompt", "Animal-CLIP (MammalNet"),
    ("lote_animal_clip", "prompt", "Animal-CLIP (LoTE")])
def test_a_papers_number_is_set_only_beside_rows_of_its_protocol(preset, head, cite):
    from pipeline.report import compare_with
    presets = ROOT / "configs"
    rows, run = _protocol_row(preset, head)
    assert cite in compare_with(rows[0], run, presets)  # the preset itself is the protocol
    # another frame count, a grid expansion, a setting of the run: named, not cited
    rows, run = _protocol_row(preset, head, {"frames": 16} if head == "fusion" else {"frames": 4})
    got = compare_with(rows[0], run, presets)
    assert cite not in got and ("frames (16; all)" if head == "fusion" else "frames (4; 8)") in got
    rows, run = _protocol_row(preset, head, {"grid": {"lr": [1e-3, 3e-3]}})
    assert all(cite not in compare_with(r, run, presets) and "lr (" in compare_with(r, run, presets)
               for r in rows) and len(rows) == 2
    rows, run = _protocol_row(preset, head, None, {"clip": {"model": "ViT-L-14"}})
    assert "clip.model (ViT-L-14; ViT-B-" in compare_with(rows[0], run, presets)
    # the same entry on another data set format: no number there
    rows, run = _protocol_row(preset, head)
    run = {**run, "dataset": {**run["dataset"], "format": "csv"}}
    assert cite not in compare_with(rows[0], run, presets)


def test_default_heads_are_not_cited_on_the_papers_data_set():
    """The default fusion entry (16 frames, 2 layers...) on Animal Kingdom is not ViMoCLIP's row."""
    from pipeline.config import resolve_config
    from pipeline.heads.registry import run_entries
    from pipeline.protocols import run_view
    from pipeline.report import compare_with
    config, _ = resolve_config([ROOT / "configs" / "animal_kingdom.yaml"], {})
    config["heads"] = {"fusion": {}}
    run = run_view(config)
    e = run_entries(config)["fusion"]
    got = compare_with({"head": "fusion", "type": "fusion", "entry": e}, run, ROOT / "configs")
    assert "77.09" not in got and "frames (16; all)" in got and "grad_clip (1.0; null)" in got and "more" in got


def test_ce_multi_hot_is_torchs_cross_entropy_on_the_multi_hot_target():
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.3], [0.1, 0.2, 0.3, 0.4]])
    targets = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    params = {"loss": "ce_multi_hot", "label_smoothing": 0.0}
    want = torch.nn.CrossEntropyLoss()(logits, targets)
    torch.testing.assert_close(loss_fn(logits, targets, True, params), want)
    shared = loss_fn(logits, targets, True, {**params, "loss": "ce"})
    assert not torch.isclose(shared, want)  # ce: the positives share the target


def test_animal_clips_schedule_decay_and_scale_are_theirs():
    """timm's cosine (not restarted after the warm-up), no decay on 1-D parameters and biases,
    CLIP's logit scale frozen: settings, and the Animal-CLIP presets set them."""
    import math
    import yaml
    from pipeline.heads.trainer import decay_groups
    from pipeline.training import lr_factor
    steps = 10
    f = [lr_factor(s, steps, 30, "warmup_cosine_timm", 5, 0.0) for s in range(300)]
    assert f[0] == 0.0 and f[25] == 0.5  # timm warms up from warmup_lr_init = 0
    assert abs(f[50] - 0.5 * (1 + math.cos(math.pi * 50 / 300))) < 1e-12 and 0.93 < f[50] < 0.934
    assert lr_factor(50, steps, 30, "warmup_cosine", 5, 0.0) == 1.0  # ours restarts the cosine
    from timm.scheduler.cosine_lr import CosineLRScheduler  # ptlflow installs timm
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=8e-5)
    timm = CosineLRScheduler(opt, t_initial=300, lr_min=8e-8, warmup_lr_init=0, warmup_t=50,
                             cycle_limit=1, t_in_epochs=False)  # as Animal-CLIP builds it
    for s in range(300):
        timm.step_update(s)
        want = opt.param_groups[0]["lr"]
        assert abs(8e-5 * lr_factor(s, steps, 30, "warmup_cosine_timm", 5, 8e-8 / 8e-5) - want) < 1e-12, s
    head = head_params("prompt", {"attention_heads": 4, "weight_decay_1d": False, "learn_scale": False})
    from pipeline.heads.prompt import PromptHead
    model = PromptHead(8, 0, 3, attention_heads=4, learn_scale=False)
    decayed, exempt = decay_groups(model, 1e-3, head["weight_decay_1d"])
    names = {id(p): n for n, p in model.named_parameters()}
    assert exempt["weight_decay"] == 0.0 and decayed["weight_decay"] == 1e-3
    assert all(p.ndim == 1 or names[id(p)].endswith(".bias") for p in exempt["params"])
    assert all(p.ndim != 1 and not names[id(p)].endswith(".bias") for p in decayed["params"])
    assert "logit_scale" not in {names[id(p)] for g in (decayed, exempt) for p in g["params"]}
    assert len(decay_groups(model, 1e-3, True)) == 1
    for preset in ("animal_kingdom_species", "mammalnet_animal_clip", "lote_animal_clip"):
        p = yaml.safe_load((ROOT / "configs" / f"{preset}.yaml").read_text())["heads"]["prompt"]
        assert (p["schedule"], p["weight_decay_1d"], p["learn_scale"], p["eval_scores"], p["conditioning"]) == \
            ("warmup_cosine_timm", False, False, "softmax", "species"), preset


def test_a_frozen_logit_scale_does_not_move_in_training():
    params = head_params("prompt", {"attention_heads": 4, "epochs": 2, "batch_size": 16, "frames": 6,
                                    "learn_scale": False})
    model, _ = train_head(as_resolved("prompt", params), _split(), None, C, False, CPU, progress=False, text=_text())
    import math
    from pipeline.heads.prompt import CLIP_SCALE
    assert model.logit_scale.item() == pytest.approx(math.log(CLIP_SCALE))
    params["learn_scale"] = True
    model, _ = train_head(as_resolved("prompt", params), _split(), None, C, False, CPU, progress=False, text=_text())
    assert model.logit_scale.item() != pytest.approx(math.log(CLIP_SCALE))


def test_species_conditioning_attends_to_the_species_text_only(monkeypatch):
    """conditioning: species: the class tokens' memory is the species token alone (Animal-CLIP's
    prompt generator), not the frames with it."""
    import pipeline.heads.prompt as prompt
    from pipeline.heads.prompt import PromptHead
    seen, real = [], prompt.attention
    monkeypatch.setattr(prompt, "attention", lambda m, q, mem, pad: seen.append(mem.shape) or real(m, q, mem, pad))
    rgb, mask = torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)
    for c in (True, "species"):
        h = PromptHead(8, 0, 3, n_species=2, attention_heads=4, conditioning=c)
        h.set_species(torch.nn.functional.normalize(torch.randn(2, 8), dim=-1), torch.ones(2, 3))
        h.set_classes(torch.nn.functional.normalize(torch.randn(3, 8), dim=-1))
        assert h(rgb, None, mask).shape == (2, 3)
    assert [tuple(x)[:2] for x in seen] == [(2, 6), (2, 1)]  # 5 frames + species; species alone


def test_per_frame_work_rendering_floors_the_peak_at_a_source_pixel():
    """A uniform 0.8-px motion of a 360-px clip stored at 224 renders as ptlflow renders it on the
    source frame (1, .2, .2); per_frame floors at a stored pixel (1.6 source pixels): (1, .5, .5)."""
    from ptlflow.utils.flow_utils import flow_to_rgb as ptlflow_rgb
    from pipeline.moclip.model import MotionStudent, per_frame_rgb
    source = torch.zeros(1, 2, 36, 36)
    source[:, 0] = 0.8
    theirs = ptlflow_rgb(source)[0, :, 0, 0]
    stored = source * 224 / 360
    ours = per_frame_rgb(stored, floor=224 / 360)[0, :, 0, 0]
    assert torch.allclose(ours, theirs, atol=1 / 255) and abs(float(theirs[1]) - 0.2) < 0.01
    assert float(per_frame_rgb(stored)[0, 1, 0, 0]) > 0.45  # the stored-pixel floor: paler
    visual = torch.nn.Identity()
    visual.output_dim = 8
    student = MotionStudent(visual, 2, 8, [0, 0, 0], [1, 1, 1], 20.0, flow_norm="per_frame_work",
                            floor=224 / 360)
    assert student.floor == 224 / 360
    assert MotionStudent(visual, 2, 8, [0, 0, 0], [1, 1, 1], 20.0, flow_norm="per_frame",
                         floor=224 / 360).floor == 1.0


def test_vimoclips_windows_start_every_30_rows_and_hold_29():
    from pipeline.moclip.windows import epoch_plan
    plan = sorted(epoch_plan(["a"], {"a": 95}, 29, 0, 0, "all_windows", stride=30))
    assert plan == [("a", 0), ("a", 30), ("a", 60), ("a", 90)]
    assert sorted(epoch_plan(["a"], {"a": 95}, 29, 0, 0, "all_windows"))[1] == ("a", 29)
    header = (ROOT / "configs" / "animal_kingdom.yaml").read_text().split("\ndataset:")[0]
    assert "window_stride: 30" in header


def test_the_protocol_tables_say_what_each_preset_resolves_to():
    """docs/protocols.md: each table's "this preset" column is the preset's resolved value."""
    import re
    import yaml
    from pipeline.config import resolve_config
    text = (ROOT / "docs" / "protocols.md").read_text()
    tables = re.split(r"\n### ", text.split("## Each preset against the released code")[1])[1:]
    checked = 0
    for table in tables:
        presets = re.findall(r"`configs/([a-z_]+)\.yaml`", table.splitlines()[0])
        for preset in presets:
            config, _ = resolve_config([ROOT / "configs" / f"{preset}.yaml"], {})
            for line in table.splitlines():
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                m = re.fullmatch(r"`([\w.]+): (.+)`", cells[3]) if len(cells) == 5 else None
                if not m:
                    continue
                key, want = m.group(1), yaml.safe_load(m.group(2))
                parts = key.split(".")
                if parts[0] == "heads":
                    got = head_params(parts[1], config["heads"][parts[1]])[parts[2]]
                else:
                    got = config
                    for part in parts:
                        got = got[part]
                assert got == want, (preset, key, got, want)
                checked += 1
    assert checked > 60, checked


def test_each_difference_in_the_tables_is_stated_in_its_presets_header():
    import re
    text = (ROOT / "docs" / "protocols.md").read_text()
    for table in re.split(r"\n### ", text.split("## Each preset against the released code")[1])[1:]:
        presets = re.findall(r"`configs/([a-z_]+)\.yaml`", table.splitlines()[0])
        for line in table.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 5 and cells[4].startswith("no"):
                key = re.match(r"`([\w.]+)", cells[3]).group(1).split(".")[-1]
                for preset in presets:
                    header = (ROOT / "configs" / f"{preset}.yaml").read_text().split("\ndataset:")[0]
                    assert key in header, (preset, key)


def test_without_the_presets_no_number_is_cited(tmp_path):
    from pipeline.report import compare_with
    rows, run = _protocol_row("animal_kingdom", "fusion")
    got = compare_with(rows[0], run, tmp_path)  # a folder without the presets
    assert "77.09" not in got and "is not here to compare with" in got
    assert "77.09" not in compare_with(rows[0], run, None)
