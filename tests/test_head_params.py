"""Every key a head accepts reaches that head; a key it does not take stops the run by name."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.config import ConfigError, schema, validate_config
from pipeline.heads.data import SplitFeatures
from pipeline.heads.registry import HEAD_TYPES
from pipeline.heads.text_bank import relation_matrix
from pipeline.heads.entry import TRAIN_DEFAULTS, as_resolved, head_params
from pipeline.heads.trainer import predict_logits, train_head

CPU = torch.device("cpu")
D, C, S = 32, 4, 2  # 32: the micro CLIP's width (the learnable text mode runs its tower)

# A value other than the default for every key, and what must be set beside it for the key to
# matter (focal_gamma only acts with the focal loss, ...). Both runs of a pair share the context.
ALT = {"lr": 3e-2, "weight_decay": 0.9, "epochs": 3, "batch_size": 5, "frames": 3, "patience": 1,
       "loss": "asl", "pos_weight": 5.0, "focal_gamma": 0.5, "label_smoothing": 0.3, "seed": 7,
       "warmup_epochs": 0, "grad_clip": 1e-4, "layers": 3, "attention_heads": 4, "width": 24, "ff_mult": 1,
       "dropout": 0.6, "mode": "temporal_concat", "positions": "flip", "aggregation": "sparse",
       "semi_dense_k": 3, "sparse_n": 1, "max_frames": 32, "motion": True, "refine": "attention",
       "conditioning": False, "species": "zero_shot", "relation_prior": False,
       "text_mode": "learnable", "n_ctx": 2, "softmax_weight": 0.0, "species_weight": 2.0,
       "anchor_weight": 0.0, "schedule": "none", "min_lr": 1e-3, "select_by": "val_loss",
       "standardise": False, "variant": "reference", "batch_rows": 8, "video_species": True,
       "temporal": "windows", "windows": 2, "betas": [0.5, 0.9], "species_train": "oracle",
       "classifier": "text", "weight_decay_1d": "flip", "learn_scale": "flip"}
CONTEXT = {"focal_gamma": {"loss": "focal"}, "windows": {"temporal": "windows"}, "semi_dense_k": {"aggregation": "semi_dense"},
           "sparse_n": {"aggregation": "sparse"}, "n_ctx": {"text_mode": "learnable"},
           "patience": {"lr": 1e-12, "epochs": 4}, "layers": {"width": 16},
           "species_weight": {"species": "classifier"}, "min_lr": {"lr": 1e-2},
           "weight_decay_1d": {"weight_decay": 0.9, "lr": 3e-2}, "learn_scale": {"lr": 3e-2}}
SINGLE_LABEL = {"label_smoothing"}
# keys that act outside train_head (run_head scores them) are tested with run_head's callers
OUTSIDE_TRAINER = {"extra_classes", "base_to_novel", "novel_seed", "pooling", "weighting", "eval_scores",
                   "motion_source"}  # motion_source: which shards the workflow gives the head
# keys whose effect depends on the data's curve: each has a test on data built to decide it
DEDICATED = {"select_by"}


def head_keys(name):
    return set(schema()["properties"]["heads"]["properties"][name]["properties"])


def _split(n=20, seed=0, multilabel=True, signal=0.0):
    """Random frames whose motion (and, with ``signal``, rgb) carries the class."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % C
    rgb = rng.standard_normal((n, 6, D)).astype(np.float32)
    rgb[np.arange(n), :, y] += signal
    rgb = rgb.astype(np.float16)
    motion = rng.standard_normal((n, 6, D)).astype(np.float32)
    motion[np.arange(n), :, y] += max(2.0, signal)
    targets = np.eye(C, dtype=np.float32)[y] if multilabel else y.astype(np.int64)
    species = np.eye(S, dtype=np.float32)[y % S]
    return SplitFeatures([f"v{i}" for i in range(n)], rgb, motion.astype(np.float16),
                         rng.integers(3, 7, n), targets, {}, species)


def _text(learnable: bool):
    g = torch.Generator().manual_seed(0)
    text = {"protos": F.normalize(torch.randn(C, D, generator=g), dim=-1),
            "species_protos": F.normalize(torch.randn(S, D, generator=g), dim=-1),
            "relation": relation_matrix([(0, 0), (0, 2), (1, 1), (1, 3)], S, C),
            "class_names": ["walking", "eating", "flying", "resting"]}
    if learnable:
        from pipeline.factory import load_clip, open_clip_module
        name = "test-micro-ViT"
        text["clip"] = (load_clip(name, None), open_clip_module().get_tokenizer(name))
    return text


def _fingerprint(name, params, multilabel):
    torch.manual_seed(0)
    train, val = _split(multilabel=multilabel), _split(seed=1, multilabel=multilabel)
    text = (_text(params.get("text_mode") == "learnable")
            if name in ("prompt", "zero_shot") or params.get("classifier") == "text" else None)
    model, history = train_head(as_resolved(name, params), train, val, C, multilabel, CPU, progress=False, text=text)
    scores = predict_logits(model, val, params, CPU)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return model, history, scores, shapes


