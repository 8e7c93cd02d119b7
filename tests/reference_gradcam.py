"""A plain, per-image Grad-CAM, written to check :func:`micranet_utils.model.gradcam.local_maps`.

It follows the published description step by step, with different machinery
from the fast path: one image at a time, ``retain_grad`` and ``backward`` on a
copy of the model (so parameter gradients are filled, on the copy only), the
weighted sum and normalisation in NumPy, and upsampling with ``np.repeat``
followed by edge padding for sizes that are not multiples of 8.
"""

import copy

import numpy as np
import torch

STRIDES = (1, 1, 2, 2, 4, 4, 8, 8)


def reference_local_maps(model, images, classes=None, normalize=True):
    """Maps (B, C, 8, H, W) and logits (B, num_classes), both float32, computed one image at a time."""
    model = copy.deepcopy(model).eval()
    images = torch.as_tensor(np.asarray(images, np.float32))
    if images.ndim == 3:
        images = images[:, None]
    classes = list(range(model.num_classes)) if classes is None else list(classes)
    height, width = images.shape[-2:]
    all_maps, all_logits = [], []
    for image in images:
        logits, activations = model.forward_with_activations(image[None])
        for activation in activations:
            activation.retain_grad()
        image_maps = []
        for c in classes:
            model.zero_grad()
            for activation in activations:
                activation.grad = None
            logits[0, c].backward(retain_graph=True)
            layer_maps = []
            for layer, (activation, stride) in enumerate(zip(activations, STRIDES)):
                a = activation.detach().numpy()[0]             # (K, h, w)
                g = activation.grad.numpy()[0]                 # (K, h, w)
                alpha = g.mean(axis=(1, 2))                    # (K,)
                cam = np.sum(a * alpha[:, None, None], axis=0)  # (h, w)
                if layer == 7:
                    cam = np.maximum(cam, 0)
                if normalize:
                    cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-12)
                big = np.repeat(np.repeat(cam, stride, axis=0), stride, axis=1)
                big = np.pad(big, ((0, height - big.shape[0]), (0, width - big.shape[1])), mode="edge")
                layer_maps.append(big)
            image_maps.append(layer_maps)
        all_maps.append(image_maps)
        all_logits.append(logits.detach().numpy()[0])
    return np.asarray(all_maps, np.float32), np.asarray(all_logits, np.float32)
