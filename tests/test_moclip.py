"""The MoCLIP student on the demo data with a tiny config."""
import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT
from pipeline.annotations import build_samples, read_samples, write_samples
from pipeline.config import section
from pipeline.features.clip import extract_clip
from pipeline.features.flow import extract_flow
from pipeline.moclip.export import export_motion, linear_probe, pooled
from pipeline.moclip.model import MotionStudent, distill_loss, flow_to_rgb
from pipeline.moclip.train import open_data, train_student
from pipeline.moclip.windows import Windows, epoch_plan
from pipeline.store import FeatureReader, StoreError
from pipeline.video import probe_video

CPU = torch.device("cpu")
CLIP = {"model": "demo-tiny-ViT", "pretrained": None}
TINY = {"seq_len": 4, "batch_size": 6, "epochs": 3, "lr": 5e-4, "head_lr": 2e-3, "cls_weight": 1.0}


@pytest.fixture(scope="module")
def feats(demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("feats")
    s = build_samples({"format": "demo", "videos": str(demo_dir / "videos"),
                       "classes": str(demo_dir / "classes.csv"),
                       "annotations": str(demo_dir / "annotations.csv")}, 1)
    write_samples(s, out)
    paths = {}
    for split in ("train", "val", "test"):
        probes = [probe_video(demo_dir / "videos" / r["path"], r["video_id"],
                              {"mode": "uniform", "frames": 8, "max_frames": 64})
                  for r in s.rows if r["split"] == split]
        paths[("clip", split)] = out / f"clip-{split}.h5"
        paths[("flow", split)] = out / f"flow-{split}.h5"
        extract_clip(probes, paths[("clip", split)], section("clip", CLIP), CPU, progress=False)
        extract_flow(probes, paths[("flow", split)],
                     section("flow", {"backend": "dis", "work_size": 64, "size": 32, "bound": 4}),
                     CPU, progress=False)
    samples = read_samples(out / "samples.tsv")
    return {"dir": out, "paths": paths, "samples": samples, "n_classes": 6}


def data_for(feats, clip=CLIP):
    p = feats["paths"]
    return open_data([p[("clip", "train")]], [p[("flow", "train")]], [p[("clip", "val")]],
                     [p[("flow", "val")]], feats["samples"], feats["n_classes"], True,
                     section("clip", clip))


def test_windows_come_from_the_right_rows(feats):
    data = data_for(feats)
    vid = data["train_videos"][3]
    ds = Windows([(vid, 2)], data["flow"], data["clip"], data["targets"], 4)
    flow, teacher, target = ds[0]
    whole_f, whole_c = data["flow"].video(vid), data["clip"].video(vid)
    assert np.array_equal(flow, whole_f.data[2:6]) and np.allclose(teacher, whole_c.data[2:6])
    assert target.sum() >= 1
    plan = epoch_plan(data["train_videos"], data["lengths"], 4, seed=0, epoch=1)
    assert sorted(v for v, _ in plan) == sorted(data["train_videos"])
    assert all(0 <= s <= data["lengths"][v] - 4 for v, s in plan)
    assert plan == epoch_plan(data["train_videos"], data["lengths"], 4, seed=0, epoch=1)
    assert plan != epoch_plan(data["train_videos"], data["lengths"], 4, seed=0, epoch=2)


def test_distillation_is_zero_gradient_safe():
    from pipeline.factory import load_clip, preprocess_cfg
    teacher = load_clip("demo-tiny-ViT", None)
    cfg = preprocess_cfg(teacher)
    student = MotionStudent(teacher.visual, 3, cfg["size"], cfg["mean"], cfg["std"], 4.0)
    zero_flow = torch.full((2, 4, 2, 32, 32), 128, dtype=torch.uint8)  # ~zero motion
    mask = torch.ones(2, 4, dtype=torch.bool)
    emb, adapted, logits = student(zero_flow, mask)
    for kind in ("cosine", "mse"):
        loss = distill_loss(adapted, torch.zeros_like(adapted), mask, kind)
        zero = distill_loss(torch.zeros_like(adapted, requires_grad=True),
                            torch.zeros_like(adapted), mask, kind)
        zero.backward()
        assert torch.isfinite(loss) and torch.isfinite(zero)
    student.zero_grad()
    distill_loss(adapted, torch.zeros_like(adapted), mask, "cosine").backward()
    assert all(torch.isfinite(p.grad).all() for p in student.parameters() if p.grad is not None)
    assert torch.allclose(flow_to_rgb(torch.zeros(1, 2, 4, 4), 4.0), torch.ones(1, 3, 4, 4))


def test_student_images_by_lookup_equal_the_colour_wheel():
    """The student colours uint8 flow with a table of all 256 x 256 values: it must give
    flow_to_rgb's colours, for every value and at any input size."""
    from pipeline.features.flow import dequantise
    from pipeline.moclip.model import MotionStudent
    visual = torch.nn.Identity()
    visual.output_dim = 3
    grid = torch.stack(torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij"))
    flow = torch.cat([grid[None], grid.flip(1)[None]]).to(torch.uint8)  # (2, 2, 256, 256)
    for size in (256, 96):
        student = MotionStudent(visual, 2, size, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), 3.0)
        rgb = flow_to_rgb(dequantise(flow, 3.0), 3.0)
        if size != 256:
            rgb = torch.nn.functional.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False)
        assert torch.allclose(student.images(flow), (rgb - student.mean) / student.std, atol=1e-6)


