"""Streaming prediction: tile by tile, the same masks, labels and counts as the whole image."""

import json

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage
from skimage.filters import threshold_otsu

from micranet_utils.analysis.detection import count
from micranet_utils.analysis.recipes import get_recipe, segment
from micranet_utils.analysis.streaming import _otsu_level, exact_quantile, stream_segment, streamable
from micranet_utils.apps.predict import predict_folder
from micranet_utils.apps.stream_predict import predict_large, use_streaming
from micranet_utils.base.errors import ImageError, MicranetError
from micranet_utils.io.images import prepare_image
from micranet_utils.io.tiles import open_tiles, write_ome_zarr, write_tiff_tiles
from micranet_utils.io.zoo import save_zoo
from micranet_utils.model.gradcam import local_maps, predicted
from micranet_utils.model.network import MICRANet
from micranet_utils.model.tiled_gradcam import check_tiling

SETTINGS = {"normalize": True, "thresholds": 0.0, "strict": False}      # every class present


class ArrayReader:
    def __init__(self, array, fail_after=None):
        self.array, self.shape, self.path, self.reads, self.fail_after = array, array.shape, "array", 0, fail_after

    def read(self, y0, y1, x0, x1):
        self.reads += 1
        if self.fail_after is not None and self.reads > self.fail_after:
            raise KeyboardInterrupt("stopped")
        return self.array[:, y0:y1, x0:x1].astype(np.float32)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MICRANet(num_classes=2).eval()


def camera_image(height, width, seed=0):
    """16-bit-like blobs: whole numbers, so 'auto' rescales them by percentiles (streamed too)."""
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.random((height, width)), 4)
    image = (image - image.min()) / (image.max() - image.min())
    return np.round(image * 3000).astype(np.float32)[None]


@pytest.fixture(scope="module")
def whole(model):
    """Whole-image reference for two sizes (one not a multiple of 8)."""
    out = {}
    for size in ((160, 208), (203, 141)):
        image = camera_image(*size)
        prepared = prepare_image(image, "auto")
        maps, logits = local_maps(model, prepared[None])
        out[size] = image, prepared, maps, logits, predicted(logits, 0.0, strict=False)
    return out


@pytest.mark.parametrize("size,tile,recipe,overrides", [
    ((160, 208), 72, "actin", {}), ((203, 141), 96, "actin", {}),
    ((203, 141), 96, "actin", {"threshold": "otsu"}), ((160, 208), 72, "ctc", {})])
def test_streamed_masks_labels_and_counts_equal_the_whole_image(model, whole, tmp_path, size, tile, recipe,
                                                                 overrides):
    image, prepared, maps, logits, present = whole[size]
    reference = segment(maps, present, prepared[None], recipe, **overrides)[0]
    result, workspace = stream_segment(model, ArrayReader(image), recipe, SETTINGS, tmp_path, tile=tile,
                                       margin=32, **overrides)
    with workspace:
        masks = np.array(result.masks, bool)
        differing = int(np.count_nonzero(masks != reference))
        assert differing == 0, f"{differing} pixel(s) differ from the whole-image masks"
        assert reference.any(axis=(1, 2)).all()
        np.testing.assert_allclose(result.logits, logits[0], rtol=1e-5, atol=1e-7)   # max of tile activations
        np.testing.assert_array_equal(result.counts, count(reference[None])[0])
        np.testing.assert_array_equal(result.areas, reference.sum(axis=(1, 2)))
        for k, mask in enumerate(reference):
            expected, _ = ndimage.label(mask, structure=np.ones((3, 3)))
            np.testing.assert_array_equal(result.label_block(k, 0, size[0], 0, size[1]), expected)
        # objects cut by tile borders were merged: more tiles than objects would otherwise show
        assert len(result.relabel[0]) - 1 >= result.counts[0]
    assert list(tmp_path.iterdir()) == []                    # the temporary folder is gone


def test_counts_merge_objects_across_tile_borders(model, tmp_path):
    image = np.zeros((1, 144, 144), np.float32)
    image[0, 30:110, 30:110] = 1.0                         # one square across the 72-pixel tiles' cuts
    result, workspace = stream_segment(model, ArrayReader(image), "actin", SETTINGS, tmp_path, tile=72,
                                       margin=32, normalize="none", threshold="otsu")
    with workspace:
        masks = np.array(result.masks, bool)
        np.testing.assert_array_equal(result.counts, count(masks[None])[0])
        assert (result.counts <= [ndimage.label(m, np.ones((3, 3)))[1] for m in masks]).all()


