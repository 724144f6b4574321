"""Heads and their trainer on synthetic cached features (no video decoding anywhere)."""

import numpy as np
import pytest
import torch

from conftest import run_cli
from pipeline.heads.data import SplitFeatures, sample_indices
from pipeline.heads.models import InterleaveHead, aggregation_steps, build_head
from pipeline.heads.registry import HEAD_TYPES
from pipeline.heads.entry import as_resolved, head_params, resolve_head
from pipeline.heads.trainer import loss_fn, predict_logits, train_head

SMALL = {"layers": 1, "attention_heads": 2, "width": 16, "dropout": 0.0}


def make_split(n=40, t=10, d=8, c=4, multilabel=True, seed=0, signal=True):
    """Synthetic features whose motion stream carries the class (as in the demo)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    rgb = rng.normal(size=(n, t, d)).astype(np.float16)
    motion = rng.normal(size=(n, t, d)).astype(np.float32)
    if signal:
        motion[np.arange(n), :, y] += 3.0
    lengths = rng.integers(3, t + 1, n)
    targets = np.eye(c, dtype=np.float32)[y] if multilabel else y.astype(np.int64)
    return SplitFeatures([f"v{i}" for i in range(n)], rgb, motion.astype(np.float16), lengths,
                         targets, {})


def small(name: str, **more) -> dict:
    """SMALL's keys that this head takes (a linear probe has no layers or dropout)."""
    from pipeline.config import schema
    keys = schema()["properties"]["heads"]["properties"][name]["properties"]
    return head_params(name, {k: v for k, v in {**SMALL, **more}.items() if k in keys})


def _text(d=8, c=4):
    g = torch.Generator().manual_seed(0)
    return {"protos": torch.nn.functional.normalize(torch.randn(c, d, generator=g), dim=-1),
            "species_protos": None, "relation": None, "class_names": [f"c{i}" for i in range(c)]}


@pytest.mark.parametrize("name", sorted(HEAD_TYPES))
def test_padding_never_changes_a_prediction(name):
    torch.manual_seed(0)
    model = build_head(as_resolved(name, small(name)), 8, 8, 4, _text()).eval()
    rgb, motion = torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    mask = torch.ones(1, 5, dtype=torch.bool)
    with torch.no_grad():
        alone = model(rgb, motion, mask)
        other = model(torch.randn(1, 5, 8), torch.randn(1, 5, 8), mask)
        # the same video padded to 9 rows with garbage, beside a longer video
        pad_rgb = torch.cat([rgb, 100 * torch.randn(1, 4, 8)], 1)
        pad_motion = torch.cat([motion, -50 * torch.randn(1, 4, 8)], 1)
        pad_mask = torch.cat([mask, torch.zeros(1, 4, dtype=torch.bool)], 1)
        batch = model(torch.cat([pad_rgb, torch.randn(1, 9, 8)]), torch.cat([pad_motion, torch.randn(1, 9, 8)]),
                      torch.cat([pad_mask, torch.ones(1, 9, dtype=torch.bool)]))
    assert not torch.allclose(alone, other, atol=1e-3), f"{name}: the output ignores its input"
    assert torch.allclose(alone[0], batch[0], atol=1e-5), name


def test_dropout_reaches_the_model():
    for name in ("fusion", "interleave", "rgb_only", "prompt"):
        model = build_head(as_resolved(name, small(name, dropout=0.37)), 8, 8, 4, _text())
        rates = {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}
        assert rates == {0.37}, (name, rates)


def test_frame_sampling_uniform_with_offsets_and_masks():
    idx, mask = sample_indices(np.array([16, 3]), 4, None)
    assert idx[0].tolist() == [2, 6, 10, 14] and mask[0].all()
    assert idx[1].tolist() == [0, 1, 2, 2] and mask[1].tolist() == [True, True, True, False]
    rng = np.random.default_rng(0)
    idx, _ = sample_indices(np.array([16]), 4, rng)
    assert all(4 * k <= i < 4 * (k + 1) for k, i in enumerate(idx[0]))  # one per segment


