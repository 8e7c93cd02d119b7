import pytest
import torch

from micranet_utils.base.datasets import DATASETS
from micranet_utils.model.network import LAYERS
from micranet_utils.model.network import count_parameters, MICRANet
from original_network import original_logits


def test_actin_state_dict_matches_published_layout():
    state = MICRANet(num_classes=2, in_channels=1).state_dict()
    assert len(state) == 58
    assert state["conv1a.weight"].shape == (32, 1, 3, 3)
    assert state["conv4b.weight"].shape == (256, 256, 3, 3)
    assert state["bnorm4b.running_var"].shape == (256,)
    assert state["bnorm1a.num_batches_tracked"].shape == ()
    assert state["linear1.weight"].shape == (2, 256)
    assert count_parameters(MICRANet(2)) == 1_174_114


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_published_dataset_builds(name):
    info = DATASETS[name]
    model = MICRANet(info.num_classes, info.in_channels).eval()
    x = torch.rand(2, info.in_channels, 64, 64)
    assert model(x).shape == (2, info.num_classes)


def test_logits_equal_original_forward_on_crop_size(random_model):
    x = torch.rand(3, 1, 256, 256)
    with torch.no_grad():
        ours = random_model(x)
        theirs = original_logits(random_model.state_dict(), x, size=256)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_batch_of_one_keeps_batch_axis(random_model):
    with torch.no_grad():
        out = random_model(torch.rand(1, 1, 256, 256))
        theirs = original_logits(random_model.state_dict(), torch.rand(1, 1, 256, 256), size=256)
    assert out.shape == (1, 2)
    assert theirs.shape == (2,)  # the original drops it


@pytest.mark.parametrize("shape", [(250, 333), (64, 64), (8, 8), (97, 31)])
def test_any_image_size(random_model, shape):
    logits, activations = random_model.forward_with_activations(torch.rand(1, 1, *shape))
    assert logits.shape == (1, 2)
    assert [a.shape[1] for a in activations] == [32, 32, 64, 64, 128, 128, 256, 256]
    assert activations[-1].shape[-2:] == (shape[0] // 8, shape[1] // 8)
    assert len(activations) == len(LAYERS) == 8


def test_wrong_channel_count_is_explained(random_model):
    with pytest.raises(ValueError, match="3 channel.*expects 1"):
        random_model(torch.rand(1, 3, 64, 64))


def test_too_small_input_is_explained(random_model):
    with pytest.raises(ValueError, match="at least 8x8"):
        random_model(torch.rand(1, 1, 4, 64))
