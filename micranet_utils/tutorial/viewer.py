"""Look at Grad-CAM maps and masks interactively, or as a static figure.

:class:`Viewer` (or :func:`show`) shows, side by side, the image, the map of
one layer (or the combined PCA7 map) for one class, and the image with the
mask in colour (and the true outline, when given). Sliders change the
threshold quantile and the smoothing sigma; drop-downs choose the image, the
class and the layer. Only the core ``ipywidgets`` are used, so it works in
JupyterLab, Binder and Colab; the three panels are drawn as one PNG with NumPy
and Matplotlib colour maps (no figure), so an update takes milliseconds.

The viewer explores the *quantile* rule (the Actin recipe, and the percentile
slider of the original app) on the combined map of the chosen recipe: its
gate, normalisation and smoothing, then ``map > quantile``. The recipes with
other thresholds (CTC, EM, P. vivax, MNIST) are best checked with
:func:`micranet_utils.analysis.recipes.segment` and :func:`show_static`.

Widgets carry stable CSS classes (``micranet-viewer``, ``micranet-viewer-quantile``,
``-sigma``, ``-class``, ``-layer``, ``-image``, ``-panels``, ``-info``) for browser tests.
"""

import io

import numpy as np
from scipy import ndimage

from ..analysis.metrics import dice
from ..analysis.recipes import combined_map, get_recipe
from ..io.images import display_rgb
from ..model.network import LAYERS


COMBINED = "combined (PCA7)"
MASK_COLOR = np.array([1.0, 0.3, 0.2])
TRUTH_COLOR = np.array([0.2, 1.0, 1.0])


def _as_array(array, dtype=np.float32):
    if array is None:
        return None
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array, dtype)


def _outline(mask):
    return mask & ~ndimage.binary_erosion(mask)


class _Scores:
    """Combined (unsmoothed) maps per image and class, computed once and reused."""

    def __init__(self, maps, images, recipe):
        self.maps, self.images, self.recipe = maps, images, get_recipe(recipe, sigma=0.0)
        self.cache = {}

    def __call__(self, index, class_index):
        key = (index, class_index)
        if key not in self.cache:
            image = None if self.images is None else self.images[index]
            self.cache[key] = combined_map(self.maps[index, class_index], image, self.recipe)
        return self.cache[key]


def render(images, maps, index=0, class_index=0, layer=COMBINED, quantile=0.8, sigma=1.0,
           recipe="actin", truth=None, predicted=None, scores=None):
    """The three panels as one RGB array, and what they show.

    Parameters
    ----------
    images : ndarray, shape (B, channels, H, W)
    maps : ndarray, shape (B, C, 8, H, W)
    index, class_index : int
        Image and class shown.
    layer : str
        One of ``LAYERS`` ("1a" ... "4b") or ``"combined (PCA7)"``.
    quantile : float in (0, 1)
        Pixels of the smoothed combined map above this quantile form the mask.
    sigma : float
        Gaussian smoothing of the combined map, pixels.
    recipe : str or Recipe
        Gate and normalisation of the combined map.
    truth : ndarray of bool, shape (B, C, H, W), optional
        True masks, outlined in cyan.
    predicted : ndarray of bool, shape (B, C), optional
        Classes predicted present; an absent class gets an empty mask.
    scores : callable, optional
        Cache of combined maps (used by :class:`Viewer`).

    Returns
    -------
    panels : ndarray of float32, shape (H, 3 W + 8, 3)
        Image | map (magma colours) | image with mask (red) and truth outline (cyan).
    mask : ndarray of bool, shape (H, W)
    """
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be between 0 and 1; got {quantile}")
    scores = scores or _Scores(maps, images, recipe)
    combined = scores(index, class_index)
    height, width = maps.shape[-2:]
    if combined is None or (predicted is not None and not predicted[index, class_index]):
        smooth, mask = np.zeros((height, width)), np.zeros((height, width), bool)
    else:
        smooth = ndimage.gaussian_filter(combined, sigma, mode="nearest") if sigma > 0 else combined
        mask = smooth > np.quantile(smooth, quantile)
    from matplotlib import colormaps

    shown = smooth if layer == COMBINED else maps[index, class_index, LAYERS.index(layer)]
    low, high = np.min(shown), np.max(shown)
    coloured = colormaps["magma"]((shown - low) / (high - low if high > low else 1.0))[..., :3]
    grey = display_rgb(images[index])
    overlay = grey.copy()
    overlay[mask] = 0.5 * overlay[mask] + 0.5 * MASK_COLOR
    if truth is not None:
        overlay[_outline(truth[index, class_index])] = TRUTH_COLOR
    gap = np.ones((height, 4, 3))
    return np.concatenate([grey, gap, coloured, gap, overlay], axis=1).astype(np.float32), mask


def _png(rgb):
    from matplotlib import pyplot

    buffer = io.BytesIO()
    pyplot.imsave(buffer, np.clip(rgb, 0, 1), format="png")
    return buffer.getvalue()


