"""Batches that any process can recompute: order, sharding and augmentation from a seed.

A resumable, multi-process training run needs every random draw to be a pure
function of where it happens. Here the order of the crops in an epoch depends
only on ``(seed, epoch)``, and the augmentation of a batch only on the
generator the training loop re-seeds from ``(seed, epoch, batch, rank)``.
Nothing depends on how many DataLoader workers there are or on what ran before.
"""

import math

import numpy as np
import torch
from torch.utils.data import Sampler


def batch_plan(num_items, batch_size, seed, epoch, shuffle=True, drop_last=True):
    """The batches of one epoch, as lists of crop indices, the same on every process.

    Parameters
    ----------
    num_items, batch_size, seed, epoch : int
    shuffle, drop_last : bool

    Returns
    -------
    list of list of int
    """
    if shuffle:
        generator = torch.Generator().manual_seed(mix_seed(seed, epoch))
        order = torch.randperm(num_items, generator=generator).tolist()
    else:
        order = list(range(num_items))
    stop = num_items - num_items % batch_size if drop_last else num_items
    return [order[start:start + batch_size] for start in range(0, stop, batch_size)]


def mix_seed(*numbers):
    """One 63-bit seed from several integers (seed, epoch, batch, rank)."""
    return int(np.random.SeedSequence([int(n) for n in numbers]).generate_state(2, np.uint64)[0] >> 1)


def augment_batch(images, probability, generator):
    """The original four augmentations, drawn independently for each crop of a batch.

    With probability `probability` each: left-right flip, up-down flip, intensity
    scale by ``clip(lognormal(0.01, 0.1), 0, 1)`` (darkens) and gamma
    ``clip(lognormal(0.005, sqrt(0.005)), 0, 1)`` (brightens); both intensity steps
    clip to [0, 1], as the original does.

    Parameters
    ----------
    images : Tensor, shape (N, C, H, W), float
    probability : float
    generator : torch.Generator (CPU)
        Always advanced by the same amount, whatever is applied.

    Returns
    -------
    Tensor, shape (N, C, H, W)
    """
    n = images.shape[0]
    coins = torch.rand(n, 4, generator=generator) < probability
    normal = torch.randn(n, 2, generator=generator).double()
    scale = torch.exp(0.01 + math.sqrt(0.01) * normal[:, 0]).clamp(0, 1).float()
    gamma = torch.exp(0.005 + math.sqrt(0.005) * normal[:, 1]).clamp(0, 1).float()
    if probability <= 0:
        return images

    def where(mask, changed, unchanged):
        return torch.where(mask.to(images.device).view(n, 1, 1, 1), changed, unchanged)

    images = where(coins[:, 0], images.flip(-1), images)
    images = where(coins[:, 1], images.flip(-2), images)
    view = (n, 1, 1, 1)
    images = where(coins[:, 2], (images * scale.to(images.device).view(view)).clamp(0, 1), images)
    images = where(coins[:, 3], images.clamp(min=0).pow(gamma.to(images.device).view(view)).clamp(0, 1), images)
    return images


class BatchList(Sampler):
    """A batch sampler whose batches are replaced at each epoch (works with persistent workers)."""

    def __init__(self):
        self.batches = []

    def __iter__(self):
        return iter(list(self.batches))

    def __len__(self):
        return len(self.batches)
