"""Reading microscopy images from disk into the array the network expects.

Every reader in the package goes through :func:`read_image`, which returns a
``float32`` array of shape ``(C, H, W)`` whatever the file looked like:

* TIFF (8-, 16-, 32-bit integers, 16/32/64-bit floats), multi-page stacks,
  ImageJ hyperstacks and OME-TIFF, read with :mod:`tifffile`;
* PNG, JPEG, BMP and GIF, read with :mod:`imageio` (or scikit-image);
* vendor formats (``.czi``, ``.lif``, ``.nd2``) through the optional
  ``bioio`` package and its plugin for that format.

**How axes are understood.** The file's own axis names are used (tifffile's
series axes; ``TCZYX`` for bioio). ``Y`` and ``X`` are the image plane;
``C`` (channels) and ``S`` (colour samples, e.g. RGB) are channels; every
other axis (``Z`` focal planes, ``T`` time points, ``I``/``Q`` plain pages of
a multi-page TIFF, ...) is a *plane* axis. Axes of length one are ignored.
When there are several planes, they are numbered in file order (for a
``TZ`` stack, plane ``k = t * nz + z``) and the caller must choose one with
``plane=k`` or collapse them with ``projection="max"`` (or ``"mean"``):
guessing silently would train on the wrong focal plane. A colour image with
an alpha sample (RGBA, grey + alpha) loses its alpha.

**Intensities.** :func:`read_image` returns raw intensities, converted to
``float32`` but not rescaled. :func:`normalize_intensity` maps each channel to
``[0, 1]`` with per-image percentiles, the range the published data sets use.

**Alpha.** Only samples the file itself marks as transparency are dropped:
a PNG's ``LA`` / ``RGBA`` alpha, or a TIFF extra sample whose ExtraSamples
tag says associated (1) or unassociated (2) alpha. TIFF extra samples of
unspecified meaning (0) are data (a fourth fluorescence channel, say) and
stay channels that ``channel=`` can choose.

**Size.** The size a file declares is checked before its pixels are read:
more than :func:`~micranet_utils.io.limits.max_pixels` values (all planes and
channels together; 2**30 by default) is refused, so a few kilobytes of
compressed TIFF declaring 60000 x 60000 pixels cannot fill the memory. Raise
the limit with ``max_pixels=`` or the environment variable
``MICRANET_MAX_PIXELS``. PNG, JPEG, BMP and GIF are also bound by Pillow's
own ``PIL.Image.MAX_IMAGE_PIXELS`` (twice it is refused).
"""

import os
from pathlib import Path

import numpy as np

from ..base.errors import ImageError
from .limits import max_pixels as pixel_limit
from .limits import pixels_refused

TIFF_SUFFIXES = (".tif", ".tiff")
PLAIN_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
VENDOR_SUFFIXES = {".czi": "bioio-czi", ".lif": "bioio-lif", ".nd2": "bioio-nd2"}
IMAGE_SUFFIXES = TIFF_SUFFIXES + PLAIN_SUFFIXES + tuple(VENDOR_SUFFIXES)
"""tuple of str: file endings :func:`read_image` understands (lower case)."""

CHANNEL_AXES = "CS"
PROJECTIONS = {"max": np.max, "mean": np.mean}
_DISPLAY_NAMES = {"actin": "Actin", "ctc": "CTC", "em": "EM", "mnist": "MNIST", "pvivax": "P. vivax"}


