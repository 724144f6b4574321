"""Scores keep the order of the logits: zero-shot on cosines like real CLIP's (0.2-0.35)."""
import csv

import numpy as np
import pytest
import torch

from pipeline.heads.entry import resolve_head
from pipeline.heads.run import run_head
from pipeline.metrics import evaluate, probabilities, species_top1
from pipeline.store import FeatureWriter
from pipeline.text_store import write_text_bank

D, C, S = 24, 6, 3


def _world(seed=0, n=60):
    """Class prototypes (orthonormal) and videos whose cosine to each prototype is drawn in
    [0.2, 0.35]; labels follow the cosines loosely, so the ranking matters."""
    basis, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((D, D)))
    rng = np.random.default_rng(seed)
    protos, rest = basis[:C], basis[C:]
    cos = rng.uniform(0.2, 0.35, (n, C))
    spare = np.sqrt(1 - (cos ** 2).sum(1))
    video = cos @ protos + spare[:, None] * rest[rng.integers(0, D - C, n)]
    labels = (cos + rng.normal(0, 0.03, cos.shape) > 0.3).astype(int)
    labels[np.arange(n), cos.argmax(1)] = 1  # every video has a label
    return protos, video.astype(np.float32), labels


def _shards(tmp_path, multilabel=True):
    """Clip shards of a training and an evaluation world, and their samples.tsv rows."""
    shards, samples = {}, []
    for role, seed in (("train", 1), ("eval", 2)):
        _, video, labels = _world(seed)
        path = tmp_path / f"{role}.h5"
        with FeatureWriter(path, "clip", (D,), np.float32, {"model": "m", "weights": "w"}) as w:
            for i, v in enumerate(video):
                vid = f"{role}{i}"
                w.add(vid, np.arange(4), np.arange(4) / 4.0, np.repeat(v[None], 4, 0))
                lab = np.flatnonzero(labels[i]).tolist() if multilabel else [int(labels[i].argmax())]
                samples.append({"video_id": vid, "labels": lab, "species": [i % S]})
        shards[("clip", role)] = [path]
    return shards, samples


def _run(tmp_path, multilabel=True):
    protos, _, _ = _world()
    shards, samples = _shards(tmp_path, multilabel)
    names = [f"class {c}" for c in range(C)]
    sp = np.random.default_rng(5).standard_normal((S, 1, D)).astype(np.float32)
    write_text_bank(tmp_path / "text.h5", protos[:, None].astype(np.float32), np.ones((C, 1), bool),
                    [[n] for n in names], [["name"]] * C, names,
                    {"model": "m", "weights": "w", "pretrained": "", "templates": [], "relation": []},
                    species={"embeddings": sp, "mask": np.ones((S, 1), bool),
                             "prompts": [[f"s{i}"] for i in range(S)], "sources": [["name"]] * S,
                             "class_names": [f"s{i}" for i in range(S)]})
    metrics = run_head(resolve_head("zero_shot", {"frames": 4}), shards, samples, [{"name": n} for n in names],
                       multilabel, tmp_path / "out", torch.device("cpu"), {"eval": "test"},
                       text_path=tmp_path / "text.h5")
    return metrics, tmp_path / "out" / "predictions" / "test.csv"