class Viewer:
    """Interactive viewer of maps and masks (ipywidgets); display it in a notebook cell.

    Parameters
    ----------
    images : ndarray or Tensor, shape (B, channels, H, W)
    maps : ndarray or Tensor, shape (B, C, 8, H, W)
    predicted : array_like of bool, shape (B, C), optional
    class_names : sequence of str, optional
    recipe : str or Recipe
        Gate and normalisation of the combined map (default ``"actin"``).
    truth : ndarray of bool, shape (B, C, H, W), optional
    quantile, sigma : float
        Starting slider values.

    Attributes
    ----------
    widget : ipywidgets.VBox
        The whole viewer; ``quantile``, ``sigma``, ``class_choice``,
        ``layer_choice``, ``image_choice``, ``panels``, ``info`` are its parts.
    """

    def __init__(self, images, maps, predicted=None, class_names=None, recipe="actin", truth=None,
                 quantile=0.8, sigma=1.0):
        import ipywidgets as widgets

        self.images, self.maps = _as_array(images), _as_array(maps)
        if self.maps.ndim != 5 or self.images.ndim != 4 or self.images.shape[0] != self.maps.shape[0]:
            raise ValueError(f"need images (B, channels, H, W) and maps (B, C, 8, H, W); "
                             f"got {self.images.shape} and {self.maps.shape}")
        self.predicted = None if predicted is None else np.asarray(predicted, bool)
        self.truth = None if truth is None else np.asarray(truth, bool)
        count = self.maps.shape[1]
        self.class_names = list(class_names) if class_names is not None else [f"class {c}" for c in range(count)]
        self.recipe = get_recipe(recipe)
        self._scores = _Scores(self.maps, self.images, self.recipe)
        style = {"description_width": "initial"}
        self.quantile = widgets.FloatSlider(value=quantile, min=0.5, max=0.99, step=0.01,
                                            description="threshold quantile", style=style,
                                            continuous_update=False)
        self.sigma = widgets.FloatSlider(value=sigma, min=0.0, max=5.0, step=0.25, description="sigma (px)",
                                         style=style, continuous_update=False)
        self.class_choice = widgets.Dropdown(options=[(n, c) for c, n in enumerate(self.class_names)],
                                             value=0, description="class")
        self.layer_choice = widgets.Dropdown(options=[COMBINED] + list(LAYERS), value=COMBINED,
                                             description="map")
        self.image_choice = widgets.Dropdown(options=list(range(len(self.images))), value=0,
                                             description="image")
        self.panels = widgets.Image(format="png")
        self.info = widgets.HTML()
        parts = {"quantile": self.quantile, "sigma": self.sigma, "class": self.class_choice,
                 "layer": self.layer_choice, "image": self.image_choice, "panels": self.panels,
                 "info": self.info}
        for name, part in parts.items():
            part.add_class(f"micranet-viewer-{name}")
            if name not in ("panels", "info"):
                part.observe(self.update, names="value")
        title = widgets.HTML("<b>image</b> &nbsp;|&nbsp; <b>map</b> &nbsp;|&nbsp; "
                             "<b>mask</b> (red) and truth outline (cyan)")
        self.widget = widgets.VBox([
            widgets.HBox([self.quantile, self.sigma]),
            widgets.HBox([self.image_choice, self.class_choice, self.layer_choice]),
            title, self.panels, self.info])
        self.widget.add_class("micranet-viewer")
        self.mask = None
        self.update()

    def update(self, *_):
        """Redraw the panels from the current widget values."""
        index, class_index = self.image_choice.value, self.class_choice.value
        rgb, self.mask = render(self.images, self.maps, index, class_index, self.layer_choice.value,
                                self.quantile.value, self.sigma.value, self.recipe, self.truth,
                                self.predicted, self._scores)
        self.panels.value = _png(rgb)
        present = "" if self.predicted is None else \
            (" predicted present;" if self.predicted[index, class_index] else " predicted absent (empty mask);")
        text = f"{self.class_names[class_index]}:{present} mask {100 * self.mask.mean():.1f} % of the image"
        if self.truth is not None:

            text += f"; Dice with the truth {dice(self.mask, self.truth[index, class_index]):.2f}"
        self.info.value = text

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def show(images, maps, predicted=None, class_names=None, recipe="actin", truth=None, **start):
    """Build a :class:`Viewer` (display it by leaving it last in a cell). See :class:`Viewer`."""
    return Viewer(images, maps, predicted, class_names, recipe, truth, **start)


def show_static(images, maps, index=0, class_index=0, layers=("1a", "2b", "3b", "4b"), quantile=0.8,
                sigma=1.0, recipe="actin", truth=None, predicted=None, class_name=None):
    """A Matplotlib figure of what the viewer shows, for reports and headless runs.

    Draws the image, the chosen `layers` and the combined map of one class,
    and the mask (red) with the true outline (cyan). Parameters as in :func:`render`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib import pyplot

    images, maps = _as_array(images), _as_array(maps)
    scores = _Scores(maps, images, recipe)
    panels, mask = render(images, maps, index, class_index, COMBINED, quantile, sigma, recipe, truth,
                          predicted, scores)
    width = maps.shape[-1]
    figure, axes = pyplot.subplots(1, len(layers) + 3, figsize=(2.6 * (len(layers) + 3), 2.9))
    axes[0].imshow(panels[:, :width])
    axes[0].set_title(f"image {index}")
    for axis, layer in zip(axes[1:], layers):
        axis.imshow(maps[index, class_index, LAYERS.index(layer)], cmap="magma")
        axis.set_title(f"layer {layer}")
    axes[-2].imshow(panels[:, width + 4:2 * width + 4])
    axes[-2].set_title(f"combined, sigma {sigma:g}")
    axes[-1].imshow(panels[:, 2 * width + 8:])
    axes[-1].set_title(f"{class_name or f'class {class_index}'}: mask > q{quantile:g}")
    for axis in axes:
        axis.set_axis_off()
    figure.tight_layout()
    return figure
