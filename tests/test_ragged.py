"""Heads on ragged features: one video 50x longer than the others costs one batch, not the split."""
import numpy as np
import pytest
import torch

from pipeline.heads.data import batches, load_split, plan_batches
from pipeline.heads.entry import as_resolved, head_params
from pipeline.heads.trainer import predict_logits, train_head
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
    params = head_params(head, {"layers": 1, "attention_heads": 2, "epochs": 20, "lr": 1e-3, "frames": "all",
                                "batch_size": 4})
    model, history = train_head(as_resolved(head, params), train, val, C, False, CPU, progress=False)
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
    params = head_params("motion_only", {"layers": 1, "attention_heads": 2, "epochs": 3, "frames": "all",
                                         "batch_size": 4})
    memory = _split(paths, samples)
    monkeypatch.setenv("PIPELINE_FEATURE_MEMORY_MB", "0.001")
    streamed = _split(paths, samples)
    assert memory.motion.in_memory and not streamed.motion.in_memory
    a, _ = train_head(as_resolved("motion_only", params), memory, None, C, False, CPU, progress=False)
    b, _ = train_head(as_resolved("motion_only", params), streamed, None, C, False, CPU, progress=False)
    np.testing.assert_array_equal(predict_logits(a, memory, params, CPU), predict_logits(b, streamed, params, CPU))
    mean_m, std_m = memory.motion.mean_std()
    mean_s, std_s = streamed.motion.mean_std()
    np.testing.assert_allclose(mean_m, mean_s) and np.testing.assert_allclose(std_m, std_s)


def test_frames_all_is_a_valid_setting_and_prompt_heads_say_their_limit(tmp_path):
    from pipeline.config import ConfigError
    assert head_params("fusion", {"frames": "all"})["frames"] == "all"
    with pytest.raises(ConfigError, match="frames"):
        head_params("fusion", {"frames": "every"})


def test_batch_rows_bounds_every_batch_and_keeps_every_video_once():
    from pipeline.heads.data import plan_batches
    rng = np.random.default_rng(0)
    lengths = np.r_[rng.integers(5, 40, 200), 2000]  # one video 50x the median
    for frames, longest in (("all", lengths), (16, np.full(len(lengths), 16))):  # sampled: padded to 16
        plan = plan_batches(lengths, frames, 8, 120, np.random.default_rng(1))
        assert sorted(np.concatenate(plan).tolist()) == list(range(len(lengths)))
        for sel in plan:
            assert len(sel) <= 8
            assert len(sel) == 1 or len(sel) * longest[sel].max() <= 120
        assert plan_batches(lengths, frames, 8, 120, np.random.default_rng(1))[0].tolist() == plan[0].tolist()
    # the long video trains alone; without a budget it pads a full batch of 8
    assert [len(s) for s in plan_batches(lengths, "all", 8, 120, np.random.default_rng(1)) if 200 in s] == [1]
    # no budget: today's batches, a random order cut every batch_size videos
    plain = plan_batches(lengths, "all", 8, None, np.random.default_rng(1))
    assert np.concatenate(plain).tolist() == np.random.default_rng(1).permutation(len(lengths)).tolist()


def test_batch_rows_trains_the_long_video_in_a_small_batch(tmp_path):
    paths, samples, _ = _store(tmp_path, "t")
    train = _split(paths, samples)
    vpaths, vsamples, _ = _store(tmp_path, "v", seed=1)
    val = _split(vpaths, vsamples)
    params = head_params("motion_only", {"layers": 1, "attention_heads": 2, "epochs": 20, "lr": 1e-3, "frames": "all",
                                         "batch_size": 4, "batch_rows": 24})
    seen = []
    import pipeline.heads.trainer as trainer
    real = trainer.batches

    def spy(split, frames, plan, rng=None, device="cpu"):
        for batch in real(split, frames, plan, rng, device):
            if rng is not None:
                seen.append(tuple(batch[2].shape))
            yield batch
    trainer.batches = spy
    try:
        _, history = train_head(as_resolved("motion_only", params), train, val, C, False, CPU, progress=False)
    finally:
        trainer.batches = real
    assert max(b * t for b, t in seen) == 300 and (1, 300) in seen  # alone, not padding 4 x 300
    assert all(b * t <= 24 for b, t in seen if t < 300)
    assert max(h["val_metric"] for h in history) > 0.6


