"""The viewer: its masks are the recipe's masks, its widgets redraw, the static figure draws."""

import numpy as np
import pytest

from micranet_utils.analysis import recipes
from micranet_utils.tutorial import viewer

pytest.importorskip("ipywidgets")


@pytest.fixture
def case():
    from test_recipes import actin_case

    rng = np.random.default_rng(0)
    maps, images = actin_case(rng, size=64, batch=2)
    truth = maps[:, :, 0] > 0.5
    return images, maps, truth


def test_render_mask_is_the_actin_recipe(case):
    images, maps, _ = case
    for quantile, sigma in [(0.8, 1.0), (0.9, 2.5)]:
        panels, mask = viewer.render(images, maps, index=1, class_index=0, quantile=quantile, sigma=sigma)
        expected = recipes.segment(maps, np.ones((2, 2), bool), images, quantile=quantile, sigma=sigma)[1, 0]
        np.testing.assert_array_equal(mask, expected)
        assert panels.shape == (64, 3 * 64 + 8, 3)


def test_absent_class_has_empty_mask(case):
    images, maps, _ = case
    _, mask = viewer.render(images, maps, 0, 1, predicted=np.array([[True, False], [True, True]]))
    assert not mask.any()


def test_widgets_redraw_on_change(case):
    images, maps, truth = case
    view = viewer.show(images, maps, predicted=np.ones((2, 2), bool), class_names=["rings", "fibers"],
                       truth=truth)
    first, first_mask = view.panels.value, view.mask.copy()
    assert first[:4] == b"\x89PNG" and "Dice" in view.info.value
    view.quantile.value = 0.95
    assert view.panels.value != first and view.mask.sum() < first_mask.sum()
    before = view.panels.value
    view.layer_choice.value = "2a"
    assert view.panels.value != before
    view.class_choice.value = 1
    assert view.info.value.startswith("fibers")
    assert "micranet-viewer-quantile" in view.quantile._dom_classes
    assert "micranet-viewer" in view.widget._dom_classes


def test_bad_shapes_are_refused(case):
    images, maps, _ = case
    with pytest.raises(ValueError, match="maps"):
        viewer.Viewer(images, maps[0])
    with pytest.raises(ValueError, match="quantile"):
        viewer.render(images, maps, quantile=1.5)


def test_static_figure(case):
    images, maps, truth = case
    figure = viewer.show_static(images, maps, truth=truth, class_name="rings")
    assert len(figure.axes) == 7
    from matplotlib import pyplot

    pyplot.close(figure)