def test_exact_quantile_is_numpys(tmp_path):
    rng = np.random.default_rng(1)
    for values in (rng.random(10_001).astype(np.float32), np.round(rng.random(5000) * 7).astype(np.float32),
                   rng.normal(size=777)):
        chunks = np.array_split(values, 7)
        for q in (0.8, 0.0, 1.0, 0.5, [0.01, 0.998]):
            expected = np.quantile(values, q)
            found = exact_quantile(lambda: iter(chunks), q)
            assert np.asarray(found).dtype == np.asarray(expected).dtype
            np.testing.assert_array_equal(found, expected)


def test_streamed_otsu_histogram_is_skimages():
    values = np.random.default_rng(2).random(3000).astype(np.float32) ** 3
    chunks = np.array_split(values, 5)
    assert _otsu_level(lambda: iter(chunks), values.min(), values.max()) == threshold_otsu(values)


@pytest.mark.parametrize("tile,margin,words", [(512, 16, "margin 16"), (48, 32, "tile 48")])
def test_tiles_or_margins_below_the_receptive_field_are_refused(tile, margin, words):
    with pytest.raises(MicranetError) as info:
        check_tiling(tile, margin)
    assert words in str(info.value) and "receptive field" in str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_recipes_that_are_not_streamed_say_so(model, tmp_path):
    assert streamable("actin") and streamable("ctc") and not streamable("em") and not streamable("mnist")
    with pytest.raises(MicranetError, match="not streamed"):
        stream_segment(model, ArrayReader(camera_image(64, 64)), "em", SETTINGS, tmp_path)


def test_an_interrupted_run_leaves_no_temporary_folder(model, tmp_path):
    reader = ArrayReader(camera_image(160, 160), fail_after=12)
    with pytest.raises(KeyboardInterrupt):
        stream_segment(model, reader, "actin", SETTINGS, tmp_path, tile=72)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_write_leaves_no_file_or_store_under_the_final_name(tmp_path):
    pytest.importorskip("zarr")                       # tiled TIFF and OME-Zarr are read through zarr
    def block(c, y0, y1, x0, x1):
        if y0 > 0:
            raise KeyboardInterrupt("stopped")
        return np.ones((y1 - y0, x1 - x0), np.uint8)

    for write, name in ((lambda p: write_tiff_tiles(p, (1, 600, 300), np.uint8, block), "masks.tif"),
                        (lambda p: write_ome_zarr(p, {"image": ((1, 600, 300), np.uint8, block)}), "m.ome.zarr")):
        with pytest.raises(KeyboardInterrupt):
            write(tmp_path / name)
        assert list(tmp_path.iterdir()) == []


def test_tiles_are_read_lazily_from_tiff_and_ome_zarr(tmp_path):
    pytest.importorskip("zarr")                       # tiled TIFF and OME-Zarr are read through zarr
    image = (np.random.default_rng(3).random((2, 90, 130)) * 60000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "plain.tif", image, metadata={"axes": "CYX"})
    tifffile.imwrite(tmp_path / "tiled.ome.tif", image, tile=(32, 32), compression="zlib", ome=True,
                     metadata={"axes": "CYX"})
    write_ome_zarr(tmp_path / "image.ome.zarr",
                   {"image": (image.shape, np.uint16, lambda c, y0, y1, x0, x1: image[c, y0:y1, x0:x1])})
    for name, kind in (("plain.tif", "tiff-memmap"), ("tiled.ome.tif", "tiff"), ("image.ome.zarr", "ome-zarr")):
        with open_tiles(tmp_path / name) as reader:
            assert reader.kind == kind and reader.shape == (2, 90, 130)
            np.testing.assert_array_equal(reader.read(10, 50, 20, 100), image[:, 10:50, 20:100])
        with open_tiles(tmp_path / name, channel=1) as reader:
            np.testing.assert_array_equal(reader.read(0, 90, 0, 130), image[1:])


