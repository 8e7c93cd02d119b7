"""Metrics against small cases worked out by hand."""

import numpy as np
import pytest

from micranet_utils.analysis import metrics

# 4 x 4 masks: pred covers the left half (8 px), truth the top half (8 px); overlap 4 px.
PRED = np.zeros((4, 4), bool)
PRED[:, :2] = True
TRUTH = np.zeros((4, 4), bool)
TRUTH[:2, :] = True


def test_pixel_scores_by_hand():
    # TP = 4, FP = 4, FN = 4
    assert metrics.dice(PRED, TRUTH) == pytest.approx(8 / 16)
    assert metrics.iou(PRED, TRUTH) == pytest.approx(4 / 12)
    assert metrics.precision(PRED, TRUTH) == pytest.approx(4 / 8)
    assert metrics.recall(PRED, TRUTH) == pytest.approx(4 / 8)


def test_asymmetric_case_by_hand():
    pred = np.zeros((3, 3), bool)
    pred[0, 0] = True                       # 1 px, a hit
    truth = np.zeros((3, 3), bool)
    truth[0, :] = True                      # 3 px
    assert metrics.precision(pred, truth) == 1.0
    assert metrics.recall(pred, truth) == pytest.approx(1 / 3)
    assert metrics.dice(pred, truth) == pytest.approx(2 / 4)
    assert metrics.iou(pred, truth) == pytest.approx(1 / 3)


def test_ignore_region_removes_pixels_from_both_sides():
    ignore = np.zeros((4, 4), bool)
    ignore[2:, :2] = True                   # the 4 false-positive pixels of PRED
    assert metrics.precision(PRED, TRUTH, ignore=ignore) == 1.0
    assert metrics.iou(PRED, TRUTH, ignore=ignore) == pytest.approx(4 / 8)


def test_empty_cases_follow_documented_conventions():
    empty = np.zeros((2, 2), bool)
    full = np.ones((2, 2), bool)
    for score in (metrics.dice, metrics.iou, metrics.precision, metrics.recall):
        assert score(empty, empty) == 1.0
    assert metrics.precision(empty, full) == 0.0
    assert metrics.recall(full, empty) == 0.0
    assert metrics.dice(empty, full) == 0.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        metrics.dice(np.zeros((2, 2)), np.zeros((3, 3)))


def test_pixel_scores_per_class_pool_images_and_average():
    pred = np.zeros((2, 2, 4, 4), bool)
    truth = np.zeros((2, 2, 4, 4), bool)
    pred[0, 0], truth[0, 0] = PRED, TRUTH    # class 0, image 0: dice 0.5
    pred[1, 0], truth[1, 0] = TRUTH, TRUTH   # class 0, image 1: perfect -> pooled TP 12, FP 4, FN 4
    truth[0, 1, 0, 0] = True                 # class 1: one missed pixel
    scores = metrics.pixel_scores(pred, truth)
    np.testing.assert_allclose(scores["dice"], [24 / 32, 0.0])
    np.testing.assert_allclose(scores["iou"], [12 / 20, 0.0])
    np.testing.assert_allclose(scores["recall"], [12 / 16, 0.0])
    assert metrics.mean_over_classes(scores)["dice"] == pytest.approx(0.375)


def test_matching_is_optimal_not_greedy():
    # Greedy nearest-first pairs pred 0 (x=1) with true 1 (x=1.1) and leaves true 0 unmatched;
    # the optimal matching pairs pred 0 - true 0 and pred 1 - true 1: two hits.
    pred = [[0, 1.0], [0, 2.0]]
    true = [[0, 0.0], [0, 1.1]]
    pairs, distances = metrics.match_points(pred, true, max_distance=1.0)
    assert sorted(map(tuple, pairs)) == [(0, 0), (1, 1)]
    np.testing.assert_allclose(sorted(distances), [0.9, 1.0])


def test_pairs_beyond_the_distance_are_not_hits():
    pairs, _ = metrics.match_points([[0, 0]], [[0, 5]], max_distance=4.9)
    assert len(pairs) == 0
    with pytest.raises(ValueError, match="max_distance"):
        metrics.match_points([[0, 0]], [[0, 5]], max_distance=0)


def test_detection_scores_by_hand():
    # 3 predictions, 2 true points; one hit, 2 FP, 1 FN -> P 1/3, R 1/2, F1 2/5
    scores = metrics.detection_scores([[0, 0], [10, 10], [20, 20]], [[1, 1], [30, 30]], max_distance=2)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (1, 2, 1)
    assert scores["precision"] == pytest.approx(1 / 3)
    assert scores["recall"] == pytest.approx(1 / 2)
    assert scores["f1"] == pytest.approx(2 / 5)


def test_detection_scores_sum_over_images_and_ignore_points():
    pred = [np.array([[0.0, 0.0]]), np.zeros((0, 2)), np.array([[5.0, 5.0], [1.0, 1.0]])]
    true = [np.array([[0.0, 1.0]]), np.array([[3.0, 3.0]]), np.array([[5.0, 5.0]])]
    scores = metrics.detection_scores(pred, true, max_distance=1.5)
    assert (scores["tp"], scores["fp"], scores["fn"]) == (2, 1, 1)
    ignore = np.zeros((8, 8), bool)
    ignore[1, 1] = ignore[3, 3] = True       # drops the FP (1, 1) and the FN (3, 3)
    scores = metrics.detection_scores(pred, true, max_distance=1.5, ignore=ignore)
    assert (scores["tp"], scores["fp"], scores["fn"], scores["f1"]) == (2, 0, 0, 1.0)


def test_detection_scores_empty():
    assert metrics.detection_scores([], [], max_distance=3)["f1"] == 1.0
    assert metrics.detection_scores([], [[1, 1]], max_distance=3)["f1"] == 0.0


def test_detection_scores_per_class():
    pred = [[np.array([[0.0, 0.0]]), np.zeros((0, 2))]]
    true = [[np.array([[0.0, 0.5]]), np.array([[4.0, 4.0]])]]
    scores = metrics.detection_scores_per_class(pred, true, max_distance=1)
    np.testing.assert_array_equal(scores["f1"], [1.0, 0.0])
    np.testing.assert_array_equal(scores["fn"], [0, 1])


def test_count_error_by_hand():
    errors = metrics.count_error([[3, 0], [5, 2]], [[4, 0], [5, 0]])
    np.testing.assert_allclose(errors["absolute"], [0.5, 1.0])
    np.testing.assert_allclose(errors["relative"], [(1 / 4 + 0) / 2, (0 + 2 / 1) / 2])
    np.testing.assert_allclose(errors["bias"], [-0.5, 1.0])
    assert metrics.count_error([2], [2]) == {"absolute": 0.0, "relative": 0.0, "bias": 0.0}
    with pytest.raises(ValueError, match="shape"):
        metrics.count_error([1, 2], [1])
