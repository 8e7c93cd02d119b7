"""local_maps against a plain per-image reference, and its promises about the model."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from micranet_utils.model.exported_maps import MicranetMaps
from micranet_utils.model.network import MICRANet
from micranet_utils.base.errors import ImageError, MicranetError
from micranet_utils.model.gradcam import (
    fast_engine_refusal, layer_names, LAYER_STRIDES, local_maps, original_settings, predicted, sequential_view)
from model_helpers import randomise_batchnorm
from reference_gradcam import reference_local_maps

ATOL = 1e-5


def demo_like_images(n, height, width, seed=0):
    """Dark background, a few bright blurred rings and lines: microscopy-like, float32 (n, 1, H, W)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    images = np.zeros((n, 1, height, width), np.float32)
    for image in images[:, 0]:
        for _ in range(3):
            cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(4, 12)
            image += np.exp(-((np.hypot(yy - cy, xx - cx) - r) ** 2) / 4)
        for _ in range(2):
            angle, offset = rng.uniform(0, np.pi), rng.uniform(-height / 3, height / 3)
            distance = (yy - height / 2) * np.cos(angle) - (xx - width / 2) * np.sin(angle) - offset
            image += 0.7 * np.exp(-distance ** 2 / 3)
        image[:] = ndimage.gaussian_filter(image, 1) + 0.05 * rng.standard_normal(image.shape)
    return images


def assert_matches_reference(model, images, **kwargs):
    maps, logits = local_maps(model, images, **kwargs)
    kwargs.pop("chunk_size", None)
    kwargs.pop("engine", None)
    expected_maps, expected_logits = reference_local_maps(model, images, **kwargs)
    assert maps.dtype == np.float32 and logits.dtype == np.float32
    assert maps.shape == expected_maps.shape
    np.testing.assert_allclose(logits, expected_logits, atol=ATOL, rtol=0)
    np.testing.assert_allclose(maps, expected_maps, atol=ATOL, rtol=0)
    return maps, logits


def test_maps_match_reference_on_random_images(random_model):
    images = np.random.default_rng(1).standard_normal((3, 1, 64, 64)).astype(np.float32)
    maps, _ = assert_matches_reference(random_model, images, chunk_size=2)
    assert maps.shape == (3, 2, 8, 64, 64)
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6


def test_maps_match_reference_on_demo_like_images(random_model):
    images = demo_like_images(1, 256, 256)
    maps, _ = assert_matches_reference(random_model, images)
    # every normalised map starts at exactly 0 and stays below 1
    np.testing.assert_array_equal(maps.min(axis=(-1, -2)), 0)
    assert maps.max() <= 1


def test_real_actin_sample_matches_reference(random_model, upstream_samples):
    tifffile = pytest.importorskip("tifffile")
    image = tifffile.imread(sorted((upstream_samples / "actin").glob("*.tif"))[0]).astype(np.float32)
    crop = image[:256, :256] / max(float(image.max()), 1.0)
    assert_matches_reference(random_model, crop[None, None])


def test_batch_of_one_and_channel_axis_optional(random_model):
    images = demo_like_images(1, 48, 48)
    with_axis, logits = assert_matches_reference(random_model, images)
    without_axis, logits2 = local_maps(random_model, images[:, 0])
    np.testing.assert_array_equal(with_axis, without_axis)
    np.testing.assert_array_equal(logits, logits2)


@pytest.mark.parametrize("size", [(250, 333), (61, 77), (8, 8), (40, 9), (256, 200)])
def test_sizes_not_multiple_of_8(random_model, size):
    images = demo_like_images(1, *size)
    maps, _ = assert_matches_reference(random_model, images)
    assert maps.shape[-2:] == size


def test_odd_size_pads_with_the_last_cell(random_model):
    maps, _ = local_maps(random_model, demo_like_images(1, 250, 333))
    # layer 4b (stride 8): 31 x 41 cells cover 248 x 328 pixels; the rest repeats the edge
    deepest = maps[0, 0, 7]
    np.testing.assert_array_equal(deepest[248:], np.broadcast_to(deepest[247], (2, 333)))
    np.testing.assert_array_equal(deepest[:, 328:], np.broadcast_to(deepest[:, 327:328], (250, 5)))
    np.testing.assert_array_equal(deepest[240:248, 320:328], deepest[240, 320])