def test_adapter_starts_as_identity():
    from pipeline.moclip.model import Adapter
    x = torch.randn(5, 16)
    assert torch.equal(Adapter(16, 32)(x), x)


def test_loss_falls_and_logs(feats, tmp_path):
    result = train_student(data_for(feats), section("moclip", {**TINY, "epochs": 4}), section("clip", CLIP),
                           tmp_path, CPU, progress=False)
    h = result["history"]
    assert h[-1]["distill_loss"] < h[0]["distill_loss"]
    assert h[-1]["distill_loss"] + h[-1]["cls_loss"] < h[0]["distill_loss"] + h[0]["cls_loss"]
    assert (tmp_path / "train_log.csv").read_text().startswith("epoch,distill_loss,cls_loss,val_distill_loss,val_loss,val_mAP")
    assert (tmp_path / "train_log.png").stat().st_size > 1000
    ckpt = torch.load(tmp_path / "student.pt", weights_only=False)
    assert ckpt["meta"]["teacher"] == {"model": "demo-tiny-ViT", "weights": "random"}


def test_resume_after_kill_gives_the_same_weights(feats, tmp_path):
    cfg = section("moclip", {**TINY, "epochs": 4})
    train_student(data_for(feats), cfg, section("clip", CLIP), tmp_path / "straight", CPU, progress=False)
    p = feats["paths"]
    script = f"""
import sys, json, torch
sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'tests')!r})
from pipeline.annotations import read_samples
from pipeline.config import section
from pipeline.moclip.train import open_data, train_student
data = open_data([{str(p[('clip','train')])!r}], [{str(p[('flow','train')])!r}],
                 [{str(p[('clip','val')])!r}], [{str(p[('flow','val')])!r}],
                 read_samples({str(feats['dir'] / 'samples.tsv')!r}), 6, True, section('clip', {CLIP!r}))
train_student(data, section('moclip', {json.loads(json.dumps(cfg))!r}), section('clip', {CLIP!r}),
              {str(tmp_path / 'resumed')!r}, torch.device('cpu'), progress=False)
"""
    proc = subprocess.Popen([sys.executable, "-c", script])
    last = tmp_path / "resumed" / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and torch.load(last, weights_only=False)["epoch"] >= 1:
            proc.kill()  # SIGKILL in the middle of epoch 3
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -9, "training finished before it could be interrupted"
    assert not (tmp_path / "resumed" / "student.pt").exists()
    result = train_student(data_for(feats), cfg, section("clip", CLIP), tmp_path / "resumed", CPU,
                           progress=False)
    assert len(result["history"]) == 4
    a = torch.load(tmp_path / "straight" / "student.pt", weights_only=False)["state_dict"]
    b = torch.load(tmp_path / "resumed" / "student.pt", weights_only=False)["state_dict"]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_changed_labels_or_features_never_resume_an_old_student(feats, tmp_path, caplog):
    """A finished run, then the labels change (or the shards are re-extracted from other
    videos): training starts over instead of republishing the old student."""
    import logging
    cfg = section("moclip", {**TINY, "epochs": 2})
    train_student(data_for(feats), cfg, section("clip", CLIP), tmp_path, CPU, progress=False)
    first = (tmp_path / "student.pt").read_bytes()
    caplog.set_level(logging.INFO, logger="pipeline")
    relabelled = [{**r, "labels": [(r["labels"][0] + 1) % 6]} for r in feats["samples"]]
    p = feats["paths"]
    data = open_data([p[("clip", "train")]], [p[("flow", "train")]], [p[("clip", "val")]],
                     [p[("flow", "val")]], relabelled, 6, True, section("clip", CLIP))
    result = train_student(data, cfg, section("clip", CLIP), tmp_path, CPU, progress=False)
    assert "not resuming" in caplog.text and "epoch 2 of 2 done" not in caplog.text
    assert len(result["history"]) == 2 and (tmp_path / "student.pt").read_bytes() != first
    # the same labels and shards: a finished run is resumed (nothing left to train)
    caplog.clear()
    train_student(data, cfg, section("clip", CLIP), tmp_path, CPU, progress=False)
    assert "resuming from" in caplog.text and "not resuming" not in caplog.text
    # other features under the same file names (the train shards swapped for the test ones)
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    import shutil
    shutil.copy(p[("clip", "test")], swapped / "clip.h5")
    shutil.copy(p[("flow", "test")], swapped / "flow.h5")
    test_as_train = [{**r, "split": "train"} if r["split"] == "test" else r for r in feats["samples"]]
    data = open_data([swapped / "clip.h5"], [swapped / "flow.h5"], [p[("clip", "val")]],
                     [p[("flow", "val")]], test_as_train, 6, True, section("clip", CLIP))
    caplog.clear()
    train_student(data, cfg, section("clip", CLIP), tmp_path, CPU, progress=False)
    assert "not resuming" in caplog.text


