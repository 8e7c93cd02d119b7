"""A plain, per-image Grad-CAM, written to check :func:`micranet_utils.model.gradcam.local_maps`.

It follows the published description (reference §2 and §6) step by step and
shares no code with the package: the forward pass is written out with
``torch.nn.functional`` from the model's weights (:func:`original_activations`,
so a bug in ``MICRANet.forward_with_activations`` cannot hide), the gradients
are caught with tensor hooks as the original's ``grad=True`` mode does, one
image and one ``backward`` per class at a time, the weighted sum and
normalisation are done in NumPy, and the upsampling uses ``np.repeat``.

Two rules follow the package's documentation where the original only handled
square multiples of 8 (reference §11, #10 and #11): the global max pool covers
the whole deepest map (the original's ``size // 8`` kernel is the same on
``size x size`` inputs), and for other sizes the pixels that pooling ignored
repeat the last cell (edge padding).
"""

import numpy as np
import torch
from original_network import original_activations
from torch.nn import functional as F

STRIDES = (1, 1, 2, 2, 4, 4, 8, 8)


def _weights(model):
    """Copies of the model's weights and statistics; the parameters' copies require grad."""
    trainable = {name for name, _ in model.named_parameters()}
    return {name: value.detach().clone().requires_grad_(name in trainable)
            for name, value in model.state_dict().items()}


def reference_local_maps(model, images, classes=None, normalize=True):
    """Maps (B, C, 8, H, W) and logits (B, num_classes), both float32, computed one image at a time."""
    state = _weights(model)
    images = torch.as_tensor(np.asarray(images, np.float32))
    if images.ndim == 3:
        images = images[:, None]
    num_classes = state["linear1.bias"].shape[0]
    classes = list(range(num_classes)) if classes is None else list(classes)
    height, width = images.shape[-2:]
    all_maps, all_logits = [], []
    for image in images:
        activations = original_activations(state, image[None])
        gradients = [None] * len(activations)
        for layer, activation in enumerate(activations):
            activation.register_hook(lambda grad, layer=layer, store=gradients: store.__setitem__(layer, grad.numpy()[0]))
        pooled = activations[-1].amax(dim=(2, 3))                      # global max, dropout off (eval)
        logits = F.linear(pooled, state["linear1.weight"], state["linear1.bias"])[0]
        image_maps = []
        for c in classes:
            gradients[:] = [None] * len(activations)
            logits[c].backward(retain_graph=True)
            layer_maps = []
            for layer, (activation, stride) in enumerate(zip(activations, STRIDES)):
                a = activation.detach().numpy()[0].astype(np.float64)  # (K, h, w)
                alpha = gradients[layer].mean(axis=(1, 2))             # (K,)
                cam = np.tensordot(alpha, a, axes=1)                   # (h, w)
                if layer == 7:
                    cam = np.maximum(cam, 0)
                if normalize:
                    cam = (cam - cam.min()) / (cam.max() - cam.min() + 1e-12)
                big = np.repeat(np.repeat(cam, stride, axis=0), stride, axis=1)
                big = np.pad(big, ((0, height - big.shape[0]), (0, width - big.shape[1])), mode="edge")
                layer_maps.append(big)
            image_maps.append(layer_maps)
        all_maps.append(image_maps)
        all_logits.append(logits.detach().numpy())
    return np.asarray(all_maps, np.float32), np.asarray(all_logits, np.float32)
