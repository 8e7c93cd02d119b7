"""Images too large for memory: read them a tile at a time, write results a tile at a time.

:func:`open_tiles` opens an image without reading its pixels and returns a
:class:`TileReader`, whose :meth:`~TileReader.read` gives any rectangle as
``float32`` (C, h, w), the layout :func:`micranet_utils.io.images.read_image` gives
for the whole image:

* **TIFF, BigTIFF and OME-TIFF** (``.tif``, ``.tiff``): an uncompressed,
  contiguous image is memory-mapped (:func:`tifffile.memmap`); a tiled or
  compressed one is read through tifffile's zarr store (``aszarr``), which
  decodes only the tiles or strips a rectangle touches;
* **OME-Zarr** (a ``.zarr`` folder): the full-resolution array of the first
  multiscale image, its axes from the ``multiscales`` metadata (versions 0.4
  and 0.5); a store without axes named ``y`` and ``x`` is refused;
* anything else (PNG, JPEG, vendor formats): read whole by ``read_image``.

Axes other than the plane and the channels (Z, T, ...) need ``plane=k``, as for
``read_image``; projections are not streamed.

:func:`write_tiff_tiles` and :func:`write_ome_zarr` write a (C, H, W) result
whose pixels come from a function of a rectangle, one tile at a time, under a
temporary name renamed at the end: an interrupted run leaves no file or store
under the final name.
"""

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..base.errors import ImageError
from .images import CHANNEL_AXES, TIFF_SUFFIXES, read_image

__all__ = ["TileReader", "open_tiles", "write_tiff_tiles", "write_ome_zarr", "OUTPUT_TILE"]

OUTPUT_TILE = 256
"""int: side of the tiles of the written TIFF files and zarr chunks."""