def test_an_ome_zarr_without_y_and_x_axes_is_refused_in_one_line(tmp_path):
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(tmp_path / "bad.zarr"), mode="w", zarr_format=2)
    group.create_array("0", shape=(4, 4), dtype=np.uint8)
    group.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": "a"}, {"name": "b"}],
                                   "datasets": [{"path": "0"}]}]
    with pytest.raises(ImageError) as info:
        open_tiles(tmp_path / "bad.zarr")
    assert "bad.zarr" in str(info.value) and "axes" in str(info.value) and len(str(info.value).splitlines()) == 1


def test_predict_large_writes_masks_labels_and_counts_from_a_tiff_and_an_ome_zarr(model, whole, tmp_path):
    pytest.importorskip("zarr")                       # tiled TIFF and OME-Zarr are read through zarr
    image, prepared, maps, logits, present = whole[(203, 141)]
    reference = segment(maps, present, prepared[None], "actin")[0]
    tifffile.imwrite(tmp_path / "cells.tif", image[0].astype(np.uint16))
    write_ome_zarr(tmp_path / "cells.ome.zarr",
                   {"image": (image.shape, np.uint16, lambda c, y0, y1, x0, x1: image[c, y0:y1, x0:x1])})
    out = tmp_path / "out"
    record = predict_large(model, tmp_path / "cells.tif", out, get_recipe("actin"), settings=SETTINGS, tile=96)
    np.testing.assert_array_equal(tifffile.imread(out / "cells_masks.tif"), reference.astype(np.uint8) * 255)
    labels = tifffile.imread(out / "cells_labels.tif")
    for k, mask in enumerate(reference):
        np.testing.assert_array_equal(labels[k], ndimage.label(mask, np.ones((3, 3)))[0])
    assert record["count"] == count(reference[None])[0].tolist() and record["streamed"]
    assert json.loads((out / "cells_result.json").read_text())["area"] == reference.sum(axis=(1, 2)).tolist()
    assert sorted(p.name for p in out.iterdir()) == ["cells_labels.tif", "cells_masks.tif", "cells_result.json"]

    record = predict_large(model, tmp_path / "cells.ome.zarr", out, "actin", settings=SETTINGS, tile=96,
                           stem="zarr")
    with open_tiles(out / "zarr_masks.ome.zarr") as masks:
        np.testing.assert_array_equal(masks.read(0, 203, 0, 141), reference * 255.0)
    assert record["count"] == count(reference[None])[0].tolist()


def test_when_predict_streams(tmp_path):
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((64, 64), np.uint16))
    actin, em = get_recipe("actin"), get_recipe("em")
    assert use_streaming(tmp_path / "small.tif", actin, False, "always")
    assert not use_streaming(tmp_path / "small.tif", actin, False, "never")
    assert not use_streaming(tmp_path / "small.tif", actin, False, "auto")
    assert not use_streaming(tmp_path / "small.tif", em, False, "auto")
    with pytest.raises(MicranetError, match="not streamed"):
        use_streaming(tmp_path / "small.tif", em, False, "always")
    with pytest.raises(MicranetError, match="ensemble"):
        use_streaming(tmp_path / "small.tif", actin, True, "always")


def test_predict_folder_streams_to_the_same_masks_and_counts(model, tmp_path):
    with torch.no_grad():
        present = MICRANet(num_classes=2).eval()
        present.load_state_dict(model.state_dict())
        present.linear1.bias.fill_(5.0)                       # both classes present with p > 0.5
    zoo = save_zoo(tmp_path / "zoo.hdf5", present, {"size": 64})
    tifffile.imwrite(tmp_path / "in.tif", camera_image(160, 208)[0].astype(np.uint16))
    results = {}
    for stream in ("never", "always"):
        summary = predict_folder(zoo, tmp_path / "in.tif", tmp_path / stream, "actin", stream=stream,
                                 stream_tile=96, progress=False)
        assert summary["done"] == ["in.tif"]
        results[stream] = json.loads((tmp_path / stream / "in_result.json").read_text())
        results[stream]["masks"] = tifffile.imread(tmp_path / stream / "in_masks.tif")
    np.testing.assert_array_equal(results["always"]["masks"], results["never"]["masks"])
    assert results["always"]["count"] == results["never"]["count"] and results["always"]["streamed"]
    assert (tmp_path / "always" / "in_labels.tif").is_file()
    with pytest.raises(MicranetError, match="stream_tile|tile 64"):
        predict_folder(zoo, tmp_path / "in.tif", tmp_path / "bad", "actin", stream="always", stream_tile=64)