@pytest.mark.parametrize("engine", ["autograd", "fast"])
def test_classes_subset_in_given_order(random_model, engine):
    # autograd runs one backward per class: a subset is bit for bit the same; the fast engine
    # batches the classes, and a class's place in the batch changes the rounding (below 1e-6)
    same = np.testing.assert_array_equal if engine == "autograd" else (
        lambda got, expected: np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0))
    images = demo_like_images(2, 64, 64)
    all_maps, logits = local_maps(random_model, images, engine=engine)
    swapped, logits_swapped = assert_matches_reference(random_model, images, classes=[1, 0], engine=engine)
    same(swapped, all_maps[:, ::-1])
    np.testing.assert_array_equal(logits_swapped, logits)
    single, _ = local_maps(random_model, images, classes=1, engine=engine)
    same(single[:, 0], all_maps[:, 1])


def test_without_normalisation_like_em_and_pvivax(random_model):
    images = demo_like_images(2, 64, 64)
    raw, _ = assert_matches_reference(random_model, images, normalize=False)
    assert raw[:, :, 7].min() >= 0          # ReLU on 4b
    assert raw[:, :, :7].min() < 0          # no ReLU elsewhere (random weights give negative sums)
    assert raw.max() > 1 or raw.min() < 0   # not normalised


def test_chunking_does_not_change_results(random_model):
    images = demo_like_images(5, 40, 56)
    one, logits_one = local_maps(random_model, images, chunk_size=1)
    for size in (2, 5, 100):
        maps, logits = local_maps(random_model, images, chunk_size=size)
        np.testing.assert_allclose(maps, one, atol=ATOL, rtol=0)
        np.testing.assert_allclose(logits, logits_one, atol=ATOL, rtol=0)


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


def test_model_left_unchanged(random_model):
    model = random_model
    model.train()
    model.dropout.eval()               # a mixed state must come back as it was
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = _hook_count(model)
    images = torch.as_tensor(demo_like_images(2, 32, 32))
    maps, logits = local_maps(model, images)
    assert all(p.grad is None for p in model.parameters())
    assert _hook_count(model) == hooks
    assert model.training and model.conv1a.training and not model.dropout.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # BN statistics untouched
    assert not images.requires_grad and images.grad is None
    # computed in eval mode, whatever the model's mode was
    model.eval()
    eval_maps, eval_logits = local_maps(model, images)
    np.testing.assert_array_equal(maps, eval_maps)
    np.testing.assert_array_equal(logits, eval_logits)


def test_frozen_parameters_and_no_grad_context(random_model):
    images = demo_like_images(1, 32, 32)
    expected, _ = local_maps(random_model, images)
    for p in random_model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        maps, _ = local_maps(random_model, images)
    np.testing.assert_allclose(maps, expected, atol=ATOL, rtol=0)
    assert not any(p.requires_grad for p in random_model.parameters())


def test_rgb_model_and_integer_images():
    model = MICRANet(num_classes=1, in_channels=3).eval()
    images = np.random.default_rng(0).integers(0, 255, (2, 3, 32, 32), dtype=np.uint8)
    maps, logits = assert_matches_reference(model, images.astype(np.float32), normalize=False)
    maps_int, _ = local_maps(model, images, normalize=False)
    np.testing.assert_array_equal(maps_int, maps)
    assert maps.shape == (2, 1, 8, 32, 32) and logits.shape == (2, 1)


@pytest.mark.parametrize("images, message", [
    (np.zeros((2, 3, 32, 32), np.float32), "3 channel"),
    (np.zeros((32, 32), np.float32), "images\\[None\\]"),
    (np.zeros((1, 1, 4, 32), np.float32), "at least 8x8"),
    (np.zeros((0, 1, 32, 32), np.float32), "empty"),
    (np.full((1, 1, 32, 32), np.nan, np.float32), "NaN"),
])
def test_bad_images_are_refused_clearly(random_model, images, message):
    with pytest.raises(ImageError, match=message):
        local_maps(random_model, images)


