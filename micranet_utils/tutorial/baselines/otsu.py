"""Otsu thresholding of the intensity: the classical floor of the comparison.

No training, no annotation: every pixel brighter than Otsu's threshold of the
(lightly smoothed) crop is called "structure". Intensity alone cannot tell a
periodic ring pattern from a longitudinal fiber, so the *same* mask is given
for every class; its per-class Dice therefore measures how much of each
class a brightness rule already recovers, not whether it tells them apart.
"""

import numpy as np
from skimage.filters import gaussian, threshold_otsu


def otsu_masks(images, num_classes=2, sigma=1.0):
    """Bright-pixel masks by Otsu's threshold, one per image, repeated per class.

    Parameters
    ----------
    images : ndarray of float, shape (N, H, W) or (N, 1, H, W)
        Grey-level crops.
    num_classes : int
        How many times to repeat the mask along the class axis.
    sigma : float
        Gaussian smoothing (pixels) before thresholding; 0 disables it.

    Returns
    -------
    ndarray of bool, shape (N, num_classes, H, W)
        Pixels above the threshold of their own crop. A constant crop gives an
        empty mask.

    Examples
    --------
    >>> image = np.zeros((1, 8, 8)); image[0, 2:5, 2:5] = 1
    >>> otsu_masks(image, sigma=0)[0, 0].sum()
    9
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 4:
        if images.shape[1] != 1:
            raise ValueError(f"Otsu needs grey-level images; got {images.shape[1]} channels")
        images = images[:, 0]
    if images.ndim != 3:
        raise ValueError(f"images must have shape (N, H, W) or (N, 1, H, W), got {images.shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    masks = np.zeros((len(images), num_classes) + images.shape[1:], dtype=bool)
    for index, image in enumerate(images):
        smooth = gaussian(image, sigma=sigma, preserve_range=True) if sigma > 0 else image
        if smooth.max() <= smooth.min():
            continue
        masks[index] = smooth > threshold_otsu(smooth)
    return masks