def _differs(a, b) -> bool:
    (_, ha, sa, pa), (_, hb, sb, pb) = a, b
    return pa != pb or len(ha) != len(hb) or not np.allclose(sa, sb, atol=1e-7) or any(
        x["train_loss"] != y["train_loss"] for x, y in zip(ha, hb))


CASES = [(name, key) for name in HEAD_TYPES
         for key in sorted(head_keys(name) - OUTSIDE_TRAINER - DEDICATED)]
_BASES: dict = {}


def _base(name, context, multilabel):
    """The base run of a pair, trained once per head and context (many keys share one)."""
    import json
    key = (name, json.dumps(context, sort_keys=True), multilabel)
    if key not in _BASES:
        _BASES[key] = _fingerprint(name, head_params(name, context), multilabel)
    return _BASES[key]


@pytest.mark.parametrize("name, key", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_every_accepted_key_reaches_the_head(name, key, micro_clip):
    base_given = {"epochs": 2, "batch_size": 8, "frames": 4, **({"attention_heads": 2} if "attention_heads" in head_keys(name) else {})}
    base_given = {k: v for k, v in base_given.items() if k in head_keys(name)}
    context = {**base_given, **{k: v for k, v in CONTEXT.get(key, {}).items() if k in head_keys(name)}}
    default = head_params(name, context)[key]
    alt = ALT[key]
    if alt == "flip":
        alt = not default
    assert alt != default, f"ALT[{key!r}] must differ from the default"
    multilabel = key not in SINGLE_LABEL
    a = _base(name, context, multilabel)
    b = _fingerprint(name, head_params(name, {**context, key: alt}), multilabel)
    assert _differs(a, b), f"heads.{name}.{key}={alt!r} changed nothing"


def test_select_by_keeps_the_epoch_its_score_prefers():
    """Separable data, a linear head (a convex loss): the ranking is perfect after an epoch or
    two (the first such epoch is kept by the metric) while the validation loss falls to the last
    epoch (kept by val_loss), so the two rules keep different epochs on any machine. Selection
    is the trainer's, the same for every head."""
    name = "motion_linear"
    torch.manual_seed(0)
    train = val = _split(seed=0, signal=8.0)  # validated on its training set: it only improves
    base = {"lr": 0.1, "epochs": 8, "patience": 8, "warmup_epochs": 0, "schedule": "none",
            "batch_size": 20, "frames": 4, "motion": True,
            **({"attention_heads": 2} if "attention_heads" in head_keys(name) else {})}
    base = {k: v for k, v in base.items() if k in head_keys(name)}
    text = _text(False) if name in ("prompt",) or "classifier" in head_keys(name) else None
    kept = {}
    for rule in ("macro", "val_loss"):
        params = head_params(name, {**base, "select_by": rule})
        model, history = train_head(as_resolved(name, params), train, val, C, True, CPU, progress=False, text=text)
        losses = [h["val_loss"] for h in history]
        metrics = [h["val_metric"] for h in history]
        kept[rule] = predict_logits(model, val, params, CPU)
        if rule == "val_loss":
            assert losses[-1] < min(losses[:-1]), losses  # the loss falls to the end
        else:
            first_best = metrics.index(max(metrics))
            assert first_best < len(metrics) - 1 and max(metrics) == 1.0, metrics
    assert not np.allclose(kept["macro"], kept["val_loss"], atol=1e-4)


@pytest.mark.parametrize("name, key, value", [("fusion", "aggregation", "sparse"),
                                              ("prompt", "width", 16),
                                              ("rgb_linear", "extra_classes", ["x"]),
                                              ("rgb_linear", "dropout", 0.2),
                                              ("zero_shot", "epochs", 3),
                                              ("interleave", "mode", "cross")])
def test_a_key_another_head_takes_is_refused_by_name(name, key, value):
    with pytest.raises(ConfigError, match=rf"heads\.{name}: unknown key '{key}'; allowed keys here"):
        head_params(name, {key: value})
    cfg = {"dataset": {"name": "x", "format": "csv", "videos": "v", "classes": "c.csv",
                       "annotations": "a.csv"}, "heads": {name: {key: value}}}
    with pytest.raises(ConfigError, match=rf"unknown key 'heads\.{name}\.{key}'"):
        validate_config(cfg)


def test_schema_keys_are_what_the_code_reads():
    """A head's schema lists exactly its model keys and the trainer's (so they cannot drift)."""
    for name, defaults in ((n, h["defaults"]) for n, h in HEAD_TYPES.items()):
        want = set(defaults) | ({"extra_classes", "pooling", "weighting"} if name in ("zero_shot", "prompt") else set())
        if name != "zero_shot":
            want |= set(TRAIN_DEFAULTS) | {"lr", "weight_decay"}
        else:
            want = {"frames", "extra_classes", "pooling", "weighting", "eval_scores"}
        assert head_keys(name) == want, name
