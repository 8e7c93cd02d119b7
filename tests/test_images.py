"""Reading user images: formats, stacks, channels, and every way a file can be broken."""

import sys

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from micranet_utils.base.errors import ImageError
from micranet_utils.io.images import check_channels, find_images, normalize_intensity, read_image


def _percentile(ordered, q):
    """The q-th percentile (0-100) of a sorted list, interpolating linearly between ranks
    (position q / 100 * (n - 1), the usual definition and NumPy's default)."""
    position = q / 100 * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (position - below) * (ordered[above] - ordered[below])


def reference_normalize(channel, low, high):
    """The stretch of one channel as normalize_intensity's docstring describes it, in plain Python:
    sort the values to find the `low` and `high` percentiles p_lo, p_hi; map ``(x - p_lo) / (p_hi - p_lo)``
    clipped to [0, 1]; a channel with p_lo == p_hi becomes 1 above p_lo and 0 elsewhere."""
    values = [float(v) for v in np.asarray(channel, np.float64).ravel()]
    ordered = sorted(values)
    lo, hi = _percentile(ordered, low), _percentile(ordered, high)
    if hi > lo:
        out = [min(max((v - lo) / (hi - lo), 0.0), 1.0) for v in values]
    else:
        out = [1.0 if v > lo else 0.0 for v in values]
    return np.array(out).reshape(np.shape(channel))


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.uint32, np.int32, np.float32, np.float64])
def test_tiff_of_every_dtype_reads_back_exactly(tmp_path, dtype):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    top = min(info.max, 2**24) if info else 1000.0
    data = (rng.random((20, 30)) * top).astype(dtype)
    tifffile.imwrite(tmp_path / "a.tif", data)
    image = read_image(tmp_path / "a.tif")
    assert image.dtype == np.float32 and image.shape == (1, 20, 30)
    np.testing.assert_array_equal(image[0], data.astype(np.float32))


def test_rgb_tiff_becomes_three_channels_first(tmp_path):
    rgb = np.arange(16 * 16 * 3, dtype=np.uint16).reshape(16, 16, 3)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    image = read_image(tmp_path / "rgb.tif")
    assert image.shape == (3, 16, 16)
    np.testing.assert_array_equal(image, np.moveaxis(rgb, -1, 0))


def test_rgba_tiff_drops_alpha(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 255, (16, 16, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    image = read_image(tmp_path / "rgba.tif")
    np.testing.assert_array_equal(image, np.moveaxis(rgba[..., :3], -1, 0))


def test_png_and_jpeg(tmp_path):
    imageio = pytest.importorskip("imageio.v3")
    gray = np.random.default_rng(2).integers(0, 255, (24, 32), dtype=np.uint8)
    rgba = np.random.default_rng(3).integers(0, 255, (24, 32, 4), dtype=np.uint8)
    imageio.imwrite(tmp_path / "g.png", gray)
    imageio.imwrite(tmp_path / "c.png", rgba)
    yy, xx = np.mgrid[:24, :32]
    smooth = np.stack([yy * 10, xx * 8, yy + xx], axis=-1).astype(np.uint8)   # JPEG keeps smooth images
    imageio.imwrite(tmp_path / "c.jpg", smooth)
    np.testing.assert_array_equal(read_image(tmp_path / "g.png")[0], gray)
    np.testing.assert_array_equal(read_image(tmp_path / "c.png"), np.moveaxis(rgba[..., :3], -1, 0))
    jpeg = read_image(tmp_path / "c.jpg")
    assert jpeg.shape == (3, 24, 32)
    assert np.abs(jpeg - np.moveaxis(smooth, -1, 0)).mean() < 5          # lossy, but the same picture


def test_16bit_png(tmp_path):
    imageio = pytest.importorskip("imageio.v3")
    data = np.random.default_rng(4).integers(0, 65535, (10, 12), dtype=np.uint16)
    imageio.imwrite(tmp_path / "deep.png", data)
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png")[0], data)


# ---------------------------------------------------------------- stacks and channels


def test_stack_without_a_choice_explains_the_options(tmp_path):
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 16, 16), np.uint8))
    with pytest.raises(ImageError, match=r"stack\.tif: image is a stack of 5 planes.*plane=k \(0\.\.4\).*max"):
        read_image(tmp_path / "stack.tif")