def test_rgb_images_without_channel_axis_are_refused():
    model = MICRANet(num_classes=1, in_channels=3)
    with pytest.raises(ImageError, match="expects 3 channels"):
        local_maps(model, np.zeros((2, 32, 32), np.float32))


@pytest.mark.parametrize("classes", [[2], [-1], [0.5], [], [True]])
def test_bad_classes_are_refused(random_model, classes):
    with pytest.raises(MicranetError, match="classes"):
        local_maps(random_model, np.zeros((1, 1, 16, 16), np.float32), classes=classes)


def test_predicted_thresholds():
    logits = np.array([[0.0, 2.0], [-3.0, 0.1]], np.float32)
    np.testing.assert_array_equal(predicted(logits), [[False, True], [False, True]])
    np.testing.assert_array_equal(predicted(logits, strict=False), [[True, True], [False, True]])
    np.testing.assert_array_equal(predicted(logits, [0.4, 0.9], strict=False), [[True, False], [False, False]])
    with pytest.raises(MicranetError, match="thresholds"):
        predicted(logits, [0.1, 0.2, 0.3])


def test_original_settings_per_dataset():
    assert original_settings("actin") == {"normalize": True, "strict": True, "thresholds": 0.5}
    em = original_settings("EM", {"class_thresholds": [0.3]})
    assert em == {"normalize": False, "strict": False, "thresholds": [0.3]}
    assert original_settings("pvivax")["normalize"] is False
    with pytest.raises(MicranetError, match="unknown data set"):
        original_settings("yeast")


