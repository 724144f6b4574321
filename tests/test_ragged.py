"""Heads on ragged features: one video 50x longer than the others costs one batch, not the split."""
import numpy as np
import pytest
import torch

from pipeline.heads.data import batches, load_split, plan_batches
from pipeline.heads.trainer import head_params, predict_logits, train_head
from pipeline.store import FeatureWriter

D, C = 16, 3
CPU = torch.device("cpu")


def _store(tmp_path, name, n=12, long_video=5, short=6, long=300, seed=0):
    """Clip and motion shards; video ``long_video`` has ``long`` rows, the others ``short``.
    The class shows in the motion rows, so heads can learn it."""
    rng = np.random.default_rng(seed)
    samples, paths = {}, {}
    lengths = [long if i == long_video else short for i in range(n)]
    for kind in ("clip", "motion"):
        paths[kind] = tmp_path / f"{name}-{kind}.h5"
    with FeatureWriter(paths["clip"], "clip", (D,), np.float16, {"model": "m", "weights": "w"}) as wc, \
            FeatureWriter(paths["motion"], "motion", (D,), np.float16,
                          {"model": "s", "teacher": "m", "student": "x", "embedding": "e"}) as wm:
        for i, length in enumerate(lengths):
            vid, label = f"{name}{i:02d}", i % C
            motion = rng.standard_normal((length, D))
            motion[:, label] += 2.0
            frames = np.arange(length)
            wc.add(vid, frames, frames / 10.0, rng.standard_normal((length, D)).astype(np.float16))
            wm.add(vid, frames, frames / 10.0, motion.astype(np.float16))
            samples[vid] = {"video_id": vid, "labels": [label]}
    return paths, samples, lengths


def _split(paths, samples):
    return load_split([paths["clip"]], [paths["motion"]], samples, C, False)


def test_batches_are_padded_to_their_own_longest_video(tmp_path):
    paths, samples, lengths = _store(tmp_path, "t")
    split = _split(paths, samples)
    assert split.rgb.in_memory and split.rgb.data.shape == (sum(lengths), D)  # no padding stored
    shapes = [rgb.shape for rgb, *_ in batches(split, "all", plan_batches(split.lengths, "all", 4))]
    assert shapes == [(4, 6, D), (4, 6, D), (4, 300, D)]  # length-sorted; only the long video's batch is long
    assert [rgb.shape[1] for rgb, *_ in batches(split, 5, plan_batches(split.lengths, 5, 4))] == [5, 5, 5]


@pytest.mark.parametrize("head", ["fusion", "motion_only"])
def test_every_frame_training_equals_padding_to_the_longest(tmp_path, head):
    paths, samples, _ = _store(tmp_path, "t")
    train = _split(paths, samples)
    vpaths, vsamples, _ = _store(tmp_path, "v", seed=1)
    val = _split(vpaths, vsamples)
    params = head_params(head, {"layers": 1, "heads": 2, "epochs": 20, "lr": 1e-3, "frames": "all",
                                "batch_size": 4})
    model, history = train_head(head, params, train, val, C, False, CPU, progress=False)
    logits = predict_logits(model, val, params, CPU)
    # the same model on the whole split padded to its longest video, as one batch
    rgb = torch.from_numpy(val.rgb.padded().astype(np.float32))
    motion = torch.from_numpy(val.motion.padded().astype(np.float32))
    mask = torch.arange(rgb.shape[1])[None] < torch.from_numpy(val.lengths)[:, None]
    with torch.no_grad():
        padded = model.eval()(rgb, motion, mask).double().numpy()
    np.testing.assert_allclose(logits, padded, rtol=1e-4, atol=1e-5)
    if head == "motion_only":  # it learns from every frame
        assert max(h["val_metric"] for h in history) > 0.6


def test_streamed_features_train_exactly_like_in_memory(tmp_path, monkeypatch):
    paths, samples, _ = _store(tmp_path, "t")
    params = head_params("motion_only", {"layers": 1, "heads": 2, "epochs": 3, "frames": "all",
                                         "batch_size": 4})
    memory = _split(paths, samples)
    monkeypatch.setenv("PIPELINE_FEATURE_MEMORY_MB", "0.001")
    streamed = _split(paths, samples)
    assert memory.motion.in_memory and not streamed.motion.in_memory
    a, _ = train_head("motion_only", params, memory, None, C, False, CPU, progress=False)
    b, _ = train_head("motion_only", params, streamed, None, C, False, CPU, progress=False)
    np.testing.assert_array_equal(predict_logits(a, memory, params, CPU), predict_logits(b, streamed, params, CPU))
    mean_m, std_m = memory.motion.mean_std()
    mean_s, std_s = streamed.motion.mean_std()
    np.testing.assert_allclose(mean_m, mean_s) and np.testing.assert_allclose(std_m, std_s)


def test_frames_all_is_a_valid_setting_and_prompt_heads_say_their_limit(tmp_path):
    from pipeline.config import ConfigError
    assert head_params("fusion", {"frames": "all"})["frames"] == "all"
    with pytest.raises(ConfigError, match="frames"):
        head_params("fusion", {"frames": "every"})