def test_chunked_attention_and_its_gradients_equal_full_attention():
    from pipeline.heads.layers import sdpa_in_chunks
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 50, 8, generator=g, requires_grad=True) for _ in range(3))
    keep = torch.ones(2, 1, 1, 50, dtype=torch.bool)
    keep[1, ..., 30:] = False
    full = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    chunked = sdpa_in_chunks(q, k, v, keep, 0.0, elements=2 * 4 * 7 * 50)  # chunks of 7 queries
    torch.testing.assert_close(chunked, full)
    grads = torch.autograd.grad(full.square().sum(), (q, k, v))
    torch.testing.assert_close(torch.autograd.grad(chunked.square().sum(), (q, k, v)), grads)


def _attention_peak_mb(chunk: bool) -> float:
    import subprocess
    import sys
    code = f"""
import resource, torch
import pipeline.heads.layers as m
from pipeline.compute import return_freed_memory
return_freed_memory()  # as train_head does
if not {chunk}:
    m.CHUNK_ELEMENTS = 10 ** 18
torch.manual_seed(0)
mha = torch.nn.MultiheadAttention(64, 8, dropout=0.1, batch_first=True).train()
x = torch.randn(2, 3000, 64, requires_grad=True)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
m.attention(mha, x, x, None).sum().backward()
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def test_attention_with_dropout_does_not_hold_the_weights_of_a_long_clip():
    """2 clips x 8 heads x 3000 x 3000 weights are 576 MB per copy in float32, and the CPU
    fallback with dropout keeps several; in chunks the step stays below one copy."""
    assert _attention_peak_mb(True) < 600  # about 250 here; 2200 without the chunks


def test_prompt_head_takes_videos_longer_than_its_position_table():
    """frames: all gives the prompt head clips longer than max_frames: each spreads the table
    over its own rows, so its logits do not depend on the batch it is padded in."""
    import torch.nn.functional as F
    from pipeline.heads.prompt import PromptHead
    torch.manual_seed(0)
    head = PromptHead(D, 0, C, layers=1, attention_heads=2, max_frames=8, conditioning=True).eval()
    head.set_classes(F.normalize(torch.randn(C, D), dim=-1))
    with torch.no_grad():
        head.out_proj.weight.normal_(0, 0.1)  # zero-initialised: make the temporal path count
    rgb = torch.randn(2, 50, D)
    mask = torch.arange(50)[None] < torch.tensor([[30], [50]])
    with torch.no_grad():
        together = head(rgb, None, mask)
        alone = head(rgb[:1, :30], None, mask[:1, :30])
        short = head(rgb[:1, :6], None, mask[:1, :6])
        short_padded = head(torch.cat([rgb[:1, :6], torch.zeros(1, 44, D)], 1), None,
                            torch.arange(50)[None] < 6)
    torch.testing.assert_close(together[:1], alone)
    torch.testing.assert_close(short_padded, short)
    pos = head.positions(mask)
    torch.testing.assert_close(pos[1, -1], head.pos[-1])  # the table's ends at each video's ends
    torch.testing.assert_close(pos[0, 29], head.pos[-1])
    torch.testing.assert_close(pos[0, 0], head.pos[0])
    x = 15 * 7 / 29  # row 15 of 30 sits at 3.62 on the 8-entry table
    torch.testing.assert_close(pos[0, 15], head.pos[3] * (4 - x) + head.pos[4] * (x - 3))