def find_images(folder, recursive=False):
    """List the image files in `folder`, sorted by name (hidden files skipped).

    Parameters
    ----------
    folder : str or Path
        Folder to list.
    recursive : bool
        Also look into sub-folders.

    Returns
    -------
    list of Path
        Files whose ending is in :data:`IMAGE_SUFFIXES`, sorted so that every
        machine sees the same order.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: not a folder")
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    # Links are listed even when broken, so that the reader can say what is wrong with them.
    return sorted(p for p in candidates
                  if (p.is_file() or p.is_symlink()) and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path, channel=None, plane=None, projection=None, min_size=1, max_pixels=None):
    """Read one image file as a ``float32`` array of shape ``(C, H, W)``.

    Parameters
    ----------
    path : str or Path
        TIFF / OME-TIFF, PNG, JPEG, BMP, GIF, or CZI / LIF / ND2 (needs ``bioio``).
    channel : int, optional
        Keep only this channel (0-based); the result then has ``C = 1``.
    plane : int, optional
        For stacks (Z, T or plain multi-page): the plane to keep (0-based, in
        file order; see the module notes for several plane axes).
    projection : {"max", "mean"}, optional
        For stacks: collapse all planes instead of choosing one.
    min_size : int
        Smallest accepted height and width, in pixels (e.g. the crop size).
    max_pixels : int, optional
        Most pixel values the file may declare (all planes and channels);
        default ``$MICRANET_MAX_PIXELS`` or 2**30. Checked before reading.

    Returns
    -------
    ndarray of float32, shape (C, H, W)
        Raw intensities (not rescaled); RGB gives ``C = 3`` (alpha dropped).

    Raises
    ------
    ImageError
        Naming the file, when it is missing, empty, not an image, truncated,
        a stack without a choice of plane, has no pixels, has NaN or infinite
        pixels, is smaller than `min_size`, declares more than `max_pixels` values,
        or `channel` / `plane` is out of range.

    Examples
    --------
    >>> image = read_image("cell.tif")                        # doctest: +SKIP
    >>> image = read_image("stack.ome.tif", projection="max", channel=1)   # doctest: +SKIP
    """
    path = Path(path)
    if plane is not None and projection is not None:
        raise ImageError(f"{path}: give either plane={plane} or projection={projection!r}, not both")
    if projection is not None and projection not in PROJECTIONS:
        raise ImageError(f"{path}: unknown projection {projection!r}; use one of {', '.join(PROJECTIONS)}")
    if not path.exists():
        if path.is_symlink():
            try:
                path.resolve(strict=True)
            except RuntimeError:
                raise ImageError(f"{path}: symbolic link loop (the link points back to itself)") from None
            except OSError as err:
                if err.errno == 40:  # ELOOP
                    raise ImageError(f"{path}: symbolic link loop (the link points back to itself)") from None
            raise ImageError(f"{path}: broken link (it points to {os.readlink(path)}, which does not exist)")
        raise ImageError(f"{path}: file not found")
    if not path.is_file():
        raise ImageError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty (0 bytes)")
    array, axes, alpha = _read_array(path, pixel_limit(max_pixels))
    if array.size == 0:
        raise ImageError(f"{path}: image has no pixels (shape {array.shape})")
    stack = _to_planes(array, axes, path, alpha)                  # (P, C, H, W)
    image = _choose_plane(stack, axes, array.shape, plane, projection, path)
    if channel is not None:
        if not -image.shape[0] <= channel < image.shape[0]:
            raise ImageError(f"{path}: channel {channel} requested but the image has "
                             f"{image.shape[0]} channel(s) (0..{image.shape[0] - 1})")
        image = image[[channel]]
    image = _as_float32(image, path)
    bad = np.count_nonzero(~np.isfinite(image))
    if bad:
        raise ImageError(f"{path}: {bad} pixel(s) are NaN or infinite")
    height, width = image.shape[1:]
    if min(height, width) < min_size:
        raise ImageError(f"{path}: image is {height}x{width} pixels, smaller than the "
                         f"{min_size}x{min_size} minimum")
    return image


def _read_array(path, limit):
    """Raw array, its axis letters and the indices of its alpha samples, by file ending.

    Each reader checks the declared size against `limit` before reading pixels.
    """
    suffix = path.suffix.lower()
    try:
        if suffix in VENDOR_SUFFIXES:
            return _read_vendor(path, suffix, limit)
        if suffix in PLAIN_SUFFIXES:
            return _read_plain(path, limit)
        return _read_tiff(path, limit)
    except ImageError:
        raise
    except MemoryError:
        raise ImageError(f"{path}: image too large to fit in memory") from None
    except Exception as err:  # noqa: BLE001 - any reader failure means the file is unusable
        reason = str(err) or type(err).__name__
        raise ImageError(f"{path}: cannot read as an image; it may be truncated or not an "
                         f"image file ({reason})") from None


def _check_declared(path, shape, limit):
    """Refuse a file whose declared `shape` holds more than `limit` values, before reading it."""
    refused = pixels_refused(int(np.prod(shape, dtype=object)), limit,
                             " x ".join(str(int(n)) for n in shape) + " values")
    if refused:
        raise ImageError(f"{path}: {refused}")


def _read_tiff(path, limit):
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series
        if not series:
            raise ImageError(f"{path}: TIFF file holds no image")
        first = series[0]
        same = all(s.shape == first.shape and s.dtype == first.dtype for s in series)
        stack = len(series) > 1 and same and not tif.is_ome
        # Pages appended one by one (each its own series): a plain stack.
        _check_declared(path, ((len(series),) if stack else ()) + tuple(first.shape), limit)
        alpha = _tiff_alpha(first.pages[0] if first.pages else tif.pages[0], first)
        if stack:
            return np.stack([s.asarray() for s in series]), "I" + first.axes, alpha
        return first.asarray(), first.axes, alpha


def _tiff_alpha(page, series):
    """Indices, along the S axis, of the samples the TIFF's ExtraSamples tag marks as alpha (1 or 2)."""
    extra = tuple(int(kind) for kind in (getattr(page, "extrasamples", None) or ()))
    samples = int(getattr(page, "samplesperpixel", 1))
    axes = str(series.axes).upper()
    if not extra or "S" not in axes or series.shape[axes.index("S")] != samples:
        return ()
    first_extra = samples - len(extra)
    return tuple(first_extra + i for i, kind in enumerate(extra) if kind in (1, 2))


