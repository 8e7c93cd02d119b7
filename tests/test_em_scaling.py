"""EM intensities: the original divides 8-bit EM by 255, ``prepare_image`` uses percentiles.

The difference is measured and documented in ``prepare_image`` (Notes); these
tests keep those numbers true on the published EM samples and show where the
two scalings part ways (an image using a narrow part of the 8-bit range).
"""

import numpy as np

from micranet_utils.io.images import prepare_image, read_image


def test_percentiles_stay_close_to_the_original_division_on_the_em_samples(upstream_samples):
    paths = sorted((upstream_samples / "em").glob("*.tif"))
    assert len(paths) == 2
    for path in paths:
        image = read_image(path)
        ours, original = prepare_image(image), image / 255
        difference = np.abs(ours - original)
        assert 0 <= ours.min() and ours.max() <= 1
        assert difference.max() < 0.06 and 0.015 < difference.mean() < 0.03, (path.name, difference.max())
        assert np.corrcoef(ours.ravel(), original.ravel())[0, 1] > 0.9999


def test_a_narrow_8_bit_range_is_stretched_unlike_the_original():
    rng = np.random.default_rng(0)
    image = rng.integers(100, 156, (1, 64, 64)).astype(np.float32)     # 8-bit, low contrast
    ours = prepare_image(image)
    assert ours.max() - ours.min() > 0.99                               # stretched to [0, 1]
    assert (image / 255).max() - (image / 255).min() < 0.22             # the original keeps 0.39 to 0.61
    np.testing.assert_array_equal(prepare_image(image / 255, "none"), (image / 255).astype(np.float32))