def test_teacher_identity_is_enforced(feats, tmp_path):
    with pytest.raises(StoreError, match="made by"):
        data_for(feats, clip={"model": "ViT-B-32", "pretrained": None})


def test_export_aligns_and_motion_beats_clip_in_a_linear_probe(feats, tmp_path):
    cfg = section("moclip", {**TINY, "epochs": 6})
    train_student(data_for(feats), cfg, section("clip", CLIP), tmp_path, CPU, progress=False)
    p = feats["paths"]
    for split in ("train", "test"):
        export_motion(tmp_path / "student.pt", p[("flow", split)], tmp_path / f"motion-{split}.h5", CPU)
    motion = {s: FeatureReader([tmp_path / f"motion-{s}.h5"], kind="motion") for s in ("train", "test")}
    clip = {s: FeatureReader([p[("clip", s)]]) for s in ("train", "test")}
    for v in clip["test"].video_ids:
        assert np.array_equal(motion["test"].video(v).frame_index, clip["test"].video(v).frame_index)
    assert motion["test"].attrs["embedding"] == "before adapter"
    by_id = {r["video_id"]: r for r in feats["samples"]}

    def xy(reader):
        vids = reader.video_ids
        y = np.zeros((len(vids), 6))
        for i, v in enumerate(vids):
            y[i, by_id[v]["labels"]] = 1
        return pooled(reader, vids), y
    scores = {}
    for name, r in (("clip", clip), ("motion", motion)):
        (xtr, ytr), (xte, yte) = xy(r["train"]), xy(r["test"])
        scores[name] = linear_probe(xtr, ytr, xte, yte, multilabel=True)
    assert scores["motion"] > scores["clip"] + 0.15, scores
    # flow made with other settings than the student saw is refused
    from pipeline.store import FeatureWriter
    other = tmp_path / "other-flow.h5"
    with FeatureWriter(other, "flow", (2, 32, 32), np.uint8, {"bound": 9.0}) as w:
        w.add("v", [0], [0.0], np.zeros((1, 2, 32, 32), np.uint8))
    with pytest.raises(StoreError, match="flow made with model=None, the student was trained on"):
        export_motion(tmp_path / "student.pt", other, tmp_path / "m.h5", CPU)