def test_stack_plane_and_projection(tmp_path):
    stack = np.random.default_rng(5).integers(0, 4000, (5, 16, 16), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    np.testing.assert_array_equal(read_image(tmp_path / "stack.tif", plane=3)[0], stack[3])
    np.testing.assert_array_equal(read_image(tmp_path / "stack.tif", projection="max")[0], stack.max(0))
    np.testing.assert_allclose(read_image(tmp_path / "stack.tif", projection="mean")[0], stack.mean(0), rtol=1e-6)
    with pytest.raises(ImageError, match="plane 7 requested but the image has 5 plane"):
        read_image(tmp_path / "stack.tif", plane=7)
    with pytest.raises(ImageError, match="either plane"):
        read_image(tmp_path / "stack.tif", plane=1, projection="max")
    with pytest.raises(ImageError, match="unknown projection 'median'"):
        read_image(tmp_path / "stack.tif", projection="median")


def test_pages_appended_one_by_one_form_a_stack(tmp_path):
    pages = np.random.default_rng(6).integers(0, 255, (3, 8, 8), dtype=np.uint8)
    for page in pages:
        tifffile.imwrite(tmp_path / "pages.tif", page, append=True)
    np.testing.assert_array_equal(read_image(tmp_path / "pages.tif", plane=2)[0], pages[2])


def test_ome_tiff_axes(tmp_path):
    data = np.random.default_rng(7).integers(0, 4000, (2, 3, 4, 16, 16), dtype=np.uint16)   # T C Z Y X
    tifffile.imwrite(tmp_path / "cell.ome.tif", data, metadata={"axes": "TCZYX"})
    image = read_image(tmp_path / "cell.ome.tif", plane=1 * 4 + 2)        # t=1, z=2 (k = t * nz + z)
    np.testing.assert_array_equal(image, data[1, :, 2])
    one = read_image(tmp_path / "cell.ome.tif", projection="max", channel=2)
    np.testing.assert_array_equal(one[0], data[:, 2].max(axis=(0, 1)))
    with pytest.raises(ImageError, match=r"8 planes \(T=2, Z=4\)"):
        read_image(tmp_path / "cell.ome.tif")


def test_imagej_hyperstack_channels(tmp_path):
    data = np.random.default_rng(8).integers(0, 255, (3, 2, 16, 16), dtype=np.uint8)   # Z C Y X
    tifffile.imwrite(tmp_path / "ij.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    np.testing.assert_array_equal(read_image(tmp_path / "ij.tif", plane=1), data[1])


def test_channel_choice_and_range(tmp_path):
    data = np.random.default_rng(9).random((3, 16, 16)).astype(np.float32)
    tifffile.imwrite(tmp_path / "c.tif", data, photometric="minisblack", metadata={"axes": "CYX"})
    np.testing.assert_array_equal(read_image(tmp_path / "c.tif", channel=1)[0], data[1])
    with pytest.raises(ImageError, match=r"channel 3 requested but the image has 3 channel"):
        read_image(tmp_path / "c.tif", channel=3)


# ---------------------------------------------------------------- broken files


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="nope.tif: file not found"):
        read_image(tmp_path / "nope.tif")


def test_empty_file(tmp_path):
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty.tif: file is empty \(0 bytes\)"):
        read_image(tmp_path / "empty.tif")


@pytest.mark.parametrize("name", ["notes.tif", "notes.png"])
def test_text_file_is_not_an_image(tmp_path, name):
    (tmp_path / name).write_text("sample, condition\n1, control\n")
    with pytest.raises(ImageError, match=rf"{name}: cannot read as an image"):
        read_image(tmp_path / name)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_truncated_tiff(tmp_path, compression):
    data = np.random.default_rng(10).integers(0, 65535, (256, 256), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "full.tif", data, compression=compression)
    raw = (tmp_path / "full.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageError, match="cut.tif: cannot read.*truncated"):
        read_image(tmp_path / "cut.tif")


def test_truncated_png(tmp_path):
    imageio = pytest.importorskip("imageio.v3")
    imageio.imwrite(tmp_path / "full.png", np.random.default_rng(11).integers(0, 255, (64, 64), dtype=np.uint8))
    raw = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageError, match="cut.png: cannot read"):
        read_image(tmp_path / "cut.png")


def test_nan_and_inf_pixels(tmp_path):
    data = np.ones((16, 16), np.float32)
    data[2, 3], data[4, 5] = np.nan, np.inf
    tifffile.imwrite(tmp_path / "nan.tif", data)
    with pytest.raises(ImageError, match=r"nan.tif: 2 pixel\(s\) are NaN or infinite"):
        read_image(tmp_path / "nan.tif")


def test_float64_beyond_float32_range_is_reported(tmp_path):
    tifffile.imwrite(tmp_path / "huge.tif", np.full((8, 8), 1e300))
    with pytest.raises(ImageError, match="NaN or infinite"):
        read_image(tmp_path / "huge.tif")


def test_zero_size_image(tmp_path):
    with pytest.warns(UserWarning, match="zero-size"):
        tifffile.imwrite(tmp_path / "zero.tif", np.zeros((0, 16), np.uint8))
    with pytest.raises(ImageError, match="zero.tif"):
        read_image(tmp_path / "zero.tif")


def test_too_small_for_the_crop(tmp_path):
    tifffile.imwrite(tmp_path / "small.tif", np.zeros((100, 300), np.uint8))
    with pytest.raises(ImageError, match=r"small.tif: image is 100x300 pixels, smaller than the 256x256"):
        read_image(tmp_path / "small.tif", min_size=256)
    assert read_image(tmp_path / "small.tif", min_size=100).shape == (1, 100, 300)


def test_vendor_format_without_bioio_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bioio", None)          # makes "import bioio" fail
    (tmp_path / "scan.czi").write_bytes(b"ZISRAWFILE" + b"\0" * 100)
    with pytest.raises(ImageError, match=r"scan.czi: reading .czi files needs.*pip install bioio bioio-czi"):
        read_image(tmp_path / "scan.czi")


def test_find_images_sorted_and_filtered(tmp_path):
    for name in ["b.tif", "a.PNG", ".hidden.tif", "notes.txt", "c.ome.tiff"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in find_images(tmp_path)] == ["a.PNG", "b.tif", "c.ome.tiff"]


def test_real_sample_images(upstream_samples):
    actin = read_image(upstream_samples / "actin" / "image0.tif", min_size=256)
    assert actin.shape == (1, 256, 256)
    pvivax = read_image(next((upstream_samples / "pvivax").glob("*.tif")))
    assert pvivax.shape == (3, 512, 512)                       # ImageJ CYX: channels, not a stack
    em = read_image(next((upstream_samples / "em").glob("*.tif")))
    assert em.shape == (1, 512, 512) and em.max() <= 255


# ---------------------------------------------------------------- normalisation and channel checks


def test_normalize_matches_plain_reference():
    rng = np.random.default_rng(12)
    image = np.stack([rng.normal(100, 20, (12, 10)), rng.integers(0, 4095, (12, 10)), np.full((12, 10), 7.0)])
    out = normalize_intensity(image, low=2, high=98)
    assert out.dtype == np.float32 and out.shape == image.shape
    for c in range(3):
        np.testing.assert_allclose(out[c], reference_normalize(image[c], 2, 98), atol=1e-6)
    assert np.all(out[2] == 0)                                   # constant channel: no division by zero
    default = normalize_intensity(image)                         # documented defaults: 1st and 99.8th
    for c in range(3):
        np.testing.assert_allclose(default[c], reference_normalize(image[c], 1, 99.8), atol=1e-6)


def test_normalize_sparse_image_keeps_bright_pixels():
    image = np.zeros((50, 50))
    image[3, 4] = 10                                             # fewer bright pixels than the 99.8th percentile
    out = normalize_intensity(image)
    assert out[3, 4] == 1 and out.sum() == 1


def test_normalize_rejects_bad_percentiles():
    with pytest.raises(ValueError, match="low < high"):
        normalize_intensity(np.zeros((4, 4)), low=50, high=10)


def test_check_channels_message():
    with pytest.raises(ImageError, match="^image.tif: image is 3-channel RGB; MICRA-Net for Actin expects 1 channel"):
        check_channels(np.zeros((3, 8, 8)), 1, "image.tif", "actin")
    with pytest.raises(ImageError, match="image is 1-channel; MICRA-Net for P. vivax expects 3 channels"):
        check_channels(np.zeros((1, 8, 8)), 3, "x.tif", "pvivax")
    same = np.zeros((1, 8, 8))
    assert check_channels(same, 1, "x.tif") is same


# ---------------------------------------------------------------- property tests

dtypes = st.sampled_from([np.uint8, np.uint16, np.int32, np.float32])


@settings(max_examples=25, deadline=None)
@given(data=st.data(), dtype=dtypes, channels=st.integers(1, 3))
def test_write_then_read_round_trip(tmp_path_factory, data, dtype, channels):
    shape = (channels, data.draw(st.integers(1, 20)), data.draw(st.integers(1, 20)))
    elements = (st.floats(-1e6, 1e6, width=32) if np.dtype(dtype).kind == "f"
                else st.integers(np.iinfo(dtype).min, min(np.iinfo(dtype).max, 2**24)))
    array = data.draw(hnp.arrays(dtype, shape, elements=elements))
    path = tmp_path_factory.mktemp("rt") / "x.tif"
    tifffile.imwrite(path, array, photometric="minisblack", metadata={"axes": "CYX"})
    image = read_image(path)
    np.testing.assert_array_equal(image, array.astype(np.float32))
    normalized = normalize_intensity(image)
    assert normalized.shape == image.shape
    assert np.all((normalized >= 0) & (normalized <= 1))
    # order within each channel is kept (ties allowed): normalisation is monotone
    for c in range(channels):
        order = np.argsort(image[c].ravel(), kind="stable")
        assert np.all(np.diff(normalized[c].ravel()[order]) >= 0)


@settings(max_examples=40, deadline=None)
@given(image=hnp.arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
                        elements=st.floats(-1e4, 1e4)),
       low=st.floats(0, 49), high=st.floats(51, 100))
def test_normalize_matches_reference_on_any_image(image, low, high):
    out = normalize_intensity(image, low=low, high=high)
    for c in range(image.shape[0]):
        np.testing.assert_allclose(out[c], reference_normalize(image[c].astype(np.float32), low, high), atol=1e-5)
