"""Helpers that give test models non-trivial state (imported by conftest.py and the tests)."""

import torch


def randomise_batchnorm(model, seed):
    """Give every BatchNorm of `model` random running statistics, in place; returns it in eval mode.

    Fresh BatchNorms hold mean 0 and variance 1, so a forward pass in eval mode
    would not show whether the statistics are used, saved or loaded correctly.
    Means are drawn from N(0, 0.1²), variances from U(0.5, 1.5), with a
    generator seeded by `seed` (same seed, same statistics).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator) * 0.1)
            elif name.endswith("running_var"):
                buffer.copy_(torch.rand(buffer.shape, generator=generator) + 0.5)
    return model.eval()
