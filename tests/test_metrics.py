import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from pipeline.metrics import average_precision, evaluate


def test_macro_and_micro_map_match_sklearn_on_random_data():
    rng = np.random.default_rng(0)
    scores = rng.random((50, 7))
    labels = (rng.random((50, 7)) < 0.3).astype(int)
    labels[:, 3] = 0  # a class without positives is left out of the macro mean
    out = evaluate(scores, labels)
    keep = [c for c in range(7) if labels[:, c].any()]
    want = np.mean([average_precision_score(labels[:, c], scores[:, c]) for c in keep])
    assert out["mAP"] == pytest.approx(want)
    assert out["mAP_micro"] == pytest.approx(average_precision_score(labels.ravel(), scores.ravel()))
    assert out["per_class_ap"][3] is None and out["n_classes_evaluated"] == 6


def test_ties_are_one_threshold_like_sklearn():
    y = np.array([1, 0, 1, 0, 1, 0])
    s = np.array([0.5, 0.5, 0.5, 0.2, 0.9, 0.9])
    assert average_precision(s, y) == pytest.approx(average_precision_score(y, s))
    assert average_precision(np.zeros(6), y) == pytest.approx(0.5)  # all tied: base rate


def test_hand_made_case():
    # ranking: pos, neg, pos -> AP = (1/1 + 2/3) / 2
    assert average_precision([0.9, 0.8, 0.7], [1, 0, 1]) == pytest.approx((1 + 2 / 3) / 2)


def test_single_video_and_segments():
    out = evaluate([[0.2, 0.9, 0.1]], [[0, 1, 0]], segments=["head", "tail", "tail"])
    assert out["mAP"] == 1.0 and out["mAP_micro"] == 1.0
    assert out["mAP_tail"] == 1.0 and out["mAP_head"] is None


def test_segments_average_their_own_classes():
    rng = np.random.default_rng(1)
    scores, labels = rng.random((40, 4)), (rng.random((40, 4)) < 0.5).astype(int)
    out = evaluate(scores, labels, segments=["head", "head", "middle", "tail"])
    ap = out["per_class_ap"]
    assert out["mAP_head"] == pytest.approx((ap[0] + ap[1]) / 2)
    assert out["mAP_middle"] == pytest.approx(ap[2]) and out["mAP_tail"] == pytest.approx(ap[3])


def test_single_label_top_k_and_mean_class_accuracy():
    scores = np.array([[0.9, 0.05, 0.05, 0, 0, 0],   # truth 0: rank 1
                       [0.1, 0.2, 0.7, 0, 0, 0],     # truth 1: rank 2
                       [0.6, 0.1, 0.3, 0, 0, 0],     # truth 2: rank 2
                       [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]])  # truth 0: rank 6
    labels = np.array([0, 1, 2, 0])
    out = evaluate(scores, labels, multilabel=False)
    assert out["top1"] == 0.25
    assert out["top5"] == 0.75
    assert out["mean_class_accuracy"] == pytest.approx(np.mean([0.5, 0.0, 0.0]))
    assert set(out) >= {"top1", "top5", "mean_class_accuracy"}


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="NaN"):
        evaluate([[np.nan]], [[1]])
    with pytest.raises(ValueError, match="shape"):
        evaluate(np.zeros((2, 3)), np.zeros((2, 2)))


def test_single_label_ties_do_not_favour_the_true_class():
    """A model scoring every class equally is at chance, not perfect (expected share of ties)."""
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    flat = evaluate(np.full((8, 4), 0.25), labels, multilabel=False)
    assert flat["top1"] == pytest.approx(0.25) and flat["mean_class_accuracy"] == pytest.approx(0.25)
    assert flat["top5"] == pytest.approx(1.0)  # 4 classes: the top 5 holds them all
    # the truth tied with one other class at the top: half a hit; strictly first: a hit
    scores = np.array([[0.5, 0.5, 0.0], [0.9, 0.1, 0.0]])
    out = evaluate(scores, np.array([0, 0]), multilabel=False)
    assert out["top1"] == pytest.approx((0.5 + 1.0) / 2)


def test_single_label_segment_accuracy_is_animal_clips_lt_acc():
    from pipeline.metrics import evaluate
    scores = np.array([[0.9, 0.1, 0.0, 0.0, 0.0, 0.0],   # class 0 (head): top-1 hit
                       [0.1, 0.9, 0.0, 0.0, 0.0, 0.0],   # class 0 (head): 2nd -> top-5 hit only
                       [0.0, 0.0, 0.9, 0.0, 0.0, 0.0],   # class 2 (tail): top-1 hit
                       [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],   # class 5 (tail): last of 6 -> no hit
                       [0.5, 0.5, 0.0, 0.0, 0.0, 0.0]])  # class 1 (head): tie for first -> 0.5
    labels = np.array([0, 0, 2, 5, 1])
    out = evaluate(scores, labels, multilabel=False, segments=["head", "head", "tail", "tail", "tail", "tail"])
    assert out["top1_head"] == pytest.approx((1 + 0 + 0.5) / 3) and out["top5_head"] == 1.0
    assert out["top1_tail"] == 0.5 and out["top5_tail"] == 0.5