def _eval_cosines():
    """Cosines of the stored image embeddings and the text bank's class prototypes."""
    from pipeline.heads.text_bank import prototypes
    protos, video, labels = _world(2)
    text = prototypes(protos[:, None].astype(np.float32), np.ones((C, 1), bool)).double().numpy()
    v = video.astype(np.float64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v @ (text / np.linalg.norm(text, axis=1, keepdims=True)).T, labels


def test_zero_shot_on_real_clip_cosines_keeps_their_ranking(tmp_path):
    metrics, predictions = _run(tmp_path)
    cos, labels = _eval_cosines()
    raw = evaluate(cos, labels, multilabel=True)
    assert raw["mAP"] > 1.5 * labels.mean()  # the cosines do rank: not a chance-level set-up
    assert metrics["mAP"] == pytest.approx(raw["mAP"], abs=1e-12)
    assert metrics["mAP_micro"] == pytest.approx(raw["mAP_micro"], abs=1e-12)
    assert "calibrated" in metrics["scores"]
    # every written score is as distinct as the cosine it comes from
    rows = list(csv.DictReader(open(predictions)))
    written, cosines = [], []
    for r in rows:
        i = int(r["video_id"][4:])
        for k in range(1, 6):
            written.append(float(r[f"score{k}"]))
            cosines.append(cos[i, int(r[f"top{k}"].split()[-1])])
    assert len(set(written)) == len(set(np.round(cosines, 12)))
    assert all(0.0 < s < 1.0 for s in written)  # calibrated: nowhere near saturation


def test_single_label_zero_shot_is_a_softmax_over_classes(tmp_path):
    metrics, predictions = _run(tmp_path, multilabel=False)
    cos, labels = _eval_cosines()
    assert metrics["top1"] == pytest.approx((cos.argmax(1) == labels.argmax(1)).mean())
    assert metrics["scores"].startswith("softmax")
    rows = list(csv.DictReader(open(predictions)))
    assert len({r["score1"] for r in rows}) == len(rows)


def test_species_scores_are_reported_for_zero_shot(tmp_path):
    metrics, _ = _run(tmp_path)
    assert metrics["species"]["n_videos"] == 60 and metrics["species"]["chance"] == pytest.approx(1 / S)
    assert "zero-shot" in metrics["species"]["source"]


def test_probabilities_do_not_saturate_where_float32_does():
    logits = np.array([[17.0, 18.0, 30.0, 35.0]])
    assert len(set(torch.sigmoid(torch.tensor(logits, dtype=torch.float32)).numpy()[0])) == 1
    assert len(set(probabilities(logits, True)[0])) == 4
    soft = probabilities(np.array([[0.0, 120.0, 121.0]]), False)[0]
    assert soft[0] > 0 and soft.sum() == pytest.approx(1.0)


def test_species_top1_gives_ties_the_expected_share():
    species = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]])
    assert species_top1(np.array([[2.0, 1, 0], [0, 1, 1], [5, 5, 5]]), species)["top1"] == 1.0
    tied = species_top1(np.zeros((3, 3)), species)
    assert tied["top1"] == pytest.approx((1 / 3 + 2 / 3) / 2) and tied["n_videos"] == 2
    assert tied["chance"] == pytest.approx(tied["top1"])


def test_weighting_reaches_the_prototypes_run_head_scores_with(tmp_path):
    """Each class: its name (the true prototype) and 9 species prompts pointing elsewhere. By
    rows the species prompts make 90% of the prototype; by groups, half."""
    protos, _, _ = _world()
    rng = np.random.default_rng(9)
    shards, samples = _shards(tmp_path)
    names = [f"class {c}" for c in range(C)]
    bank = np.concatenate([protos[:, None], rng.standard_normal((C, 9, D))], 1).astype(np.float32)
    sources = [["name"] + ["template:0"] * 9] * C
    write_text_bank(tmp_path / "text.h5", bank, np.ones((C, 10), bool), [[n] * 10 for n in names], sources,
                    names, {"model": "m", "weights": "w", "pretrained": "", "templates": ["a {species} {action}"],
                            "relation": []})
    got = {}
    for weighting in ("rows", "groups"):
        got[weighting] = run_head(resolve_head("zero_shot", {"frames": 4, "weighting": weighting}), shards, samples,
                                  [{"name": n} for n in names], True, tmp_path / weighting,
                                  torch.device("cpu"), {"eval": "test"}, text_path=tmp_path / "text.h5")["mAP"]
    assert got["groups"] > got["rows"] + 0.05, got


def test_a_head_saved_with_the_old_heads_key_still_loads(tmp_path):
    """Checkpoints written before `heads` (attention heads) was named `attention_heads` load."""
    from pipeline.heads.run import load_head
    shards, samples = _shards(tmp_path)
    run_head(resolve_head("rgb_only", {"frames": 4, "epochs": 1, "layers": 1, "attention_heads": 2}), shards, samples,
             [{"name": f"class {c}"} for c in range(C)], True, tmp_path / "out", torch.device("cpu"),
             {"eval": "test"})
    path = tmp_path / "out" / "head.pt"
    ckpt = torch.load(path, weights_only=False)
    ckpt["params"]["heads"] = ckpt["params"].pop("attention_heads")
    torch.save(ckpt, path)
    model, loaded, head = load_head(path)
    assert loaded["params"]["attention_heads"] == 2 and "heads" not in loaded["params"]
    assert model.head.blocks[0].self_attn.num_heads == 2
