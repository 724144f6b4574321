"""Prompt-classifier heads: the text bank, zero-shot, the trained prompt head and its parts."""
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.config import section
from pipeline.features.text import extract_text, n_tokens, split_sentences
from pipeline.prompts import build_prompts
from pipeline.heads.data import SplitFeatures
from pipeline.heads.models import build_head
from pipeline.heads.graph import UNKNOWN, relation_graph, relation_prior
from pipeline.heads.prompt import ZeroShotHead
from pipeline.heads.text_bank import prototypes, relation_matrix
from pipeline.heads.entry import as_resolved, head_params, resolve_head
from pipeline.heads.trainer import train_head
from pipeline.text_store import read_text_bank

CPU = torch.device("cpu")
D, C, S = 16, 5, 3


def test_sentences_split_filtered_and_counted():
    long = "The animal " + " ".join(f"moves its leg number {i}," for i in range(30)) + " and stops."
    texts = ["As a biologist, I would describe this behaviour in detail. The cat licks its paw.",
             "I'm sorry, but I cannot help with that.", None, "null", "  ",
             "1. The bird spreads its wings.\n2. It flaps rapidly!", long]
    dropped = {}
    out = split_sentences(texts, dropped=dropped)
    assert out[:3] == ["The cat licks its paw.", "The bird spreads its wings.", "It flaps rapidly!"]
    assert len(out) > 4 and all(n_tokens(s) <= 75 for s in out)
    assert " ".join(out[3:]).split() == long.split()  # cut, nothing lost
    assert dropped == {"boilerplate": 1, "refusal": 1, "empty": 3, "split (too long)": 1}


def test_prompts_name_first_species_pairs_only_from_the_relation():
    prompts, sources = build_prompts(["walking", "flying"], ["a video of an animal {action}",
                                                              "a {species} {action}", "{action}"],
                                     {0: ["Legs move in turn."]}, ["cat", "eagle"], [(0, 0), (1, 1)])
    assert prompts[0] == ["walking", "a video of an animal walking", "a cat walking", "Legs move in turn."]
    assert sources[0] == ["name", "template:0", "template:1", "description"]
    assert prompts[1] == ["flying", "a video of an animal flying", "an eagle flying"]
    from pipeline.prompts import fill
    assert [fill("A {species} {action}", species=sp, action="walks") for sp in
            ("unicorn", "ostrich", "European bison", "ibex")] == \
        ["A unicorn walks", "An ostrich walks", "A European bison walks", "An ibex walks"]


def test_bank_with_species_mask_and_hash(micro_clip, tmp_path):
    desc, sp_desc = tmp_path / "d.yaml", tmp_path / "s.yaml"
    desc.write_text("walking: ['Sure, here are descriptions:', 'Legs move in turn. The body sways.']\n")
    sp_desc.write_text("cat: [A small furry animal.]\n")
    text = section("text", {"descriptions": str(desc), "species_descriptions": str(sp_desc)})
    clip = section("clip", {"model": micro_clip, "pretrained": None})
    extract_text(["walking", "eating"], tmp_path / "t.h5", text, clip, CPU,
                 species_names=["cat", "dog"], relation=[(0, 0), (1, 0), (1, 1)])
    bank = read_text_bank(tmp_path / "t.h5")
    rows = [p for p, m in zip(bank["prompts"][0], bank["mask"][0]) if m]
    assert rows[0] == "walking" and "Legs move in turn." in rows and "The body sways." in rows
    assert not any(r.startswith("Sure") for r in rows)
    assert "a cat walking" in rows and "a dog walking" in rows
    eating = [p for p, m in zip(bank["prompts"][1], bank["mask"][1]) if m]
    assert "a dog eating" in eating and "a cat eating" not in eating
    assert bank["mask"].sum(1).tolist() == [len(rows), len(eating)]
    assert not bank["embeddings"][1][~bank["mask"][1]].any()  # padding rows are zero
    sp = bank["species"]
    assert sp["class_names"] == ["cat", "dog"] and sp["embeddings"].shape[::2] == (2, 32)
    assert "A small furry animal." in list(sp["prompts"][0])
    assert bank["attrs"]["relation"] == [[0, 0], [1, 0], [1, 1]]
    h = bank["attrs"]["prompt_hash"]
    extract_text(["walking", "eating"], tmp_path / "t2.h5", section("text", {"templates": ["{action}!"]}),
                 clip, CPU)
    assert read_text_bank(tmp_path / "t2.h5")["attrs"]["prompt_hash"] != h