def test_layer_names_and_strides():
    assert layer_names() == ["1a", "1b", "2a", "2b", "3a", "3b", "4a", "4b"]
    model = MICRANet(num_classes=1).eval()
    _, activations = model.forward_with_activations(torch.zeros(1, 1, 64, 64))
    assert [64 // a.shape[-1] for a in activations] == list(LAYER_STRIDES)


def test_sequential_view_shares_weights_and_exposes_activations(random_model):
    view = sequential_view(random_model)
    x = torch.as_tensor(demo_like_images(2, 40, 48))
    seen = []
    handles = [getattr(view, f"relu{name}").register_forward_hook(lambda m, i, o: seen.append(o))
               for name in layer_names()]
    with torch.no_grad():
        logits = view(x)
        expected_logits, activations = random_model.forward_with_activations(x)
    for handle in handles:
        handle.remove()
    torch.testing.assert_close(logits, expected_logits)
    for got, expected in zip(seen, activations):
        torch.testing.assert_close(got, expected)
    assert {id(p) for p in view.parameters()} == {id(p) for p in random_model.parameters()}


def test_device_auto_and_explicit_cpu_agree(random_model):
    images = demo_like_images(2, 24, 24)
    expected, _ = local_maps(random_model, images)
    for device in ("auto", "cpu", torch.device("cpu")):
        maps, _ = local_maps(random_model, images, device=device)
        np.testing.assert_array_equal(maps, expected)
    assert next(random_model.parameters()).device.type == "cpu"


# -- the two engines: the hand-written backward ("fast") against autograd ------------------------------


def assert_engines_agree(model, images, **kwargs):
    fast, fast_logits = local_maps(model, images, engine="fast", **kwargs)
    slow, slow_logits = local_maps(model, images, engine="autograd", **kwargs)
    assert fast.dtype == np.float32 and fast.shape == slow.shape
    np.testing.assert_allclose(fast_logits, slow_logits, atol=ATOL, rtol=0)
    np.testing.assert_allclose(fast, slow, atol=ATOL, rtol=0)
    return fast


@pytest.mark.parametrize("size", [(64, 64), (40, 9), (130, 100), (61, 77), (8, 8), (9, 40)])
@pytest.mark.parametrize("normalize", [True, False])
def test_fast_engine_equals_autograd_on_sizes(random_model, size, normalize):
    images = demo_like_images(3, *size, seed=size[0])
    assert_engines_agree(random_model, images, normalize=normalize, chunk_size=2)


@pytest.mark.parametrize("classes", [None, [1, 0], 1, [1, 1]])
def test_fast_engine_equals_autograd_on_class_subsets(random_model, classes):
    maps = assert_engines_agree(random_model, demo_like_images(2, 48, 56), classes=classes)
    assert maps.shape[1] == len(np.atleast_1d(classes if classes is not None else [0, 1]))


@pytest.mark.parametrize("size", [(40, 9), (130, 100), (61, 77)])
@pytest.mark.parametrize("normalize", [True, False])
def test_fast_engine_equals_autograd_with_three_channels(size, normalize):
    model = randomise_batchnorm(MICRANet(num_classes=3, in_channels=3), seed=2)
    images = np.random.default_rng(3).uniform(0, 1, (2, 3, *size)).astype(np.float32)
    assert_engines_agree(model, images, normalize=normalize, classes=[2, 0])


def test_fast_engine_matches_reference_and_chunking(random_model):
    images = demo_like_images(3, 72, 40)
    maps, _ = assert_matches_reference(random_model, images, engine="fast", chunk_size=1)
    together, _ = local_maps(random_model, images, engine="fast", chunk_size=3)
    np.testing.assert_allclose(together, maps, atol=ATOL, rtol=0)


def test_autograd_engine_matches_reference(random_model):
    assert_matches_reference(random_model, demo_like_images(2, 61, 77), engine="autograd")


class _Subclass(MICRANet):
    pass


def test_auto_engine_takes_fast_only_where_it_holds(random_model):
    assert fast_engine_refusal(random_model, torch.device("cpu")) is None
    assert "cuda" in fast_engine_refusal(random_model, torch.device("cuda"))
    sub = _Subclass(num_classes=2)
    sub.load_state_dict(random_model.state_dict())
    sub.eval()
    assert "not a plain MICRANet" in fast_engine_refusal(sub, torch.device("cpu"))
    with pytest.raises(MicranetError, match="engine='fast' cannot be used"):
        local_maps(sub, demo_like_images(1, 16, 16), engine="fast")
    images = demo_like_images(1, 32, 32)
    np.testing.assert_array_equal(local_maps(sub, images)[0], local_maps(random_model, images, engine="autograd")[0])
    handle = random_model.conv2a.register_forward_hook(lambda module, inputs, output: None)
    try:
        assert "hooks" in fast_engine_refusal(random_model, torch.device("cpu"))
    finally:
        handle.remove()
    with pytest.raises(MicranetError, match="engine must be one of"):
        local_maps(random_model, images, engine="jit")


def test_fast_engine_leaves_model_unchanged_and_works_under_no_grad(random_model):
    model = random_model
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.as_tensor(demo_like_images(2, 32, 32))
    with torch.inference_mode():
        maps, _ = local_maps(model, images, engine="fast")
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    model.eval()
    np.testing.assert_allclose(maps, local_maps(model, images, engine="autograd")[0], atol=ATOL, rtol=0)


def test_exported_model_shares_the_batched_backward(random_model):
    # the fast engine's backward lives in exported_maps (torch only); the exported model can use it too
    x = torch.as_tensor(demo_like_images(2, 40, 56))
    expected, expected_logits = local_maps(random_model, x, engine="autograd")
    for backward in ("analytic", "batched"):
        model = MicranetMaps(num_classes=2, backward=backward)
        model.load_state_dict(random_model.state_dict())
        model.eval()
        with torch.no_grad():
            maps, logits = model.local_maps(x)
        np.testing.assert_allclose(maps.numpy(), expected, atol=ATOL, rtol=0)
        np.testing.assert_allclose(logits.numpy(), expected_logits, atol=ATOL, rtol=0)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        combined, _ = scripted(x)
        again, _ = scripted(x)
        eager, _ = model(x)
    torch.testing.assert_close(combined, eager, atol=ATOL, rtol=0)
    torch.testing.assert_close(again, combined, atol=0, rtol=0)
