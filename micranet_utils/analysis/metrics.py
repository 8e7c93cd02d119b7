"""How good are the masks, detections and counts? Plain scores over NumPy arrays.

Three families, each per class and averaged over classes:

* **pixels** (segmentation): Dice, IoU (Jaccard), precision and recall from the
  true-positive, false-positive and false-negative pixel counts;
* **objects** (detection): predicted and true centroids are paired one-to-one
  by an optimal matching (:func:`match_points`); a pair counts as a hit only
  when the two points are at most ``max_distance`` pixels apart; F1 follows;
* **counts**: absolute and relative error of the number of objects per image.

Every function takes an optional ``ignore`` mask: pixels where it is True are
left out of the pixel scores, and points that fall on them are dropped before
matching (use it for image borders or regions the annotator skipped).

Conventions for empty cases, chosen so that "nothing to find and nothing
found" is perfect and "something to find, nothing found" is a failure:
Dice, IoU, precision, recall and F1 are 1.0 when prediction and truth are both
empty; precision is 0.0 when nothing is predicted but the truth is not empty;
recall is 0.0 when the truth is empty but something is predicted.
"""

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = [
    "dice", "iou", "precision", "recall", "pixel_scores",
    "match_points", "detection_scores", "detection_scores_per_class",
    "count_error", "mean_over_classes",
]