def _text(rng=None):
    g = torch.Generator().manual_seed(0)
    return {"protos": F.normalize(torch.randn(C, D, generator=g), dim=-1),
            "species_protos": F.normalize(torch.randn(S, D, generator=g), dim=-1),
            "relation": relation_matrix([(0, 0), (0, 1), (1, 2), (1, 3)], S, C),
            "class_names": [f"c{i}" for i in range(C)]}


def _batch(b=4, t=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    rgb, motion = torch.randn(b, t, D, generator=g), torch.randn(b, t, 8, generator=g)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[1, 4:] = False
    mask[3, 2:] = False
    return rgb, motion, mask


def _prompt(**overrides):
    head = resolve_head("prompt", {"attention_heads": 4, "motion": True, **overrides})
    return build_head(head, D, 8, C, _text(), multilabel=True).eval()


def test_prompt_head_equals_zero_shot_at_initialisation():
    rgb, motion, mask = _batch()
    zs = build_head(resolve_head("zero_shot"), D, 0, C, _text()).eval()
    for refine in ("mlp", "attention"):
        head = _prompt(refine=refine)
        torch.testing.assert_close(head(rgb, motion, mask), zs(rgb, None, mask).float(), atol=1e-4, rtol=1e-5)
    # zero-shot by hand: mean of normalised frames against mean of normalised bank rows
    bank = torch.randn(C, 3, D)
    bank_mask = torch.tensor([[1, 1, 0]] * C, dtype=torch.bool)
    z = ZeroShotHead(D, C)
    z.set_classes(prototypes(bank, bank_mask))
    v = F.normalize(F.normalize(rgb[0, :6], dim=-1).mean(0), dim=-1)
    p = F.normalize(F.normalize(bank[:, :2], dim=-1).mean(1), dim=-1)
    torch.testing.assert_close(z(rgb[:1], None, mask[:1])[0].float(), 100 * p @ v)


def _perturb(head):
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        head.gamma.fill_(0.0)


def test_padding_never_changes_scores_and_conditioned_prompts_are_per_video():
    head = _prompt()
    _perturb(head)
    rgb, motion, mask = _batch()
    out = head(rgb, motion, mask)
    assert out.shape == (4, C)
    rgb2, motion2 = rgb.clone(), motion.clone()
    rgb2[~mask], motion2[~mask] = 55.0, -7.0
    torch.testing.assert_close(head(rgb2, motion2, mask), out)
    base, refined = head.class_embeddings()
    assert base.shape == refined.shape == (C, D) and not torch.allclose(base, refined)
    # the same video twice gives the same scores; a different video other class embeddings
    two = head(rgb[[0, 0, 2]], motion[[0, 0, 2]], mask[[0, 0, 2]])
    torch.testing.assert_close(two[0], two[1])
    assert not torch.allclose(two[0], two[2])


def test_relation_prior_is_neutral_at_gamma_zero():
    head = _prompt()
    _perturb(head)
    rgb, motion, mask = _batch()
    with_prior = head(rgb, motion, mask)
    head.relation = torch.ones_like(head.relation)
    torch.testing.assert_close(head(rgb, motion, mask), with_prior)
    head.relation = _text()["relation"]
    with torch.no_grad():
        head.gamma.fill_(1.0)
    p_species, _ = head.species_distribution(F.normalize(
        (F.normalize(rgb, dim=-1) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1))
    expected = torch.log((p_species @ relation_prior(head.relation)).clamp(min=1e-4))
    assert (expected < -0.01).any()  # classes this species is not known to do lose score
    torch.testing.assert_close(head(rgb, motion, mask) - with_prior, expected, atol=1e-4, rtol=1e-4)
    assert head.relation[2].tolist() == [UNKNOWN] * C  # species 2 has no known pair
    assert relation_prior(head.relation)[2].tolist() == [1.0] * C  # ... so its prior is neutral


def test_a_species_that_does_every_action_keeps_its_graph_edges():
    """MammalNet's panthera and acinonyx do every behaviour: that is knowledge (an edge to each
    class), unlike a species nothing is known of (no edge); a class no species is known to do
    and a class added after training have none either."""
    r = relation_matrix([(0, c) for c in range(C)] + [(1, 2)], S, C)  # species 2: nothing known
    a = relation_graph(r)
    assert a[0, S:].tolist() == [1.0] * C  # every edge of the species that does everything
    assert a[1, S:].tolist() == [0, 0, 1, 0, 0][:C] and a[2, S:].sum() == 0
    mammalnet = torch.tensor([[1.0] * 4, [1, 0, 0, 0], [0, 1, 1, 0]])  # class 3: species 0 only
    edges = relation_graph(mammalnet)[:3, 3:]
    assert edges.sum() == 7 and edges[:, 3].tolist() == [1, 0, 0]  # 4 + 1 + 2 edges
    # a head saved when "nothing known" was written as ones (no relation_format): a row of ones
    # cannot be read back, so it is refused; one without loads as saved
    head = _prompt(refine="gcn")
    old = torch.tensor([[1.0, 1, 0, 0, 0], [0, 0, 1, 1, 0], [1, 1, 1, 1, 1]])  # species 2: ones
    saved = {k: v for k, v in head.state_dict().items() if k != "relation_format"}
    with pytest.raises(ValueError, match="cannot be told apart"):
        head.load_state_dict({**saved, "relation": old})
    head.load_state_dict({**saved, "relation": old[:2].repeat(2, 1)[:3]})
    assert head.relation.tolist() == old[:2].repeat(2, 1)[:3].tolist()


def test_a_head_of_the_previous_format_is_upgraded_once_from_its_runs_relation(tmp_path):
    """MammalNet's panthera does every behaviour: an old checkpoint wrote it as ones, as it wrote
    a species nothing is known of. load_head reads the run's relation.tsv, keeps panthera's
    edges, and rewrites the checkpoint once; without relation.tsv it refuses."""
    from pipeline.heads.run import load_head
    head = _prompt(refine="gcn")
    state = {k: v for k, v in head.state_dict().items() if k != "relation_format"}
    state["relation"] = torch.tensor([[1.0] * C, [0, 0, 1, 1, 0], [1.0] * C])  # 0: every; 2: unknown
    ckpt = {"state_dict": state, "type": "prompt", "name": "prompt",
            "params": head_params("prompt", {"attention_heads": 4, "motion": True, "refine": "gcn"}),
            "dims": {"rgb": D, "motion": 8}, "n_classes": C, "n_species": S, "multilabel": True,
            "class_names": [f"c{i}" for i in range(C)], "text": {"attrs": {}}}
    path = tmp_path / "run" / "heads" / "prompt" / "head.pt"
    path.parent.mkdir(parents=True)
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="relation.tsv"):
        load_head(path)
    (tmp_path / "run" / "species.tsv").write_text("id\tname\n0\tpanthera\n1\tvulpes\n2\tlynx\n")
    (tmp_path / "run" / "relation.tsv").write_text(
        "species\tclass\n" + "".join(f"0\t{c}\n" for c in range(C)) + "1\t2\n1\t3\n")
    model, _, _ = load_head(path)
    assert model.relation[0].tolist() == [1.0] * C and model.relation[2].tolist() == [UNKNOWN] * C
    again = torch.load(path, weights_only=False)["state_dict"]
    assert int(again["relation_format"]) == 2 and torch.equal(again["relation"], model.relation)


def test_a_trained_prompt_head_round_trips_its_relation(tmp_path):
    """A species that does every action keeps its edges through save and load (run_head's
    checkpoint, load_head as evaluation and predict use it)."""
    head = _prompt(refine="gcn")
    every = relation_matrix([(0, c) for c in range(C)] + [(1, 2), (2, 3)], S, C)  # no unknown
    assert not (every == UNKNOWN).any()
    head.relation = every.clone()
    torch.save({"state_dict": head.state_dict()}, tmp_path / "head.pt")
    again = _prompt(refine="gcn")
    again.load_state_dict(torch.load(tmp_path / "head.pt")["state_dict"])
    assert torch.equal(again.relation, every) and again.relation[0].tolist() == [1.0] * C
    assert torch.equal(relation_graph(again.relation), relation_graph(every))


def _split(n=48, seed=0, species=True):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((C, D)).astype(np.float32)
    labels = np.arange(n) % C
    rgb = (centres[labels][:, None] + 0.5 * rng.standard_normal((n, 6, D))).astype(np.float16)
    sp = np.zeros((n, S), np.float32)
    sp[np.arange(n), labels % S] = 1
    return SplitFeatures([f"v{i}" for i in range(n)], rgb, None, np.full(n, 6), labels.astype(np.int64),
                         {}, sp if species else None)


def test_a_class_added_after_training_is_scored_without_retraining():
    params = head_params("prompt", {"attention_heads": 4, "epochs": 3, "batch_size": 16, "frames": 6, "lr": 1e-3})
    text = {**_text(), "species_protos": None, "relation": None}
    model, history = train_head(as_resolved("prompt", params), _split(species=False), _split(seed=1, species=False),
                                C, False, CPU, progress=False, text=text)
    assert len(history) == 3
    rgb = torch.from_numpy(_split(seed=2).rgb.padded().astype(np.float32))[:8]
    mask = torch.ones(8, 6, dtype=torch.bool)
    before = model(rgb, None, mask)
    # a new class whose prototype is that of class 2, plus one unlike any other
    extra = torch.cat([text["protos"], text["protos"][2:3], F.normalize(torch.randn(1, D), dim=-1)])
    model.set_classes(extra, None)
    after = model(rgb, None, mask)
    assert after.shape == (8, C + 2)
    torch.testing.assert_close(after[:, C], after[:, 2])
    torch.testing.assert_close(after[:, :C], before)  # classes are scored independently


def test_learnable_mode_trains_only_the_context_vectors(micro_clip):
    from pipeline.factory import load_clip, open_clip_module
    clip = load_clip(micro_clip, None)
    tower = {k: v.clone() for k, v in clip.state_dict().items()}
    text = {**_text(), "protos": None, "clip": (clip, open_clip_module().get_tokenizer(micro_clip))}
    split = _split(species=False)
    split = replace(split, rgb=np.random.default_rng(0).standard_normal((48, 6, 32)).astype(np.float16))
    params = head_params("prompt", {"attention_heads": 4, "epochs": 2, "batch_size": 16, "frames": 6,
                                    "text_mode": "learnable", "n_ctx": 3, "lr": 1e-2})
    from pipeline.heads.prompt import CoopText
    ctx0 = CoopText(clip, text["clip"][1], text["class_names"], 3).ctx.detach().clone()
    model, _ = train_head(as_resolved("prompt", params), split, None, C, False, CPU, progress=False,
                          text={**text, "species_protos": None})
    assert model.coop.ctx.shape == ctx0.shape and not torch.equal(model.coop.ctx, ctx0)
    for k, v in clip.state_dict().items():
        assert torch.equal(v, tower[k]), f"CLIP text tower changed: {k}"
    assert not any(k.startswith("coop.clip") for k in model.state_dict())
    assert "coop.ctx" in model.state_dict()
    # class names can change (open vocabulary) without new weights
    model.coop.set_names(["swimming", "eating"])
    assert model.coop().shape == (2, 32)


def test_zero_shot_needs_no_training_and_is_clips_classifier():
    params = head_params("zero_shot", {"frames": 6})
    model, history = train_head(as_resolved("zero_shot", params), _split(), None, C, False, CPU,
                                progress=False, text=_text())
    assert history == [] and isinstance(model, ZeroShotHead)
    assert not [p for p in model.parameters() if p.requires_grad]  # nothing to train
    rgb = torch.from_numpy(_split(seed=3).rgb.padded()[:4].astype(np.float32))
    mask = torch.ones(4, 6, dtype=torch.bool)
    video = F.normalize(F.normalize(rgb, dim=-1).mean(1), dim=-1)
    torch.testing.assert_close(model(rgb, None, mask).float(), 100.0 * video @ _text()["protos"].T)


def test_bank_of_another_model_is_refused(micro_clip, tmp_path):
    from pipeline.heads.text_bank import load_text
    from pipeline.store import StoreError
    extract_text(["walking"], tmp_path / "t.h5", section("text", {}),
                 section("clip", {"model": micro_clip, "pretrained": None}), CPU)
    with pytest.raises(StoreError, match="re-run the text stage"):
        load_text(tmp_path / "t.h5", {"model": "ViT-B-32", "weights": "openai"})


def test_gcn_moves_class_text_along_the_relation_graph():
    # _text: species 0 does classes 0 and 1, species 1 classes 2 and 3; class 4 has no species
    head = _prompt(refine="gcn")
    _perturb(head)
    p = torch.full((1, S), 1.0 / S)
    _, before = head.class_embeddings(p)
    with torch.no_grad():
        head.species_protos[0] += 2.0 * torch.randn(D, generator=torch.Generator().manual_seed(3))
    _, after = head.class_embeddings(p)
    moved = (after - before)[0].norm(dim=-1)
    assert moved[0] > 1e-3 and moved[1] > 1e-3, moved  # the two classes sharing species 0 move
    assert moved[2:].max() < 1e-6, moved  # classes not joined to species 0 do not
    # a species the video surely is not counts for nothing
    _, unseen = head.class_embeddings(torch.tensor([[0.0, 0.5, 0.5]]))
    with torch.no_grad():
        head.species_protos[0] -= 5.0
    _, unseen_changed = head.class_embeddings(torch.tensor([[0.0, 0.5, 0.5]]))
    torch.testing.assert_close(unseen, unseen_changed)
    # one set of class features per video
    rgb, motion, mask = _batch()
    assert head(rgb, motion, mask).shape == (4, C)


def test_gcn_and_species_conditioned_video_train(tmp_path):
    params = head_params("prompt", {"attention_heads": 4, "epochs": 6, "batch_size": 16, "frames": 6, "lr": 3e-3,
                                    "refine": "gcn", "video_species": True})
    model, history = train_head(as_resolved("prompt", params), _split(), _split(seed=1), C, False, CPU,
                                progress=False, text=_text())
    assert model.video_cond is not None and model.refine_kind == "gcn"
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"], history
    torch.manual_seed(params["seed"])  # the trainer's initial weights
    fresh = build_head(as_resolved("prompt", params), D, 0, C, _text(), multilabel=False)
    for name in ("refine.w1", "refine.w2", "video_cond.out_proj.weight"):
        assert not torch.equal(model.state_dict()[name], fresh.state_dict()[name]), name


def test_species_conditioned_video_starts_as_a_no_op_and_follows_the_species():
    rgb, motion, mask = _batch()
    plain, conditioned = _prompt(), _prompt(video_species=True)
    conditioned.load_state_dict({**conditioned.state_dict(), **plain.state_dict()}, strict=False)
    torch.testing.assert_close(conditioned(rgb, motion, mask), plain(rgb, motion, mask))
    _perturb(conditioned)
    out = conditioned(rgb, motion, mask)
    with torch.no_grad():
        conditioned.species_protos[:] = torch.roll(conditioned.species_protos, 1, 0)
    assert not torch.allclose(conditioned(rgb, motion, mask), out)


def _grouped_bank():
    """One class whose rows of each group are one unit vector per group (orthogonal groups):
    1 name, 2 templates, 9 species prompts, 4 descriptions."""
    counts = {"name": 1, "templates": 2, "species": 9, "descriptions": 4}
    axes = {g: torch.eye(D)[i] for i, g in enumerate(counts)}
    rows = [axes[g] for g, n in counts.items() for _ in range(n)]
    sources = [g for g, n in counts.items() for _ in range(n)]
    return torch.stack(rows)[None], torch.ones(1, len(rows), dtype=torch.bool), [sources], axes, counts


def test_group_weighting_gives_every_group_the_same_total_weight():
    from pipeline.heads.text_bank import prototypes
    bank, mask, groups, axes, counts = _grouped_bank()
    by_groups = prototypes(bank, mask, groups, weighting="groups")[0]
    share = {g: float(by_groups @ a) for g, a in axes.items()}
    assert max(share.values()) - min(share.values()) < 1e-6 and min(share.values()) > 0.4, share
    by_rows = prototypes(bank, mask, groups, weighting="rows")[0]
    share = {g: float(by_rows @ a) for g, a in axes.items()}
    for g in counts:  # by rows, a group weighs its row count: species prompts dominate
        assert abs(share[g] / share["name"] - counts[g]) < 1e-4, share
    torch.testing.assert_close(by_rows, prototypes(bank, mask)[0])  # the plain mean


def test_row_groups_tell_species_prompts_from_templates():
    from pipeline.heads.text_bank import row_groups
    templates = ["a video of {action}", "a {species} {action}"]
    got = row_groups([["name", "template:0", "template:1", "template:1", "description"]], templates)
    assert got == [["name", "templates", "species", "species", "descriptions"]]


def test_max_pooling_is_the_element_wise_max_of_the_descriptions():
    from pipeline.heads.text_bank import prototypes
    g = torch.Generator().manual_seed(4)
    desc = torch.randn(1, 5, D, generator=g)
    mask = torch.tensor([[True] * 4 + [False]])
    groups = [["descriptions"] * 5]
    got = prototypes(desc, mask, groups, pooling="max")[0]
    want = F.normalize(F.normalize(desc[0, :4], dim=-1).max(0).values, dim=-0)
    torch.testing.assert_close(got, want)
    mean = prototypes(desc, mask, groups, pooling="mean")[0]
    assert not torch.allclose(got, mean)


def test_description_csv_paragraphs_become_sentences_counted_per_class(tmp_path, caplog):
    import logging
    from pipeline.features.text import read_descriptions
    long = "While it runs, the animal " + " ".join(f"lifts leg {i} high, sets it down," for i in range(25)) + " then rests."
    path = tmp_path / "descriptions.csv"
    path.write_text(
        'Running,"As an expert, here is my answer. A running animal moves its legs fast. ' + long + '"\n'
        'eating,"An eating animal chews, swallows, and looks around. Sure! It lowers its head."\n',
        encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="pipeline"):
        got = read_descriptions(path, ["eating", "running", "sleeping"])
    assert set(got) == {0, 1}  # by name, ignoring case; a class without a row has none
    assert got[0] == ["An eating animal chews, swallows, and looks around.", "It lowers its head."]
    assert got[1][0] == "A running animal moves its legs fast." and len(got[1]) > 2
    assert all(n_tokens(s) <= 75 for s in got[1])
    assert " ".join(got[1][1:]).split() == long.split()  # split, nothing truncated
    said = {r.message.split(": ", 2)[2] for r in caplog.records if "sentences kept" in r.message}
    assert said == {f"class 'Running': {len(got[1])} sentences kept, 1 boilerplate, 1 split (too long)",
                    "class 'eating': 2 sentences kept, 1 boilerplate"}, said
    bad = tmp_path / "bad.csv"
    bad.write_text("walking\n")
    with pytest.raises(Exception, match="bad.csv, line 1"):
        read_descriptions(bad, ["walking"])


def test_description_files_as_users_save_them(tmp_path, caplog):
    """Excel's BOM is read; an open quote, a ';' or tab table and latin-1 are errors naming what
    was expected and what was found; classes without a description are named."""
    import logging
    from pipeline.features.text import TextError, read_descriptions
    names = ["eating", "running", "sleeping"]
    bom = tmp_path / "bom.csv"
    bom.write_bytes("name,description\neating,\"It chews slowly.\"\n".encode("utf-8-sig"))
    with caplog.at_level(logging.INFO, logger="pipeline"):
        assert read_descriptions(bom, names) == {0: ["It chews slowly."]}
    assert any("2 class names have no description" in r.message and "running, sleeping" in r.message
               for r in caplog.records)
    cases = {
        "open.csv": ('eating,"It chews slowly.\nrunning,"Legs move fast."\n', "utf-8",
                     r"open.csv, line 1: the quote opened on this line is closed only after the row of 'running'"),
        "never.csv": ('eating,"It chews.\nsleeping rests\n', "utf-8", r"never.csv, line 1: .*never closed"),
        "semi.csv": ("eating;It chews.\nrunning;Fast.\n", "utf-8", r"semi.csv, line 1: expected comma-separated .* ';'"),
        "tab.csv": ("eating\tIt chews.\n", "utf-8", r"tab.csv, line 1: expected comma-separated .* tabs"),
        "third.csv": ('eating,"It chews.",extra\n', "utf-8", r"third.csv, line 1: 3 columns where a row is"),
        "commas.csv": ("eating,\"ok\"\nrunning,It runs, fast\n", "utf-8", r"commas.csv, line 2: 3 columns.*quote a description"),
        "latin.csv": ('eating,"It chews caf\xe9 food."\n', "latin-1", r"latin.csv: not UTF-8 text"),
        "latin.yaml": ("eating: [caf\xe9]\n", "latin-1", r"latin.yaml: not UTF-8 text"),
        "table.txt": ("eating;It chews.\nrunning;Fast.\n", "utf-8", r"table.txt: expected a mapping .* separated by ';' or tabs"),
    }
    for name, (body, encoding, words) in cases.items():
        (tmp_path / name).write_bytes(body.encode(encoding))
        with pytest.raises(TextError, match=words):
            read_descriptions(tmp_path / name, names)