def _read_plain(path, limit):
    from PIL import Image

    try:
        with Image.open(path) as header:          # reads the header only
            width, height = header.size
            bands = header.getbands()
    except Image.DecompressionBombError as err:
        raise ImageError(f"{path}: {err} (Pillow's limit PIL.Image.MAX_IMAGE_PIXELS)") from None
    _check_declared(path, (height, width, len(bands)), limit)
    try:
        import imageio.v3 as iio

        array = np.asarray(iio.imread(path, plugin="pillow"))
    except ImportError:
        from skimage import io

        array = np.asarray(io.imread(path))
    alpha = ()
    if array.ndim >= 3 and "A" in bands and array.shape[-1] == len(bands):
        alpha = (bands.index("A"),)
    if array.ndim == 3:  # colour (H, W, S) or frames of a GIF (N, H, W)
        return array, "YXS" if array.shape[-1] <= 4 else "IYX", alpha
    return array, {2: "YX", 4: "IYXS"}.get(array.ndim, "?" * array.ndim), alpha


def _read_vendor(path, suffix, limit):
    try:
        from bioio import BioImage
    except ImportError:
        raise ImageError(f"{path}: reading {suffix} files needs the optional package 'bioio' and its "
                         f"plugin: pip install bioio {VENDOR_SUFFIXES[suffix]}") from None
    image = BioImage(path)
    _check_declared(path, tuple(image.shape), limit)
    return np.asarray(image.data), str(image.dims.order), ()