def test_flow_norm_per_frame_saturates_a_small_motion_and_zero_stays_white(micro_clip):
    from pipeline.factory import load_clip, preprocess_cfg
    from pipeline.features.flow import quantise
    from pipeline.moclip.model import MotionStudent
    clip = load_clip(micro_clip, None)
    pcfg = preprocess_cfg(clip)
    flow = np.zeros((1, 2, 16, 16), np.float32)
    flow[:, 0] = 2.0  # 2 px to the right everywhere, bound 20
    q = quantise(torch.from_numpy(flow), 20.0)
    mean = torch.tensor(pcfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(pcfg["std"]).view(1, 3, 1, 1)
    rgb = {}
    for norm in ("bound", "per_frame"):
        student = MotionStudent(clip.visual, 2, 16, pcfg["mean"], pcfg["std"], 20.0, flow_norm=norm)
        rgb[norm] = student.images(q) * std + mean
    assert rgb["bound"].min() > 0.85  # pale: 2 px is a tenth of the bound
    assert rgb["per_frame"].min() < 0.1  # full colour: the frame's largest motion
    still = quantise(torch.zeros(1, 2, 16, 16), 20.0)  # zero flow renders white, as ptlflow's
    for norm in ("bound", "per_frame"):
        student = MotionStudent(clip.visual, 2, 16, pcfg["mean"], pcfg["std"], 20.0, flow_norm=norm)
        white = student.images(still) * std + mean
        torch.testing.assert_close(white, torch.ones_like(white), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="flow_norm"):
        MotionStudent(clip.visual, 2, 16, pcfg["mean"], pcfg["std"], 20.0, flow_norm="max")


def test_student_protocol_options(feats, tmp_path):
    """ViMoCLIP's settings as options: every window per epoch, constant lr, MLP classifier,
    selection on the total validation loss, no clipping."""
    from pipeline.moclip.windows import epoch_plan
    lengths = {"a": 7, "b": 3, "c": 12}
    plan = epoch_plan(list(lengths), lengths, 4, 0, 0, "all_windows")
    assert sorted(plan) == [("a", 0), ("a", 4), ("b", 0), ("c", 0), ("c", 4), ("c", 8)]
    assert plan == epoch_plan(list(lengths), lengths, 4, 0, 0, "all_windows")  # seeded
    assert plan != epoch_plan(list(lengths), lengths, 4, 0, 1, "all_windows")  # reshuffled per epoch
    assert len(epoch_plan(list(lengths), lengths, 4, 0, 0)) == 3  # one window per video
    cfg = section("moclip", {**TINY, "epochs": 3, "epoch": "all_windows", "schedule": "none",
                             "classifier": "mlp", "select_by": "val_loss", "grad_clip": None})
    result = train_student(data_for(feats), cfg, section("clip", CLIP), tmp_path, CPU, progress=False)
    h = result["history"]
    assert len({row["lr"] for row in h}) == 1 and all(row["val_loss"] > 0 for row in h)
    assert result["best_epoch"] == 1 + min(range(3), key=lambda i: h[i]["val_loss"])
    state = torch.load(tmp_path / "student.pt", weights_only=False)["state_dict"]
    assert "classifier.0.weight" in state and "classifier.2.weight" in state


def test_student_epoch_reads_every_window_of_a_50x_longer_video(feats, tmp_path, monkeypatch):
    """all_windows on a store where one training video has 50x the rows of the others: every
    row is seen once per epoch, one seq_len window at a time (never the whole video), so the
    step's memory is the batch's windows, whatever the longest video."""
    from pipeline.store import FeatureWriter, read_attrs
    p = feats["paths"]
    long_vid = FeatureReader([p[("clip", "train")]]).video_ids[0]
    for kind in ("clip", "flow"):
        src = FeatureReader([p[(kind, "train")]])
        attrs = {k: v for k, v in read_attrs(p[(kind, "train")]).items()
                 if k not in ("kind", "schema_version", "producer", "complete", "content_sha256")}
        with FeatureWriter(tmp_path / f"{kind}-train.h5", kind, src.row_shape, src.row_dtype, attrs) as w:
            for vid in src.video_ids:
                rows = src.video(vid)
                reps = 50 if vid == long_vid else 1
                n = len(rows.frame_index) * reps
                w.add(vid, np.arange(n), np.arange(n) / 10.0, np.concatenate([rows.data] * reps))
    data = open_data([tmp_path / "clip-train.h5"], [tmp_path / "flow-train.h5"], [p[("clip", "val")]],
                     [p[("flow", "val")]], feats["samples"], feats["n_classes"], True, section("clip", CLIP))
    assert data["lengths"][long_vid] == 50 * 8
    reads = []
    real = Windows.__getitem__

    def spy(self, i):
        item = real(self, i)
        reads.append((self.items[i], len(item[0])))
        return item
    monkeypatch.setattr(Windows, "__getitem__", spy)
    cfg = section("moclip", {**TINY, "epochs": 2, "epoch": "all_windows"})
    train_student(data, cfg, section("clip", CLIP), tmp_path / "out", CPU, progress=False)
    assert max(n for _, n in reads) <= cfg["seq_len"]
    train_reads = [(v, s) for (v, s), _ in reads if v in data["train_videos"]]
    starts = sorted(s for v, s in train_reads if v == long_vid)
    assert starts == sorted(list(range(0, 400, 4)) * 2)  # every row of it, once per epoch
    windows = sum(-(-data["lengths"][v] // 4) for v in data["train_videos"])
    assert len(train_reads) == 2 * windows  # cost per epoch: linear in the stored rows


def test_flow_rows_of_other_frames_are_refused_once_when_opening(feats, tmp_path):
    """open_data checks every video's flow rows against its clip rows (frame numbers) once, so
    the training loop reads windows without re-checking them."""
    from pipeline.store import FeatureWriter, read_attrs
    p = feats["paths"]
    src = FeatureReader([p[("flow", "train")]])
    attrs = {k: v for k, v in read_attrs(p[("flow", "train")]).items()
             if k not in ("kind", "schema_version", "producer", "complete", "content_sha256")}
    shifted = src.video_ids[2]
    with FeatureWriter(tmp_path / "flow-train.h5", "flow", src.row_shape, src.row_dtype, attrs) as w:
        for vid in src.video_ids:
            rows = src.video(vid)
            w.add(vid, rows.frame_index + (1 if vid == shifted else 0), rows.timestamps, rows.data)
    with pytest.raises(StoreError, match=f"{shifted}.*different frames"):
        open_data([p[("clip", "train")]], [tmp_path / "flow-train.h5"], [p[("clip", "val")]],
                  [p[("flow", "val")]], feats["samples"], feats["n_classes"], True, section("clip", CLIP))


def test_vimoclips_adapter_and_validation_over_every_window():
    """ViMoCLIP's student: Linear(d, d)-GELU-Linear(d, d) adapter without LayerNorm, and a
    validation that reads every non-overlapping window of each video, not its centre only."""
    from pipeline.moclip.model import Adapter
    from pipeline.moclip.train import validate
    a = Adapter(16, 0.1, "vimoclip")
    assert [type(m).__name__ for m in a.mlp] == ["Linear", "GELU", "Linear"]
    assert a.mlp[0].weight.shape == (16, 16) and float(a.mlp[-1].weight.abs().sum()) == 0
    x = torch.randn(3, 16)
    torch.testing.assert_close(a(x), x)  # identity at start
    assert [type(m).__name__ for m in Adapter(16).mlp][0] == "LayerNorm"
    plans = []

    def loader(plan):
        plans.append(list(plan))
        yield None, None, None, torch.ones(len(plan), 2)

    def losses(batch):
        return torch.tensor(1.0), torch.tensor(0.5), torch.zeros(len(plans[-1]), 2)
    lengths = {"a": 70, "b": 30}
    data = {"multilabel": True}
    cfg = {"seq_len": 30, "cls_weight": 1.0}
    validate(torch.nn.Linear(1, 1), loader, losses, ["a", "b"], lengths, cfg, data)
    assert plans[-1] == [("a", 20), ("b", 0)]  # the centre windows
    validate(torch.nn.Linear(1, 1), loader, losses, ["a", "b"], lengths, {**cfg, "val_windows": "all"}, data)
    assert plans[-1] == [("a", 0), ("a", 30), ("a", 60), ("b", 0)]


@pytest.mark.parametrize("case", ["random", "real", "zero", "sub_pixel", "beyond_one_px_peak", "mixed_frames"])
def test_per_frame_rendering_is_ptlflows_flow_to_rgb(case, demo_dir):
    """Equal within 1/255 to ptlflow.utils.flow_utils.flow_to_rgb (ViMoCLIP renders with it)."""
    from ptlflow.utils.flow_utils import flow_to_rgb as ptlflow_rgb
    from pipeline.moclip.model import per_frame_rgb
    g = torch.Generator().manual_seed(0)
    if case == "random":
        flow = torch.randn(3, 2, 24, 24, generator=g) * 6
    elif case == "real":  # DIS flow of two demo frames
        import cv2
        cap = cv2.VideoCapture(str(demo_dir / "videos" / "clip_000.mp4"))
        frames = [cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2GRAY) for _ in range(3)]
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        flow = torch.from_numpy(np.stack([dis.calc(frames[i], frames[i + 2], None) for i in range(1)])).permute(0, 3, 1, 2)
    elif case == "zero":
        flow = torch.zeros(2, 2, 8, 8)
    elif case == "sub_pixel":  # the peak floored at 1 px: noise stays pale, not full colour
        flow = torch.randn(2, 2, 16, 16, generator=g) * 0.05
    elif case == "beyond_one_px_peak":
        flow = torch.randn(2, 2, 16, 16, generator=g) * 40
    else:  # one still frame, one moving: each frame its own peak
        flow = torch.cat([torch.zeros(1, 2, 8, 8), torch.randn(1, 2, 8, 8, generator=g) * 3])
    ours = per_frame_rgb(flow.float())
    theirs = ptlflow_rgb(flow.float())
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() <= 1 / 255, (ours - theirs).abs().max()
    if case == "sub_pixel":
        assert ours.min() > 0.7  # pale


def test_the_students_precision_is_a_setting_recorded_in_its_files(feats, tmp_path, monkeypatch):
    """moclip.precision reaches the training's autocast and student.pt says what it was."""
    import pipeline.moclip.train as train_mod
    seen = []
    real = train_mod.precision_context
    monkeypatch.setattr(train_mod, "precision_context", lambda name, device: (seen.append(name), real(name, device))[1])
    for precision, want in (("auto", "float32"), ("bfloat16", "bfloat16")):  # auto: float32 on a CPU
        seen.clear()
        out = tmp_path / precision
        train_student(data_for(feats), section("moclip", {**TINY, "epochs": 1, "precision": precision}),
                      section("clip", CLIP), out, CPU, progress=False)
        meta = torch.load(out / "student.pt", weights_only=False)["meta"]
        assert (meta["precision"], meta["device_type"]) == (want, "cpu") and set(seen) == {want}
        # the export computes in the student's precision too (ViMoCLIP exports in float32)
        from pipeline.moclip.export import export_motion
        from pipeline.store import read_attrs
        export_motion(out / "student.pt", feats["paths"][("flow", "val")], out / "m.h5", CPU)
        assert read_attrs(out / "m.h5")["precision"] == want


def test_a_student_tower_other_than_the_teachers_and_repeat_last_windows(feats, tmp_path):
    """ViMoCLIP trains a ViT-B/32 student under a ViT-B/16 teacher: here a CNN tower under the
    ViT teacher (both 64-d); a tower of another size is refused by name."""
    from pipeline.moclip.windows import collate
    from pipeline.moclip.export import load_student
    cfg = section("moclip", {**TINY, "epochs": 1, "model": "demo-tiny-CNN", "padding": "repeat_last"})
    train_student(data_for(feats), cfg, section("clip", CLIP), tmp_path, CPU, progress=False)
    meta = torch.load(tmp_path / "student.pt", weights_only=False)["meta"]
    assert meta["clip_model"] == "demo-tiny-CNN" and meta["teacher"]["model"] == "demo-tiny-ViT"
    student, _ = load_student(tmp_path / "student.pt", CPU)
    assert type(student.visual).__name__ != "VisionTransformer"
    with pytest.raises(ValueError, match="moclip.model 'test-micro-ViT' embeds in 32 dimensions"):
        from conftest import ROOT  # noqa: F401 - the micro config is registered by micro_clip
        from pipeline.factory import open_clip_module
        open_clip_module().add_model_config(ROOT / "tests" / "open_clip")
        train_student(data_for(feats), section("moclip", {**TINY, "epochs": 1, "model": "test-micro-ViT"}),
                      section("clip", CLIP), tmp_path / "bad", CPU, progress=False)
    # a 2-row window in 4: masked, or its last row repeated and counted
    window = (np.ones((2, 2, 4, 4), np.uint8) * np.array([1, 2], np.uint8)[:, None, None, None],
              np.arange(2 * 3, dtype=np.float32).reshape(2, 3), np.zeros(2, np.float32))
    flow, teacher, mask, _ = collate([window], 4, "mask")
    assert mask.tolist() == [[True, True, False, False]] and teacher[0, 3].abs().sum() == 0
    flow, teacher, mask, _ = collate([window], 4, "repeat_last")
    assert mask.all() and torch.equal(teacher[0, 3], teacher[0, 1]) and flow[0, 3].max() == 2
