"""Precise BatchNorm: exact statistics after a short training on dark images."""

import numpy as np
import torch

from micranet_utils.io.zoo import load_zoo
from micranet_utils.model.batchnorm import recalibrate_batchnorm
from micranet_utils.io.training_files import CropDataset
from micranet_utils.train.runs import train
from training_data import TINY, write_tiny_folder


def _dark(folder):
    """Scale the tiny files' intensities down to the published STED range (mean ~0.02)."""
    import h5py

    for path in folder.glob("*.hdf5"):
        with h5py.File(path, "a") as file:
            file["images/data"][...] = file["images/data"][...] * 0.05
    return folder


def _conv1a_variance(model, crops):
    images = torch.stack([crops[i][0] for i in range(len(crops))])
    with torch.no_grad():
        return model.conv1a(images).var(dim=(0, 2, 3), unbiased=False)


def test_recalibration_gives_the_statistics_of_the_crops(random_model):
    images = torch.rand(20, 1, 32, 32) * 0.03
    recalibrate_batchnorm(random_model, images, batch_size=10)   # equal batches: exact mean
    with torch.no_grad():
        out = random_model.conv1a(images)
    torch.testing.assert_close(random_model.bnorm1a.running_mean, out.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-7)
    ratio = random_model.bnorm1a.running_var / out.var(dim=(0, 2, 3))
    assert torch.all((ratio > 0.95) & (ratio < 1.05)), ratio
    assert not random_model.training
    assert random_model.bnorm1a.momentum == 0.1


def test_short_training_on_dark_images_saves_the_true_statistics(tmp_path):
    folder = _dark(write_tiny_folder(tmp_path / "data", n_train=6, n_valid=2))
    result = train(folder, tmp_path / "run", **TINY)
    model, params = load_zoo(result.best)
    crops = CropDataset(folder / "training_tiny.hdf5", size=32)
    true_variance = _conv1a_variance(model, crops)
    stored = model.bnorm1a.running_var
    # within a factor 1.5 of the truth (the crops used are evenly spread, all of them here)
    ratio = (stored / true_variance).numpy()
    assert np.all((ratio > 0.66) & (ratio < 1.5)), ratio

    # the original's exponential average, after the same few steps, is far off
    original = train(folder, tmp_path / "run0", bn_recalibration_crops=0, **TINY)
    model0, _ = load_zoo(original.best)
    ratio0 = (model0.bnorm1a.running_var / _conv1a_variance(model0, crops)).numpy()
    assert np.median(ratio0) > 3, ratio0
    assert params["bn_recalibration_crops"] == 256