@pytest.mark.parametrize("scheme, n, want", [("dense", 6, [0, 1, 2, 3, 4, 5]),
                                             ("semi_dense", 6, [0, 2, 4]),
                                             ("sparse", 6, [1, 3, 5]),
                                             ("sparse", 2, [0, 1])])
def test_aggregation_steps(scheme, n, want):
    assert aggregation_steps(n, scheme, k=2, n_sparse=3) == want


@pytest.mark.parametrize("scheme", ["dense", "semi_dense", "sparse", "all"])
def test_interleave_aggregates_per_step_logits(scheme):
    torch.manual_seed(0)
    head = InterleaveHead(8, 8, 3, layers=1, attention_heads=2, width=16, dropout=0.0, aggregation=scheme).eval()
    rgb, motion = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    with torch.no_grad():
        steps = head.per_step_logits(rgb, motion, mask)
        out = head(rgb, motion, mask)
    for i, n in enumerate((6, 4)):
        schemes = ["dense", "semi_dense", "sparse"] if scheme == "all" else [scheme]
        want = torch.stack([steps[i, aggregation_steps(n, s, 2, 3)].mean(0) for s in schemes]).mean(0)
        assert torch.allclose(out[i], want, atol=1e-6)


def test_interleave_really_interleaves():
    """Token 2t is rgb_t and 2t+1 motion_t: changing motion_1 changes token 3 only."""
    head = InterleaveHead(4, 4, 2, layers=1, attention_heads=1, width=4, dropout=0.0)
    seen = []
    head.blocks[0].register_forward_hook(lambda m, i, o: seen.append(i[0].detach().clone()))
    rgb, motion = torch.zeros(1, 3, 4), torch.zeros(1, 3, 4)
    mask = torch.ones(1, 3, dtype=torch.bool)
    head(rgb, motion, mask)
    motion[0, 1] = 5.0
    head(rgb, motion, mask)
    changed = (seen[1][0] - seen[0][0]).abs().sum(-1)
    assert changed[3] > 0 and torch.count_nonzero(changed) == 1


def test_losses_single_and_multi_label():
    logits = torch.tensor([[2.0, -1.0, 0.0]])
    assert torch.isclose(loss_fn(logits, torch.tensor([0]), False, head_params("fusion", {})),
                         torch.nn.functional.cross_entropy(logits, torch.tensor([0])))
    y = torch.tensor([[1.0, 0.0, 1.0]])
    bce = loss_fn(logits, y, True, head_params("fusion", {}))
    focal = loss_fn(logits, y, True, head_params("fusion", {"loss": "focal"}))
    assert torch.isclose(bce, torch.nn.functional.binary_cross_entropy_with_logits(logits, y))
    assert focal < bce  # the focal term down-weights easy examples
    smooth = loss_fn(logits, torch.tensor([0]), False, head_params("fusion", {"label_smoothing": 0.2}))
    assert smooth > loss_fn(logits, torch.tensor([0]), False, head_params("fusion", {}))


@pytest.mark.parametrize("multilabel", [True, False])
def test_training_learns_and_keeps_the_best_epoch(multilabel):
    train, val = make_split(multilabel=multilabel), make_split(seed=1, multilabel=multilabel)
    params = head_params("motion_only", {**SMALL, "epochs": 25, "lr": 3e-3, "frames": 6, "batch_size": 8})
    model, history = train_head(as_resolved("motion_only", params), train, val, 4, multilabel, torch.device("cpu"),
                                progress=False)
    scores = predict_logits(model, val, params, torch.device("cpu"))
    assert scores.shape == (40, 4)
    best = max(h["val_metric"] for h in history)
    from pipeline.heads.trainer import main_metric
    assert main_metric(scores, val.targets, multilabel) == pytest.approx(best)
    assert best > 0.8