class TileReader:
    """Rectangles of one image plane, read on demand.

    Attributes
    ----------
    path : Path
    shape : tuple of int
        (channels, height, width) after the choice of channel.
    dtype : numpy.dtype
        Type of the stored pixels (before conversion to float32).
    kind : str
        ``"tiff"``, ``"tiff-memmap"``, ``"ome-zarr"`` or ``"memory"``.
    """

    def __init__(self, path, array, axes, kind, channel=None, plane=None, closer=None):
        self.path, self.kind, self._closer = Path(path), kind, closer
        axes = str(axes).upper()
        if "Y" not in axes or "X" not in axes or len(axes) != array.ndim:
            raise ImageError(f"{path}: cannot find the image plane (shape {tuple(array.shape)}, axes {axes!r})")
        index, channel_axis = [], None
        for i, name in enumerate(axes):
            size = array.shape[i]
            if name in "YX":
                index.append(slice(None))
            elif name in CHANNEL_AXES and channel_axis is None:
                channel_axis = i
                index.append(slice(None))
            elif size == 1:
                index.append(0)
            elif plane is None:
                raise ImageError(f"{path}: image has {size} planes along axis {name}; choose one with plane=k "
                                 f"(command line: --plane K); projections are not streamed")
            elif not 0 <= plane < size:
                raise ImageError(f"{path}: plane {plane} requested but axis {name} has {size} (0..{size - 1})")
            else:
                index.append(int(plane))
        kept = [a for a, i in zip(axes, index) if isinstance(i, slice)]
        self._array, self._index = array, index
        self._order = [kept.index(a) for a in ([axes[channel_axis]] if channel_axis is not None else []) + ["Y", "X"]]
        channels = array.shape[channel_axis] if channel_axis is not None else 1
        self._has_channels = channel_axis is not None
        if channel is not None and not 0 <= channel < channels:
            raise ImageError(f"{path}: channel {channel} requested but the image has {channels} channel(s) "
                             f"(0..{channels - 1})")
        self._channel = channel
        self.dtype = np.dtype(array.dtype)
        if self.dtype.kind not in "biuf":
            raise ImageError(f"{path}: unsupported pixel type {self.dtype}")
        self.shape = (1 if channel is not None else channels, array.shape[axes.index("Y")],
                      array.shape[axes.index("X")])

    def read(self, y0, y1, x0, x1):
        """Pixels of rows y0:y1 and columns x0:x1 as float32 (C, y1 - y0, x1 - x0)."""
        index = list(self._index)
        kept = [i for i, s in enumerate(index) if isinstance(s, slice)]
        y_axis, x_axis = kept[self._order[-2]], kept[self._order[-1]]
        index[y_axis], index[x_axis] = slice(y0, y1), slice(x0, x1)
        block = np.asarray(self._array[tuple(index)])
        block = np.transpose(block, self._order)
        if not self._has_channels:
            block = block[None]
        if self._channel is not None:
            block = block[[self._channel]]
        with np.errstate(over="ignore"):
            block = np.ascontiguousarray(block, dtype=np.float32)
        if not np.isfinite(block).all():
            raise ImageError(f"{self.path}: {np.count_nonzero(~np.isfinite(block))} pixel(s) in rows {y0}-{y1}, "
                             f"columns {x0}-{x1} are NaN or infinite")
        return block

    def close(self):
        if self._closer is not None:
            self._closer()
            self._closer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _ome_zarr_axes(path, attrs):
    """(dataset path, axis letters) of the first multiscale image of an OME-Zarr group's attributes."""
    meta = attrs.get("ome", attrs)                              # 0.5 nests under "ome"
    scales = meta.get("multiscales")
    if not scales or not isinstance(scales, list):
        raise ImageError(f"{path}: not an OME-Zarr image (no 'multiscales' metadata)")
    first = scales[0]
    axes = first.get("axes")
    if not axes:
        raise ImageError(f"{path}: OME-Zarr store lacks the expected axes (no 'axes' in multiscales; "
                         "expected names such as t, c, z, y, x)")
    names = [(a.get("name") if isinstance(a, dict) else str(a)) or "" for a in axes]
    letters = "".join({"c": "C"}.get(n.lower(), n.upper()[:1] or "?") for n in names)
    if "Y" not in letters or "X" not in letters:
        raise ImageError(f"{path}: OME-Zarr store lacks the expected axes y and x (found {names})")
    datasets = first.get("datasets") or [{"path": "0"}]
    return str(datasets[0]["path"]), letters


