"""From masks to objects: connected components, their centroids, boxes and areas, and counts.

The last step of every recipe (:mod:`micranet_utils.analysis.recipes`): the masks of
:func:`~micranet_utils.analysis.recipes.segment` become objects to detect and count, or
one label image per input image.
"""

from typing import NamedTuple

import numpy as np
from scipy import ndimage

from ..base.arrays import to_numpy

__all__ = ["labels_from_masks", "Objects", "detect", "count"]


def labels_from_masks(masks):
    """One label image per image: 0 background, c + 1 where class c is masked.

    Where classes overlap the highest class index wins (as in the original MNIST script).

    Parameters
    ----------
    masks : ndarray of bool, shape (B, C, H, W)

    Returns
    -------
    ndarray of int32, shape (B, H, W)
    """
    masks = np.asarray(masks, bool)
    index = np.arange(1, masks.shape[1] + 1, dtype=np.int32)[None, :, None, None]
    return (masks * index).max(axis=1).astype(np.int32)


class Objects(NamedTuple):
    """The connected objects of one mask.

    Attributes
    ----------
    centroids : ndarray of float64, shape (K, 2)
        (row, column) of each object's centre of mass.
    boxes : ndarray of int64, shape (K, 4)
        (min_row, min_col, max_row, max_col), max exclusive.
    areas : ndarray of int64, shape (K,)
        Pixels per object.
    """

    centroids: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray


def _objects(mask, min_area):
    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    rows, cols = np.indices(mask.shape)
    centroids = np.stack([np.bincount(labels.ravel(), rows.ravel(), count + 1)[1:],
                          np.bincount(labels.ravel(), cols.ravel(), count + 1)[1:]], axis=1)
    centroids = centroids / np.maximum(areas, 1)[:, None]
    boxes = np.array([[s[0].start, s[1].start, s[0].stop, s[1].stop] for s in ndimage.find_objects(labels)],
                     np.int64).reshape(-1, 4)
    keep = areas >= min_area
    return Objects(centroids[keep], boxes[keep], areas[keep].astype(np.int64))


def detect(masks, min_area=1):
    """The objects (8-connected components) of every mask.

    Parameters
    ----------
    masks : ndarray of bool, shape (B, C, H, W)
        From :func:`segment`.
    min_area : int
        Objects smaller than this many pixels are dropped.

    Returns
    -------
    list (B) of list (C) of Objects
        Centroids, boxes and areas per image and class.
    """
    masks = to_numpy(masks, "masks (B, C, H, W)", 4, bool)
    return [[_objects(mask, min_area) for mask in image] for image in masks]


def count(masks, min_area=1):
    """Number of objects per image and class.

    Parameters
    ----------
    masks : ndarray of bool, shape (B, C, H, W)
    min_area : int
        Objects smaller than this many pixels are not counted.

    Returns
    -------
    ndarray of int64, shape (B, C)
    """
    return np.array([[len(objects.areas) for objects in image] for image in detect(masks, min_area)],
                    np.int64).reshape(np.shape(masks)[:2])
