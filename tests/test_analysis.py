"""Where motion helps: the report's per-class comparison, confusions, worst videos and agreement."""
import csv

import numpy as np
import pytest

from pipeline.analysis import agreement, analyse, confused_pairs, confusion, video_losses
from pipeline.heads.scores import read_scores, write_scores

NAMES = ["run", "eat", "swim", "fly"]


def _head(tmp_path, name, scores, labels, motion, multilabel=False):
    folder = tmp_path / "heads" / name
    folder.mkdir(parents=True)
    write_scores(folder / "scores.npz", [f"v{i}" for i in range(len(scores))], scores, labels, NAMES,
                 multilabel, motion)
    return folder / "scores.npz"


def _metrics(scores, labels):
    from pipeline.metrics import evaluate_logits
    return evaluate_logits(np.log(np.clip(scores, 1e-9, 1)), labels, multilabel=False)


def _single_label_run(tmp_path):
    """12 videos, 3 per class. rgb_only mistakes swim for fly; the motion head gets them."""
    labels = np.repeat(np.arange(4), 3)
    rgb = np.full((12, 4), 0.1)
    rgb[np.arange(12), labels] = 0.7
    rgb[6:9] = [0.1, 0.1, 0.05, 0.75]  # swim -> fly, three times: swim and fly AP drop
    motion = np.full((12, 4), 0.1)
    motion[np.arange(12), labels] = 0.7
    motion[0] = [0.05, 0.8, 0.1, 0.05]  # one run -> eat: run and eat AP drop
    files = [_head(tmp_path, "rgb_only", rgb, labels, False),
             _head(tmp_path, "motion_only", motion, labels, True)]
    metrics = {"rgb_only": {**_metrics(rgb, labels), "head": "rgb_only"},
               "motion_only": {**_metrics(motion, labels), "head": "motion_only"}}
    samples = [{"video_id": f"v{i}", "path": f"clips/v{i}.mp4", "split": "test", "labels": [int(c)]}
               for i, c in enumerate(labels)]
    samples += [{"video_id": f"t{i}", "path": f"t{i}.mp4", "split": "train", "labels": [i % 4]}
                for i in range(10)]
    return files, metrics, samples


def test_single_label_analysis_names_gains_confusions_and_agreement(tmp_path):
    files, metrics, samples = _single_label_run(tmp_path)
    classes = [{"name": n, "segment": s} for n, s in zip(NAMES, ["head", "head", "tail", "tail"])]
    out = tmp_path / "reports"
    out.mkdir()
    lines = analyse(files, metrics, classes, samples, "train", out, "/data/videos", "results/mine")
    text = "\n".join(lines)
    rows = list(csv.DictReader(open(out / "per_class.csv")))
    assert rows[0]["class"] == "swim" and float(rows[0]["gain"]) > 0  # where motion helps most
    gains = [float(r["gain"]) for r in rows]
    assert gains == sorted(gains, reverse=True)
    assert {r["class"]: int(r["train_videos"]) for r in rows} == {"run": 3, "eat": 3, "swim": 2, "fly": 2}
    assert rows[0]["segment"] == "tail" and "AP motion_only" in rows[0] and "AP rgb_only" in rows[0]
    assert "helps most: swim (+75.0), fly (+50.0)" in text and "hurts most: eat (-25.0), run (-25.0)" in text
    assert "majority vote" not in text  # two heads: a vote is a coin toss where they differ
    assert "rgb_only: swim → fly (3)" in text and "motion_only: run → eat (1)" in text
    worst = list(csv.DictReader(open(out / "worst_videos.csv")))
    assert len(worst) == 24  # 12 videos (fewer than 20) for each of the 2 heads
    first = worst[0]
    assert first["head"] == "motion_only" and first["video_id"] == "v0" and first["top1"] == "eat"
    assert first["command"] == ("python -m pipeline predict /data/videos/clips/v0.mp4 --run "
                                "results/mine --head motion_only --timeline")
    assert "same top-1 class on 67% of the videos" in text  # 8 of 12: v0 and v6-v8 differ
    for name in ("per_class.png", "confusion.png", "agreement.png"):
        assert (out / name).stat().st_size > 5000, name


def test_confusions_losses_and_agreement_by_hand(tmp_path):
    files, metrics, _ = _single_label_run(tmp_path)
    heads = read_scores(files)
    m = confusion(heads["rgb_only"])
    assert m[2, 3] == 3 and m.trace() == 9
    assert confused_pairs(m, NAMES) == [("swim", "fly", 3)]
    loss = video_losses(heads["motion_only"])
    assert loss[0] == pytest.approx(-np.log(0.05)) and loss[1] == pytest.approx(-np.log(0.7))
    a = agreement(heads, ["motion_only", "rgb_only"])
    assert a["all_agree"] == pytest.approx(8 / 12) and a["accuracy_agree"] == 1.0
    # where they disagree one of the two is right on each video (4 of 8 head-video pairs)
    assert a["accuracy_disagree"] == pytest.approx(0.5)
    assert a["pairwise"][0, 1] == pytest.approx(8 / 12)


def test_multi_label_losses_sum_over_classes(tmp_path):
    y = np.array([[1, 0, 1, 0]])
    p = np.array([[0.9, 0.2, 0.5, 0.1]])
    path = _head(tmp_path, "fusion", p, y, True, multilabel=True)
    loss = video_losses(read_scores([path])["fusion"])
    assert loss[0] == pytest.approx(-(np.log(0.9) + np.log(0.8) + np.log(0.5) + np.log(0.9)))


def test_multi_label_confusions_count_absent_classes_scored_above_a_true_one(tmp_path):
    """Three videos with run (one also with eat); swim outscores run on two of them, fly on none."""
    y = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]])
    p = np.array([[0.5, 0.1, 0.7, 0.2], [0.6, 0.9, 0.8, 0.1], [0.9, 0.2, 0.1, 0.1],
                  [0.1, 0.1, 0.9, 0.3]])
    h = read_scores([_head(tmp_path, "fusion", p, y, True, multilabel=True)])["fusion"]
    m = confusion(h)
    assert m[0, 2] == 2 and m[0, 3] == 0 and m[0, 1] == 0  # eat is present where it outscores run
    assert m[1, 2] == 0 and m[2].sum() == 0
    assert confused_pairs(m, NAMES)[0] == ("run", "swim", 2)
    out = tmp_path / "reports"
    out.mkdir()
    samples = [{"video_id": f"v{i}", "path": f"v{i}.mp4", "split": "test", "labels": list(np.flatnonzero(r))}
               for i, r in enumerate(y)]
    lines = analyse([tmp_path / "heads" / "fusion" / "scores.npz"], {"fusion": {"head": "fusion", "mAP": 0.5,
                    "per_class_ap": [0.5] * 4}}, [{"name": n} for n in NAMES], samples, "train", out)
    text = "\n".join(lines)
    assert "Most confused (true → absent class scored above it, videos)" in text
    assert "fusion: run → swim (2)" in text
    assert (out / "confusion.png").stat().st_size > 5000