def open_tiles(path, channel=None, plane=None):
    """Open an image for reading rectangles (see the module notes).

    Parameters
    ----------
    path : str or Path
        TIFF / OME-TIFF file, OME-Zarr folder, or any file :func:`read_image` reads.
    channel, plane : int, optional
        As in :func:`micranet_utils.io.images.read_image` (0-based).

    Returns
    -------
    TileReader
        Close it (or use it in a ``with`` block) when done.

    Raises
    ------
    ImageError
        Naming the file: missing, unreadable, no y/x axes, planes without a choice.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: file not found")
    if path.is_dir():
        try:
            import zarr
            group = zarr.open_group(str(path), mode="r")
        except ImportError:
            raise ImageError(f"{path}: reading OME-Zarr needs the package 'zarr' (pip install zarr)") from None
        except Exception as err:  # noqa: BLE001 - any failure means not a zarr group
            raise ImageError(f"{path}: not an OME-Zarr store ({type(err).__name__}: {err})") from None
        dataset, axes = _ome_zarr_axes(path, dict(group.attrs))
        return TileReader(path, group[dataset], axes, "ome-zarr", channel, plane)
    if path.suffix.lower() in TIFF_SUFFIXES:
        import tifffile

        try:
            tif = tifffile.TiffFile(path)
        except Exception as err:  # noqa: BLE001
            raise ImageError(f"{path}: cannot read as a TIFF image ({type(err).__name__}: {err})") from None
        try:
            series = tif.series[0]
            axes = series.axes
            if series.dataoffset is not None:
                array = tifffile.memmap(path, mode="r", series=0)
                tif.close()
                return TileReader(path, array, axes, "tiff-memmap", channel, plane)
            import zarr

            array = zarr.open_array(series.aszarr(level=0), mode="r")
            return TileReader(path, array, axes, "tiff", channel, plane, closer=tif.close)
        except ImageError:
            tif.close()
            raise
        except Exception as err:  # noqa: BLE001
            tif.close()
            raise ImageError(f"{path}: cannot read tiles ({type(err).__name__}: {err})") from None
    image = read_image(path, channel=channel, plane=plane)
    return TileReader(path, image, "CYX", "memory")


def _atomic_dir(path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))


def _replace_dir(tmp, path):
    path = Path(path)
    if path.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
        os.replace(path, old / "store")
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def write_tiff_tiles(path, shape, dtype, block, *, pixel_size=None, tile=OUTPUT_TILE):
    """Write a (C, H, W) image as a tiled BigTIFF (ImageJ-readable axes CYX), tile by tile.

    Parameters
    ----------
    path : str or Path
    shape : tuple (C, H, W)
    dtype : numpy dtype
    block : callable
        ``block(c, y0, y1, x0, x1)`` -> array (y1 - y0, x1 - x0) of `dtype`.
    pixel_size : float, optional
        Micrometres per pixel, written as resolution tags.
    """
    import tifffile

    channels, height, width = shape

    def tiles():
        for c in range(channels):
            for y in range(0, height, tile):
                for x in range(0, width, tile):
                    part = np.zeros((tile, tile), dtype)
                    data = block(c, y, min(y + tile, height), x, min(x + tile, width))
                    part[:data.shape[0], :data.shape[1]] = data
                    yield part

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        extra = {}
        if pixel_size:
            extra = dict(resolution=(1.0 / pixel_size, 1.0 / pixel_size), resolutionunit="MICROMETER")
        tifffile.imwrite(tmp, tiles(), shape=(channels, height, width), dtype=dtype, tile=(tile, tile),
                         bigtiff=True, photometric="minisblack", metadata={"axes": "CYX"}, **extra)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def write_ome_zarr(path, layers, *, pixel_size=None, tile=OUTPUT_TILE):
    """Write an OME-Zarr (NGFF 0.4, zarr format 2) image with a label image, tile by tile.

    Parameters
    ----------
    path : str or Path
        The store (a folder, usually ``*.ome.zarr``), replaced as a whole at the end.
    layers : dict
        ``{"image": (shape, dtype, block), "labels/<name>": (shape, dtype, block)}``
        with `block` as in :func:`write_tiff_tiles`; the image first.
    pixel_size : float, optional
        Micrometres per pixel (the scale of y and x).
    """
    import zarr

    tmp = _atomic_dir(path)
    try:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        scale = [1.0, float(pixel_size or 1.0), float(pixel_size or 1.0)]
        axes = [{"name": "c", "type": "channel"}, {"name": "y", "type": "space", "unit": "micrometer"},
                {"name": "x", "type": "space", "unit": "micrometer"}]
        labels = []
        for key, (shape, dtype, block) in layers.items():
            group = root if key == "image" else root.require_group(key)
            if key != "image":
                labels.append(key.split("/", 1)[1])
            array = group.create_array("0", shape=tuple(shape), dtype=dtype, chunks=(1, tile, tile),
                                       fill_value=0)
            for c in range(shape[0]):
                for y in range(0, shape[1], tile):
                    for x in range(0, shape[2], tile):
                        y1, x1 = min(y + tile, shape[1]), min(x + tile, shape[2])
                        array[c, y:y1, x:x1] = block(c, y, y1, x, x1)
            meta = {"version": "0.4", "axes": axes, "name": key,
                    "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}]}
            group.attrs["multiscales"] = [meta]
            if key != "image":
                group.attrs["image-label"] = {"version": "0.4", "source": {"image": "../../"}}
        if labels:
            root.require_group("labels").attrs["labels"] = labels
        _replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Path(path)