def _to_planes(array, axes, path, alpha=()):
    """Rearrange `array` (axis letters `axes`) to ``(planes, channels, H, W)``, without `alpha` samples."""
    axes = str(axes).upper()
    if len(axes) != array.ndim or "Y" not in axes or "X" not in axes:
        raise ImageError(f"{path}: cannot find the image plane (array shape {array.shape}, axes {axes!r})")
    if "S" in axes and alpha:
        # Transparency, as the file itself says: not signal.
        samples = array.shape[axes.index("S")]
        array = np.take(array, [i for i in range(samples) if i not in alpha], axis=axes.index("S"))
    plane_axes = [i for i, a in enumerate(axes) if a not in CHANNEL_AXES + "YX"]
    channel_axes = [i for i, a in enumerate(axes) if a in CHANNEL_AXES]
    order = plane_axes + channel_axes + [axes.index("Y"), axes.index("X")]
    moved = np.transpose(array, order)
    num_planes = int(np.prod([array.shape[i] for i in plane_axes], dtype=int))
    num_channels = int(np.prod([array.shape[i] for i in channel_axes], dtype=int))
    return moved.reshape(num_planes, num_channels, *moved.shape[-2:])


def _choose_plane(stack, axes, shape, plane, projection, path):
    """Pick or project the planes of a ``(P, C, H, W)`` stack to ``(C, H, W)``."""
    num_planes = stack.shape[0]
    if projection is not None:
        return PROJECTIONS[projection](stack, axis=0)
    if plane is None:
        if num_planes == 1:
            return stack[0]
        described = ", ".join(f"{a}={n}" for a, n in zip(str(axes).upper(), shape)
                              if a not in CHANNEL_AXES + "YX" and n > 1)
        raise ImageError(f"{path}: image is a stack of {num_planes} planes ({described}); choose one with "
                         f"plane=k (0..{num_planes - 1}) or collapse them with projection='max' "
                         f"(command line: --plane K or --projection max)")
    if not -num_planes <= plane < num_planes:
        raise ImageError(f"{path}: plane {plane} requested but the image has {num_planes} plane(s) "
                         f"(0..{num_planes - 1})")
    return stack[plane]


def _as_float32(image, path):
    if np.iscomplexobj(image):
        raise ImageError(f"{path}: image holds complex numbers; expected real intensities")
    if image.dtype.kind not in "biuf":
        raise ImageError(f"{path}: unsupported pixel type {image.dtype}")
    with np.errstate(over="ignore"):  # float64 beyond float32 range becomes inf, reported by the caller
        return np.ascontiguousarray(image, dtype=np.float32)


def normalize_intensity(image, low=1.0, high=99.8):
    """Map each channel to ``[0, 1]`` using its own percentiles.

    The published training data (Actin, ...) hold intensities already in
    ``[0, 1]``, and the network's augmentations (darken, gamma) assume that
    range. Microscopes write 8-, 12-, 16-bit or float values with very
    different offsets, so each image is rescaled on its own:
    ``(x - p_low) / (p_high - p_low)``, clipped to ``[0, 1]``. Using the 1st and
    99.8th percentiles rather than min and max keeps a few hot pixels from
    squashing the rest of the image to black.

    A channel whose two percentiles are equal (a constant image, or a sparse
    one where nearly every pixel has the same value) cannot be stretched;
    it becomes 1 where above that value and 0 elsewhere (all zeros when
    constant), with no division by zero.

    Parameters
    ----------
    image : ndarray, shape (C, H, W) or (H, W)
        Intensities of any real dtype.
    low, high : float
        Percentiles (0-100) mapped to 0 and 1; ``low < high``.

    Returns
    -------
    ndarray of float32, same shape as `image`, values in [0, 1]
    """
    if not 0 <= low < high <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100; got low={low}, high={high}")
    image = np.asarray(image, dtype=np.float32)
    if image.ndim not in (2, 3):
        raise ValueError(f"image must have shape (C, H, W) or (H, W); got {image.shape}")
    flat = image.reshape(-1, image.shape[-2] * image.shape[-1]).astype(np.float64)
    lows, highs = np.percentile(flat, [low, high], axis=1)
    out = np.empty_like(flat)
    for k, (lo, hi) in enumerate(zip(lows, highs)):
        if hi > lo:
            out[k] = np.clip((flat[k] - lo) / (hi - lo), 0.0, 1.0)
        else:
            out[k] = flat[k] > lo
    return out.reshape(image.shape).astype(np.float32)