def test_bench_heads_prints_samples_per_second(tmp_path):
    lengths = tmp_path / "lengths.txt"
    lengths.write_text("5\n9\n120\n")
    proc = run_cli("bench-heads", "--videos", "24", "--lengths", lengths, "--classes", "10", "--dim", "32",
                   "--steps", "2", "--batch-size", "4", "--heads", "fusion", "rgb_linear",
                   "--batch-rows", "64", "--student-model", "demo-tiny-ViT", "--student-batch", "2",
                   "--student-steps", "2", "--seq-len", "4", "--device", "cpu", "--json", tmp_path / "b.json")
    assert "samples/s" in proc.stdout and "peak RSS MB" in proc.stdout
    import json
    rows = json.loads((tmp_path / "b.json").read_text())
    assert [(r["head"], r["read"]) for r in rows] == [
        *((h, m) for m in ("memory", "stream") for h in ("fusion", "rgb_linear")),
        ("student demo-tiny-ViT", "stream")]
    assert all(r["samples_per_s"] > 0 and r["rows"] == 8 * (5 + 9 + 120) for r in rows)
    # the student's epoch: every window of 4 rows of every video, at the measured rate
    student = rows[-1]
    assert student["epoch_s"] == pytest.approx(8 * (2 + 3 + 30) / student["samples_per_s"])


def test_learning_rate_schedules():
    from pipeline.heads.trainer import head_lr_factor as lr_factor
    base = head_params("fusion", {"lr": 1e-3, "epochs": 4, "warmup_epochs": 1})
    none = [lr_factor(s, 5, {**base, "schedule": "none"}) for s in range(20)]
    assert none == [1.0] * 20
    per_epoch = [lr_factor(s, 5, {**base, "schedule": "cosine_epoch", "min_lr": 1e-4}) for s in range(20)]
    assert per_epoch[:5] == [1.0] * 5 and len(set(per_epoch)) == 4  # constant within an epoch
    assert per_epoch[-1] > 0.1 and per_epoch == sorted(per_epoch, reverse=True)
    warm = [lr_factor(s, 5, base) for s in range(20)]
    assert warm[0] == 0.2 and warm[4] == 1.0 and warm[-1] < 0.05  # warm-up, then cosine per step
    train, val = make_split(), make_split(seed=1)
    params = head_params("motion_linear", {"epochs": 3, "lr": 1e-2, "schedule": "none", "frames": 6})
    _, history = train_head(as_resolved("motion_linear", params), train, val, 4, True, torch.device("cpu"), progress=False)
    assert [h["lr"] for h in history] == [1e-2] * 3 and all(h["val_loss"] > 0 for h in history)


def test_reference_tfam_and_standardisation_switch():
    from pipeline.heads.models import build_head
    model = build_head(resolve_head("fusion", {"variant": "reference", "standardise": False}), 512, 512, 140)
    acts = {type(m).__name__ for m in model.head.blocks[0].ff}
    assert "ReLU" in acts and "GELU" not in acts
    assert [m.out_features for m in model.head.classifier if hasattr(m, "out_features")] == [256, 140]
    model.set_stats("rgb", np.full(512, 3.0), np.full(512, 2.0))  # ignored: standardise false
    assert float(model.rgb_mean.abs().max()) == 0.0 and float(model.rgb_std.min()) == 1.0
    default = build_head(resolve_head("fusion"), 512, 512, 140)
    default.set_stats("rgb", np.full(512, 3.0), np.full(512, 2.0))
    assert float(default.rgb_mean[0]) == 3.0


def test_window_plan_cuts_the_clip_and_selects_frames_in_each_window():
    from pipeline.heads.models import window_plan
    assert window_plan(9, 3, "dense") == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert window_plan(12, 3, "semi_dense", k=2) == [[0, 2], [4, 6], [8, 10]]
    assert window_plan(12, 3, "sparse", n_sparse=2) == [[1, 3], [5, 7], [9, 11]]
    assert window_plan(2, 3, "dense") == [[0], [1]]  # a clip shorter than the windows


