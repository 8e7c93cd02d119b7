"""Exact BatchNorm statistics ("precise BatchNorm") for models trained briefly on dark images.

BatchNorm layers normalise with the statistics of the current batch while training,
and keep an exponential average of them (momentum 0.1, starting from mean 0 and
variance 1) for inference. Microscopy crops are dark: the published STED crops and
the demo crops average 0.01 to 0.03, so the true variance of the first layers is
1e-4 to 1e-3. After a few dozen optimiser steps the running variance still remembers
its starting value of 1, and a model that scores well in train mode answers the same
for every crop in eval mode. The original's 250 epochs hide this; short trainings
(lessons, fine-tuning on a small lab data set) do not.

One pass over training crops with a cumulative average (``momentum=None``) replaces
the estimate by the average of the batch statistics over those crops: the value the
running average would converge to with enough steps (equal-size batches weigh
every crop alike). No weight changes.
"""

import numpy as np
import torch


def recalibrate_batchnorm(model, images, batch_size=16, forward=None):
    """Re-estimate every BatchNorm's running mean and variance from `images` (average of batch statistics).

    Parameters
    ----------
    model : torch.nn.Module
    images : ndarray or Tensor, shape (N, C, H, W), or an iterable of such batches
        Training crops without augmentation (never test crops).
    batch_size : int
        Used when `images` is one array.
    forward : callable, optional
        ``forward(model, batch)`` running the layers that hold the BatchNorms
        (default ``model(batch)``; for Mask R-CNN, its backbone).

    Returns
    -------
    model
        The same model, in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model.eval()
    if isinstance(images, (np.ndarray, torch.Tensor)):
        array = torch.as_tensor(np.asarray(images, dtype=np.float32))
        batches = (array[start:start + batch_size] for start in range(0, len(array), batch_size))
    else:
        batches = images
    momenta = [m.momentum for m in norms]
    device = next(model.parameters()).device
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    try:
        with torch.no_grad():
            for batch in batches:
                (forward or (lambda m, x: m(x)))(model, torch.as_tensor(batch).to(device))
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
    return model.eval()