def _as_masks(pred, truth, ignore):
    """Boolean views of `pred` and `truth` with the ignored pixels set to False."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"pred has shape {pred.shape} but truth has {truth.shape}")
    if ignore is not None:
        keep = ~np.broadcast_to(np.asarray(ignore, bool), pred.shape)
        pred, truth = pred & keep, truth & keep
    return pred, truth


def _counts(pred, truth, ignore):
    """(true positives, false positives, false negatives) pixel counts."""
    pred, truth = _as_masks(pred, truth, ignore)
    tp = int(np.count_nonzero(pred & truth))
    return tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(truth)) - tp


def _ratio(numerator, denominator):
    """`numerator / denominator`, 1.0 when both are 0 (nothing to find, nothing found)."""
    if denominator == 0:
        return 1.0
    return float(numerator) / float(denominator)


def dice(pred, truth, ignore=None):
    """Dice coefficient between two binary masks.

    Parameters
    ----------
    pred, truth : array_like of bool, shape (H, W) or (N, H, W)
        Predicted and true masks; shapes must match. All pixels are pooled.
    ignore : array_like of bool, broadcastable to the masks, optional
        Pixels left out of the score.

    Returns
    -------
    float
        2|A∩B| / (|A|+|B|); 1.0 when both masks are empty.

    Examples
    --------
    >>> dice(np.ones((4, 4), bool), np.ones((4, 4), bool))
    1.0
    """
    tp, fp, fn = _counts(pred, truth, ignore)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def iou(pred, truth, ignore=None):
    """Intersection over union (Jaccard index) of two binary masks.

    Same parameters as :func:`dice`. Returns |A∩B| / |A∪B|, 1.0 when both are empty.

    Examples
    --------
    >>> iou(np.array([1, 1, 0, 0], bool), np.array([0, 1, 1, 0], bool))
    0.3333333333333333
    """
    tp, fp, fn = _counts(pred, truth, ignore)
    return _ratio(tp, tp + fp + fn)


def precision(pred, truth, ignore=None):
    """Fraction of the predicted pixels that are true: TP / (TP + FP).

    Same parameters as :func:`dice`. 1.0 when both masks are empty, 0.0 when
    nothing is predicted but the truth is not empty.
    """
    tp, fp, fn = _counts(pred, truth, ignore)
    if tp + fp == 0:
        return 1.0 if fn == 0 else 0.0
    return tp / (tp + fp)


def recall(pred, truth, ignore=None):
    """Fraction of the true pixels that are predicted: TP / (TP + FN).

    Same parameters as :func:`dice`. 1.0 when both masks are empty, 0.0 when
    the truth is empty but something is predicted.
    """
    tp, fp, fn = _counts(pred, truth, ignore)
    if tp + fn == 0:
        return 1.0 if fp == 0 else 0.0
    return tp / (tp + fn)


def pixel_scores(pred, truth, ignore=None):
    """Dice, IoU, precision and recall of every class, pooled over the images.

    Parameters
    ----------
    pred, truth : array_like of bool, shape (N, C, H, W)
        Predicted and true masks of N images and C classes.
    ignore : array_like of bool, shape (N, H, W) or (N, 1, H, W) or broadcastable, optional
        Pixels left out of every score.

    Returns
    -------
    dict of str to ndarray of float64, shape (C,)
        Keys ``"dice"``, ``"iou"``, ``"precision"``, ``"recall"``. The pixel
        counts of a class are summed over all images before the ratio is taken.
        Average over classes with :func:`mean_over_classes`.
    """
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.ndim != 4:
        raise ValueError(f"pred must have shape (N, C, H, W); got {pred.shape}")
    if ignore is not None:
        ignore = np.asarray(ignore, bool)
        if ignore.ndim == 3:
            ignore = ignore[:, None]
    scores = {key: np.empty(pred.shape[1]) for key in ("dice", "iou", "precision", "recall")}
    for c in range(pred.shape[1]):
        ignore_c = None if ignore is None else np.broadcast_to(ignore, pred.shape)[:, c]
        for key, score in (("dice", dice), ("iou", iou), ("precision", precision), ("recall", recall)):
            scores[key][c] = score(pred[:, c], truth[:, c], ignore_c)
    return scores


def _drop_ignored(points, ignore):
    """Points (K, 2) whose rounded position is not on an ignored pixel."""
    if ignore is None or len(points) == 0:
        return points
    ignore = np.asarray(ignore, bool)
    rows = np.clip(np.round(points[:, 0]).astype(int), 0, ignore.shape[0] - 1)
    cols = np.clip(np.round(points[:, 1]).astype(int), 0, ignore.shape[1] - 1)
    return points[~ignore[rows, cols]]


def _is_one_image(points):
    """True when `points` is one (K, 2) point set rather than a list of them."""
    try:
        array = np.asarray(points, float)
    except ValueError:           # ragged: one array per image
        return False
    return (array.ndim == 2 and array.shape[1] == 2) or array.shape == (0,)


def _as_points(points, name):
    points = np.asarray(points, float).reshape(-1, 2) if np.size(points) else np.zeros((0, 2))
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return points


def match_points(pred_points, true_points, max_distance):
    """Pair predicted with true points one-to-one, at most `max_distance` apart.

    The matching is optimal: among all one-to-one pairings it first maximises
    the number of pairs closer than `max_distance`, then minimises the sum of
    their distances (Hungarian algorithm, :func:`scipy.optimize.linear_sum_assignment`,
    with every pair farther than `max_distance` given a cost larger than any
    admissible total). A greedy nearest-first pairing can miss pairs that this
    finds, e.g. when one prediction lies between two true points.

    Parameters
    ----------
    pred_points, true_points : array_like of float, shape (P, 2) and (T, 2)
        Point coordinates (row, column), in pixels.
    max_distance : float
        Largest Euclidean distance, in pixels, for a pair to count as a hit.

    Returns
    -------
    pairs : ndarray of int, shape (K, 2)
        Index into `pred_points` and into `true_points` of each hit.
    distances : ndarray of float, shape (K,)
        Distance of each pair.

    Examples
    --------
    >>> match_points([[0, 0], [10, 10]], [[0, 1]], max_distance=2)[0]
    array([[0, 0]])
    """
    if not max_distance > 0:
        raise ValueError(f"max_distance must be positive; got {max_distance}")
    pred = _as_points(pred_points, "pred_points")
    true = _as_points(true_points, "true_points")
    if len(pred) == 0 or len(true) == 0:
        return np.zeros((0, 2), int), np.zeros(0)
    distance = np.linalg.norm(pred[:, None, :] - true[None, :, :], axis=-1)
    too_far = distance > max_distance
    cost = np.where(too_far, max_distance * (min(distance.shape) + 1.0), distance)
    rows, cols = linear_sum_assignment(cost)
    hit = ~too_far[rows, cols]
    return np.stack([rows[hit], cols[hit]], axis=1), distance[rows[hit], cols[hit]]


def detection_scores(pred_points, true_points, max_distance, ignore=None):
    """True positives, false positives, false negatives, precision, recall and F1.

    Parameters
    ----------
    pred_points, true_points : array_like of float, shape (P, 2) and (T, 2), or lists of them
        Centroids (row, column) of one image, or one array per image (the
        counts are then summed over images before the ratios are taken).
    max_distance : float
        Matching distance in pixels (see :func:`match_points`).
    ignore : array_like of bool, shape (H, W), or a list of them, optional
        Points on these pixels are dropped from both sides before matching.

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn`` (int) and ``precision``, ``recall``, ``f1`` (float).
        F1 = 2 TP / (2 TP + FP + FN); 1.0 when there is nothing to find and nothing found.

    Examples
    --------
    >>> detection_scores([[0, 0], [9, 9]], [[1, 0]], max_distance=3)["f1"]
    0.6666666666666666
    """
    if _is_one_image(pred_points) and _is_one_image(true_points):
        pred_points, true_points, ignore = [pred_points], [true_points], [ignore]
    elif ignore is None or np.ndim(ignore) == 2:
        ignore = [ignore] * len(pred_points)
    if not len(pred_points) == len(true_points) == len(ignore):
        raise ValueError(f"{len(pred_points)} predicted point sets but {len(true_points)} true ones")
    tp = fp = fn = 0
    for pred, true, ign in zip(pred_points, true_points, ignore):
        pred = _drop_ignored(_as_points(pred, "pred_points"), ign)
        true = _drop_ignored(_as_points(true, "true_points"), ign)
        hits = len(match_points(pred, true, max_distance)[0])
        tp, fp, fn = tp + hits, fp + len(pred) - hits, fn + len(true) - hits
    if tp + fp == 0:
        prec = 1.0 if fn == 0 else 0.0
    else:
        prec = tp / (tp + fp)
    if tp + fn == 0:
        rec = 1.0 if fp == 0 else 0.0
    else:
        rec = tp / (tp + fn)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": prec, "recall": rec,
            "f1": _ratio(2 * tp, 2 * tp + fp + fn)}


def detection_scores_per_class(pred_points, true_points, max_distance, ignore=None):
    """:func:`detection_scores` of every class, summed over the images.

    Parameters
    ----------
    pred_points, true_points : list (N images) of list (C classes) of array_like, shape (K, 2)
        Centroids (row, column) per image and class, e.g. from
        ``[[d.centroids for d in image] for image in recipes.detect(masks)]``.
    max_distance : float
        Matching distance in pixels.
    ignore : list (N) of array_like of bool, shape (H, W), optional

    Returns
    -------
    dict of str to ndarray, shape (C,)
        ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1`` of each class.
    """
    if len(pred_points) != len(true_points):
        raise ValueError(f"{len(pred_points)} images of predicted points but {len(true_points)} of true ones")
    num_classes = len(pred_points[0]) if len(pred_points) else 0
    rows = [detection_scores([image[c] for image in pred_points], [image[c] for image in true_points],
                             max_distance, ignore) for c in range(num_classes)]
    return {key: np.array([row[key] for row in rows]) for key in ("tp", "fp", "fn", "precision", "recall", "f1")}


def count_error(pred_counts, true_counts):
    """Absolute and relative error of object counts.

    Parameters
    ----------
    pred_counts, true_counts : array_like of int, shape (N,) or (N, C)
        Number of objects per image (and class).

    Returns
    -------
    dict of str to ndarray of float64, shape (C,) (or scalar for 1-D input)
        ``"absolute"``: mean over images of |pred - true|;
        ``"relative"``: mean over images of |pred - true| / max(true, 1)
        (an image with no true object counts its false objects as the error);
        ``"bias"``: mean of pred - true (negative = undercounting).

    Examples
    --------
    >>> count_error([3, 0], [4, 0])["absolute"]
    0.5
    """
    pred, true = np.asarray(pred_counts, float), np.asarray(true_counts, float)
    if pred.shape != true.shape:
        raise ValueError(f"pred_counts has shape {pred.shape} but true_counts has {true.shape}")
    if pred.shape[0] == 0:
        raise ValueError("count_error needs at least one image")
    error = pred - true
    result = {"absolute": np.abs(error).mean(axis=0),
              "relative": (np.abs(error) / np.maximum(true, 1.0)).mean(axis=0),
              "bias": error.mean(axis=0)}
    if pred.ndim == 1:
        result = {key: float(value) for key, value in result.items()}
    return result


def mean_over_classes(scores):
    """Average each per-class score over the classes.

    Parameters
    ----------
    scores : dict of str to array_like, shape (C,)
        For example the result of :func:`pixel_scores` or :func:`count_error`.

    Returns
    -------
    dict of str to float
        The unweighted mean of each entry (macro average: every class weighs
        the same whatever its size).
    """
    return {key: float(np.mean(value)) for key, value in scores.items()}