@pytest.mark.parametrize("scheme", ["dense", "semi_dense", "sparse"])
def test_windowed_classifiers_share_weights_and_see_only_their_window(scheme):
    torch.manual_seed(0)
    kwargs = dict(layers=1, attention_heads=2, width=16, dropout=0.0, aggregation=scheme, temporal="windows")
    head = InterleaveHead(8, 8, 3, windows=3, **kwargs).eval()
    five = InterleaveHead(8, 8, 3, windows=5, **kwargs)
    assert {k: v.shape for k, v in head.state_dict().items()} == {k: v.shape for k, v in five.state_dict().items()}
    rgb, motion = torch.randn(2, 12, 8), torch.randn(2, 12, 8)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 9:] = False
    with torch.no_grad():
        before, exists = head.window_logits(rgb, motion, mask, scheme)
        assert before.shape == (2, 3, 3) and exists.all()
        # a frame of the first window changes that window's logits and no other's
        first = 0 if scheme != "sparse" else 1
        motion[:, first] += 10.0
        after, _ = head.window_logits(rgb, motion, mask, scheme)
        assert (after[:, 0] - before[:, 0]).abs().max() > 1e-3
        torch.testing.assert_close(after[:, 1:], before[:, 1:])
        # one classifier for all: a window's logits depend on its frames, not its slot, except
        # through where the frames sit in the clip (positions)
        out = head(rgb, motion, mask)
        torch.testing.assert_close(out, after.mean(1))


def test_windows_of_a_short_clip_train_without_nan():
    torch.manual_seed(0)
    params = small("interleave", temporal="windows", windows=4, aggregation="all", epochs=2, loss="ce")
    train = make_split(t=3)  # fewer rows than windows
    model, history = train_head(as_resolved("interleave", params), train, make_split(seed=1, t=3), 4, True,
                                torch.device("cpu"), progress=False)
    assert all(np.isfinite(h["train_loss"]) for h in history)
    assert np.isfinite(predict_logits(model, train, params, torch.device("cpu"))).all()


def test_cross_entropy_shares_the_target_among_positives():
    logits = torch.tensor([[2.0, -1.0, 0.0]])
    y = torch.tensor([[1.0, 0.0, 1.0]])
    ce = loss_fn(logits, y, True, head_params("interleave", {"loss": "ce"}))
    want = -(0.5 * torch.log_softmax(logits, -1)[0, [0, 2]]).sum()
    assert torch.isclose(ce, want)


def test_windowed_interleave_ignores_padding():
    torch.manual_seed(0)
    model = build_head(as_resolved("interleave", small("interleave", temporal="windows")), 8, 8, 4, None).eval()
    rgb, motion, mask = torch.randn(1, 7, 8), torch.randn(1, 7, 8), torch.ones(1, 7, dtype=torch.bool)
    with torch.no_grad():
        alone = model(rgb, motion, mask)
        pad = lambda x, v: torch.cat([torch.cat([x, v * torch.randn(1, 4, 8)], 1), torch.randn(1, 11, 8)])  # noqa: E731
        batch = model(pad(rgb, 100), pad(motion, -50),
                      torch.cat([torch.cat([mask, torch.zeros(1, 4, dtype=torch.bool)], 1),
                                 torch.ones(1, 11, dtype=torch.bool)]))
    torch.testing.assert_close(alone[0], batch[0], atol=1e-5, rtol=1e-5)


def test_a_split_that_mixes_precisions_is_said_in_metrics_and_summary(tmp_path):
    import json
    import numpy as np
    from pipeline.heads.run import precisions
    from pipeline.report import summary
    from pipeline.store import FeatureReader, FeatureWriter
    paths = []
    for i, (device, precision) in enumerate((("cuda", "float16"), ("cpu", "float32"))):
        paths.append(tmp_path / f"shard-{i}.h5")
        with FeatureWriter(paths[-1], "clip", (4,), np.float16,
                           {"model": "m", "device_type": device, "precision": precision}) as w:
            w.add(f"v{i}", [0], [0.0], np.ones((1, 4)))
    got = precisions({("clip", "train"): FeatureReader(paths), ("clip", "eval"): FeatureReader(paths[:1])},
                     {"train": "train", "eval": "test"})
    assert got == {"precision": {"test": ["clip cuda/float16"],
                                 "train": ["clip cpu/float32", "clip cuda/float16"]},
                   "mixed_precision": ["train"]}
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"head": "rgb_linear", "split": "test", "n_videos": 1, "mAP": 0.5,
                                   "mAP_micro": 0.5, **got}))
    text = summary([metrics], tmp_path / "rep").read_text()
    assert "**Mixed precision**: the features of split(s) train" in text
    assert "clip cpu/float32, clip cuda/float16" in text