def check_channels(image, expected, path, dataset_name=None):
    """Raise a clear :class:`ImageError` when `image` has the wrong number of channels.

    Parameters
    ----------
    image : ndarray, shape (C, H, W)
        As returned by :func:`read_image`.
    expected : int
        Channels the model takes (``DatasetInfo.in_channels``).
    path : str or Path
        File the image came from, for the message.
    dataset_name : str, optional
        Data set or model name for the message (``"actin"`` -> ``"Actin"``).

    Returns
    -------
    ndarray
        `image`, unchanged, so calls can be chained.

    Examples
    --------
    >>> check_channels(np.zeros((3, 8, 8)), 1, "image.tif", "actin")
    Traceback (most recent call last):
    ...
    micranet_utils.base.errors.ImageError: image.tif: image is 3-channel RGB; MICRA-Net for Actin expects 1 channel; choose one with channel=k (command line: --channel K)
    """
    found = image.shape[0]
    if found == expected:
        return image
    kind = f"{found}-channel" + (" RGB" if found == 3 else "")
    model = "MICRA-Net"
    if dataset_name:
        model += f" for {_DISPLAY_NAMES.get(str(dataset_name).lower(), dataset_name)}"
    message = f"{path}: image is {kind}; {model} expects {expected} channel{'s' if expected != 1 else ''}"
    if expected == 1 and found > 1:
        message += "; choose one with channel=k (command line: --channel K)"
    raise ImageError(message)


NORMALIZE_CHOICES = ("auto", "percentile", "none")


def prepare_image(image, mode="auto"):
    """Scale intensities as the model expects (see the module notes).

    Parameters
    ----------
    image : ndarray of float32, shape (C, H, W)
        As read by :func:`micranet_utils.io.images.read_image`.
    mode : {"auto", "percentile", "none"}

    Returns
    -------
    ndarray of float32, shape (C, H, W)

    Notes
    -----
    EM differs from the original here. The original EM reader divides the 8-bit
    images by 255; ``"auto"`` rescales them between their 1st and 99.8th
    percentiles, like any whole-number image. Measured on the two EM samples of
    the original repository (uint8, 1 to 254; percentiles 1 to 242 and 10 to
    244): at most 0.051 apart (mean 0.020 to 0.028), correlation above 0.9999,
    and, through ``micranet predict --recipe em`` with a fixed network, masks
    with an IoU of 0.96 and 1.00 and probabilities within 0.001. The gap grows
    when an image uses a narrow part of the 8-bit range, which percentiles
    stretch to [0, 1] and a division by 255 does not. To feed the published EM
    model exactly what it was trained on, save the images as float32 divided
    by 255 and use ``mode="none"`` (``--normalize none``).
    """
    if mode not in NORMALIZE_CHOICES:
        raise ImageError(f"normalize must be one of {', '.join(NORMALIZE_CHOICES)}; got {mode!r}")
    whole_numbers = bool(np.all(image == np.round(image))) and image.max() > 1
    if mode == "percentile" or (mode == "auto" and whole_numbers):
        return normalize_intensity(image)
    return np.asarray(image, np.float32)


def display_rgb(image):
    """An image ready to show: (channels, H, W) -> (H, W, 3) in [0, 1].

    Each channel is stretched between its 1st and 99.8th percentiles; one
    channel (or the first of 2, 4, ...) is shown grey, three as RGB.
    """
    low, high = np.percentile(image, [1, 99.8], axis=(1, 2), keepdims=True)
    shown = np.clip((image - low) / np.maximum(high - low, 1e-12), 0, 1)
    rgb = shown if len(shown) == 3 else np.repeat(shown[:1], 3, axis=0)
    return np.moveaxis(rgb, 0, -1)
