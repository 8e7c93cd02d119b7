"""MICRA-Net with Grad-CAM and the recipe's combined map inside ``forward`` (the bioimage.io architecture).

``micranet export-bioimageio`` (:mod:`micranet_utils.apps.export_bioimageio`)
copies this file into the model package as the ``architecture`` source of its
``pytorch_state_dict`` weights, and scripts :class:`MicranetMaps` with
``torch.jit.script`` for its ``torchscript`` weights. So it must stay
self-contained: it imports torch and nothing of this package.

``MicranetMaps`` *is* a MICRA-Net: its parameters and buffers have the same
names as ``micranet_utils.model.network.MICRANet`` (``conv1a.weight``, ``bnorm1a.running_mean``,
..., ``linear1.bias``), so a model-zoo state dict loads with ``strict=True``.

``forward(x)`` with ``x`` of shape (B, in_channels, H, W), float32, intensities
in [0, 1], returns a tuple

* ``maps`` (B, num_classes, H, W) float32: the recipe's combined map
  (steps 1-3 of ``micranet_utils.analysis.recipes``: PCA7 of the Grad-CAM maps of layers
  1a-4a, oriented by the 4b-weighted sum, min-max normalised over the gate
  "4b > 0 (and foreground)", Gaussian-smoothed); zero where the gate is empty
  (and, with ``only_predicted=True``, for classes the classifier does not call present);
* ``probabilities`` (B, num_classes) float32: ``sigmoid(logits)``.

Grad-CAM needs d logit_c / d activation. By default (``backward="analytic"``)
these gradients are back-propagated by hand, calling the ATen backward kernels
that autograd itself would call (bit-identical results): no autograd, so
``forward`` works under ``torch.no_grad()`` (bioimageio.core, DJL/deepImageJ),
under ``torch.inference_mode()``, and in TorchScript on every call.

``backward="batched"`` back-propagates all classes at once with
:func:`grad_cam_weights` (also the fast engine of
``micranet_utils.model.gradcam.local_maps``, which imports it from here):
faster, no autograd either, equal to the others up to float32 rounding.

``backward="autograd"`` uses ``torch.autograd.grad`` with autograd switched on
inside ``forward`` (``torch.enable_grad()`` in eager mode; leaves
``torch.inference_mode`` itself). Not for TorchScript: ``enable_grad`` is not
scriptable, and with ``torch.set_grad_enabled(True)`` instead the scripted model
works on the first call only (the profiling executor then specialises the graph
to the caller's no-grad mode: "element 0 of tensors does not require grad").

The computation mirrors ``micranet_utils.model.gradcam.local_maps`` and
``micranet_utils.analysis.recipes.combined_map`` (same operations, same order, float32
for Grad-CAM, float64 for the PCA and the smoothing).
"""

from typing import List, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

def _gaussian_kernel(sigma: float, truncate: float) -> Tensor:
    """scipy.ndimage's 1-D Gaussian kernel (order 0): radius int(truncate * sigma + 0.5), sum 1."""
    radius = int(truncate * float(sigma) + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    phi = torch.exp(-0.5 / (float(sigma) ** 2) * x * x)
    return phi / phi.sum()


def grad_cam_weights(acts: List[Tensor], pools: List[Tensor], argmax: Tensor, conv_weights: List[Tensor],
                     bn_scales: List[Tensor], lin: Tensor) -> List[Tensor]:
    """Grad-CAM channel weights ``alpha`` of every layer for several classes at once, without autograd.

    The backward pass of MICRA-Net in eval mode, written by hand for all
    classes together (``backward="batched"`` here, the fast engine of
    ``micranet_utils.model.gradcam.local_maps``):

    1. the classes are stacked on the batch axis (B * C) and share the ReLU
       masks, BatchNorm scales and pooling indices: one transposed convolution
       per layer for all of them (channels_last);
    2. the gradient at 4b is ``lin[c, k]`` at the global-max pixel of each
       channel, so ``alpha_4b = lin / (h w)`` and the gradient at 4a is a
       scatter of nine 3 x 3 weight slices per channel;
    3. ``alpha_1a`` is the spatial mean of conv1b's transposed convolution,
       i.e. a sum over the 3 x 3 taps of the weights times the sums of the
       gradient without one border row/column: that full-resolution
       transposed convolution is never computed.

    Parameters: the eight post-ReLU activations (B, K, h, w), the indices of the
    three 2x2 max pools, the global max pool's flat argmax (B, 256), the eight
    convolution weights, the eight BatchNorm scales ``weight / sqrt(running_var
    + eps)``, and the linear weights of the classes wanted (C, 256).

    Returns the eight ``alpha`` (B, C, K), layers 1a ... 4b. Equal to the mean
    of autograd's gradients up to float32 rounding (about 1e-7 relative); the
    rounding of one class depends on the other classes in the batch.
    """
    a4b = acts[7]
    b, k, h, w = a4b.shape[0], a4b.shape[1], a4b.shape[2], a4b.shape[3]
    count = lin.shape[0]
    device = a4b.device
    alphas: List[Tensor] = [lin[None].expand(b, count, k) / float(h * w)]       # 4b
    # 4b -> 4a: the gradient at conv4b's output is non-zero at one pixel per channel
    pooled = a4b.reshape(b, k, h * w).gather(2, argmax.reshape(b, k, 1)).reshape(b, k)
    top = lin[None] * ((pooled > 0).to(lin.dtype) * bn_scales[7])[:, None, :]    # (B, C, K)
    weight = conv_weights[7]                                                     # (K, J, 3, 3)
    j = weight.shape[1]
    taps = weight.permute(0, 2, 3, 1).reshape(k, 9, j)
    source = top[:, :, :, None, None] * taps                                     # (B, C, K, 9, J)
    padded_h, padded_w = h + 2, w + 2
    y = torch.div(argmax, w, rounding_mode="floor")
    x = argmax - y * w
    dy = torch.arange(3, device=device).repeat_interleave(3)
    dx = torch.arange(3, device=device).repeat(3)
    # conv: z[y, x] += W[dy, dx] a[y + dy - 1, x + dx - 1]: the gradient of a lands at (y + dy, x + dx)
    # of a map padded by one cell
    position = (y[:, :, None] + dy) * padded_w + (x[:, :, None] + dx)             # (B, K, 9)
    rows = (torch.arange(b * count, device=device).view(b, count, 1, 1) * (padded_h * padded_w)
            + position[:, None]).reshape(-1)
    target = torch.zeros([b * count * padded_h * padded_w, j], dtype=source.dtype, device=device)
    target.index_add_(0, rows, source.reshape(-1, j))
    grad = target.view(b * count, padded_h, padded_w, j)[:, 1:h + 1, 1:w + 1].permute(0, 3, 1, 2)
    for layer in range(6, 0, -1):                                                # 4a ... 1b
        act = acts[layer]
        kl, hl, wl = act.shape[1], act.shape[2], act.shape[3]
        alphas.append(grad.mean(dim=(2, 3)).view(b, count, kl))
        # through ReLU and BatchNorm to the convolution's output
        scaled = grad.view(b, count, kl, hl, wl) * bn_scales[layer].view(1, 1, kl, 1, 1)
        grad = torch.where(act[:, None] > 0, scaled, torch.zeros_like(scaled)).flatten(0, 1)
        weight = conv_weights[layer]
        if layer == 1:
            # alpha_1a: sums[n, o, dy, dx] of grad[n, o] without the first (d=0) or last (d=2) row / column
            total = grad.sum(dim=(2, 3))                                         # (N, O)
            row_sums = grad.sum(dim=3)
            col_sums = grad.sum(dim=2)
            zero = torch.zeros_like(total)
            drop_rows = torch.stack([row_sums[:, :, 0], zero, row_sums[:, :, -1]], -1)
            drop_cols = torch.stack([col_sums[:, :, 0], zero, col_sums[:, :, -1]], -1)
            corners = torch.stack([torch.stack([grad[:, :, 0, 0], zero, grad[:, :, 0, -1]], -1),
                                   torch.stack([zero, zero, zero], -1),
                                   torch.stack([grad[:, :, -1, 0], zero, grad[:, :, -1, -1]], -1)], -2)
            sums = total[:, :, None, None] - drop_rows[:, :, :, None] - drop_cols[:, :, None, :] + corners
            alpha = torch.einsum("nodx,ojdx->nj", [sums, weight]) / float(hl * wl)
            alphas.append(alpha.view(b, count, weight.shape[1]))
            break
        grad = F.conv_transpose2d(grad.contiguous(memory_format=torch.channels_last), weight, padding=1)
        if layer == 2 or layer == 4 or layer == 6:                               # 2a, 3a, 4a follow a pool
            below = acts[layer - 1]
            indices = pools[layer // 2 - 1]
            grad = torch.ops.aten.max_pool2d_with_indices_backward(
                grad, below[:, None].expand(b, count, below.shape[1], below.shape[2], below.shape[3]).flatten(0, 1),
                [2, 2], [2, 2], [0, 0], [1, 1], False,
                indices[:, None].expand(b, count, indices.shape[1], indices.shape[2], indices.shape[3]).flatten(0, 1))
    alphas.reverse()
    return alphas


class MicranetMaps(nn.Module):
    """MICRA-Net whose forward returns the per-class combined Grad-CAM maps and the probabilities.

    Parameters
    ----------
    num_classes, in_channels : int
        As ``MICRANet``.
    normalize_layers : bool
        Min-max normalise each layer's Grad-CAM map (Actin, CTC, MNIST: True; EM, P. vivax: False).
    gate_foreground : bool
        Restrict the gate to the image foreground (recipe "actin").
    normalize : bool
        Min-max normalise the combined map over the gate (recipe constant ``normalize``).
    sigma : float
        Gaussian smoothing of the combined map (0: none), ``mode="nearest"``, ``truncate=4``.
    only_predicted : bool
        Zero the maps of classes whose probability is not above ``thresholds``
        (as ``score_maps`` with ``gradcam.predicted(...)``). Default False: a map for every class.
    thresholds : list of float
        One probability threshold per class (only used with ``only_predicted``).
    strict : bool
        ``prob > threshold`` (True) or ``prob >= threshold`` (False).
    backward : {"analytic", "autograd", "batched"}
        How the Grad-CAM gradients are computed (see :meth:`local_maps`).
    """

    def __init__(self, num_classes: int = 2, in_channels: int = 1, normalize_layers: bool = True,
                 gate_foreground: bool = True, normalize: bool = True, sigma: float = 1.0,
                 truncate: float = 4.0, only_predicted: bool = False, thresholds=None, strict: bool = True,
                 backward: str = "analytic"):
        super().__init__()
        if backward not in ("analytic", "autograd", "batched"):
            raise ValueError(f"backward must be 'analytic', 'autograd' or 'batched', got {backward!r}")
        self.backward = str(backward)
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.normalize_layers = bool(normalize_layers)
        self.gate_foreground = bool(gate_foreground)
        self.normalize = bool(normalize)
        self.sigma = float(sigma)
        self.only_predicted = bool(only_predicted)
        self.strict = bool(strict)
        if thresholds is None:
            thresholds = [0.5] * self.num_classes
        if isinstance(thresholds, (int, float)):
            thresholds = [float(thresholds)] * self.num_classes
        if len(thresholds) != self.num_classes:
            raise ValueError(f"thresholds: expected {self.num_classes} values, got {len(thresholds)}")
        self.thresholds: List[float] = [float(t) for t in thresholds]
        # the Gaussian kernel is a constant, not a parameter: no entry in the state dict
        self.kernel: List[float] = (_gaussian_kernel(self.sigma, truncate).tolist() if self.sigma > 0 else [1.0])

        # -- MICRA-Net, names as in the original (and micranet_utils.model.network.MICRANet) --
        self.maxpool = nn.MaxPool2d(kernel_size=2)
        self.conv1a = nn.Conv2d(self.in_channels, 32, kernel_size=3, padding=1)
        self.bnorm1a = nn.BatchNorm2d(32)
        self.conv1b = nn.Conv2d(32, 32, kernel_size=3, padding=1)
        self.bnorm1b = nn.BatchNorm2d(32)
        self.conv2a = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.bnorm2a = nn.BatchNorm2d(64)
        self.conv2b = nn.Conv2d(64, 64, kernel_size=3, padding=1)
        self.bnorm2b = nn.BatchNorm2d(64)
        self.conv3a = nn.Conv2d(64, 128, kernel_size=3, padding=1)
        self.bnorm3a = nn.BatchNorm2d(128)
        self.conv3b = nn.Conv2d(128, 128, kernel_size=3, padding=1)
        self.bnorm3b = nn.BatchNorm2d(128)
        self.conv4a = nn.Conv2d(128, 256, kernel_size=3, padding=1)
        self.bnorm4a = nn.BatchNorm2d(256)
        self.conv4b = nn.Conv2d(256, 256, kernel_size=3, padding=1)
        self.bnorm4b = nn.BatchNorm2d(256)
        self.global_pool = nn.AdaptiveMaxPool2d(1)
        self.dropout = nn.Dropout(p=0.5)
        self.linear1 = nn.Linear(256, self.num_classes)
        self.bn_eps = float(self.bnorm1a.eps)

    # ------------------------------------------------------------------ network
    def forward_with_activations(self, x: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """Logits (B, num_classes) and the eight post-ReLU activations."""
        acts: List[Tensor] = []
        x = F.relu(self.bnorm1a(self.conv1a(x)))
        acts.append(x)
        x = F.relu(self.bnorm1b(self.conv1b(x)))
        acts.append(x)
        x = self.maxpool(x)
        x = F.relu(self.bnorm2a(self.conv2a(x)))
        acts.append(x)
        x = F.relu(self.bnorm2b(self.conv2b(x)))
        acts.append(x)
        x = self.maxpool(x)
        x = F.relu(self.bnorm3a(self.conv3a(x)))
        acts.append(x)
        x = F.relu(self.bnorm3b(self.conv3b(x)))
        acts.append(x)
        x = self.maxpool(x)
        x = F.relu(self.bnorm4a(self.conv4a(x)))
        acts.append(x)
        x = F.relu(self.bnorm4b(self.conv4b(x)))
        acts.append(x)
        x = self.global_pool(x).flatten(1)
        return self.linear1(self.dropout(x)), acts

    # ------------------------------------------------------------------ Grad-CAM
    def _forward_for_backward(self, x: Tensor) -> Tuple[Tensor, List[Tensor], List[Tensor], List[Tensor],
                                                         List[Tensor], Tensor]:
        """Forward pass keeping what the hand-written backward needs.

        Returns logits (B, C); per layer 1a..4b its convolution input, its
        pre-BN (convolution) output and its post-ReLU activation; the indices
        of the three 2x2 max pools and of the global max pool (B, 256, 1, 1).
        """
        # unrolled: TorchScript cannot call modules taken from a Python list
        inputs: List[Tensor] = []
        pre_bn: List[Tensor] = []
        acts: List[Tensor] = []
        pools: List[Tensor] = []
        a = x
        inputs.append(a)
        z = self.conv1a(a)
        pre_bn.append(z)
        a = F.relu(self.bnorm1a(z))
        acts.append(a)
        inputs.append(a)
        z = self.conv1b(a)
        pre_bn.append(z)
        a = F.relu(self.bnorm1b(z))
        acts.append(a)
        a, i = F.max_pool2d(a, 2, return_indices=True)
        pools.append(i)
        inputs.append(a)
        z = self.conv2a(a)
        pre_bn.append(z)
        a = F.relu(self.bnorm2a(z))
        acts.append(a)
        inputs.append(a)
        z = self.conv2b(a)
        pre_bn.append(z)
        a = F.relu(self.bnorm2b(z))
        acts.append(a)
        a, i = F.max_pool2d(a, 2, return_indices=True)
        pools.append(i)
        inputs.append(a)
        z = self.conv3a(a)
        pre_bn.append(z)
        a = F.relu(self.bnorm3a(z))
        acts.append(a)
        inputs.append(a)
        z = self.conv3b(a)
        pre_bn.append(z)
        a = F.relu(self.bnorm3b(z))
        acts.append(a)
        a, i = F.max_pool2d(a, 2, return_indices=True)
        pools.append(i)
        inputs.append(a)
        z = self.conv4a(a)
        pre_bn.append(z)
        a = F.relu(self.bnorm4a(z))
        acts.append(a)
        inputs.append(a)
        z = self.conv4b(a)
        pre_bn.append(z)
        a = F.relu(self.bnorm4b(z))
        acts.append(a)
        z, gidx = F.adaptive_max_pool2d(a, 1, return_indices=True)
        logits = self.linear1(self.dropout(z.flatten(1)))
        return logits, inputs, pre_bn, acts, pools, gidx

    def _bn_parameters(self) -> Tuple[List[Tensor], List[Tensor], List[Tensor]]:
        """Weights, running means and running variances of the eight BatchNorms, 1a ... 4b."""
        # unrolled, one BatchNorm at a time: TorchScript refines each Optional (weight, running
        # statistics) only through its own assert, and cannot index modules by name
        bn_weights: List[Tensor] = []
        bn_means: List[Tensor] = []
        bn_vars: List[Tensor] = []
        w, mean, var = self.bnorm1a.weight, self.bnorm1a.running_mean, self.bnorm1a.running_var
        assert w is not None and mean is not None and var is not None
        bn_weights.append(w)
        bn_means.append(mean)
        bn_vars.append(var)
        w, mean, var = self.bnorm1b.weight, self.bnorm1b.running_mean, self.bnorm1b.running_var
        assert w is not None and mean is not None and var is not None
        bn_weights.append(w)
        bn_means.append(mean)
        bn_vars.append(var)
        w, mean, var = self.bnorm2a.weight, self.bnorm2a.running_mean, self.bnorm2a.running_var
        assert w is not None and mean is not None and var is not None
        bn_weights.append(w)
        bn_means.append(mean)
        bn_vars.append(var)
        w, mean, var = self.bnorm2b.weight, self.bnorm2b.running_mean, self.bnorm2b.running_var
        assert w is not None and mean is not None and var is not None
        bn_weights.append(w)
        bn_means.append(mean)
        bn_vars.append(var)
        w, mean, var = self.bnorm3a.weight, self.bnorm3a.running_mean, self.bnorm3a.running_var
        assert w is not None and mean is not None and var is not None
        bn_weights.append(w)
        bn_means.append(mean)
        bn_vars.append(var)
        w, mean, var = self.bnorm3b.weight, self.bnorm3b.running_mean, self.bnorm3b.running_var
        assert w is not None and mean is not None and var is not None
        bn_weights.append(w)
        bn_means.append(mean)
        bn_vars.append(var)
        w, mean, var = self.bnorm4a.weight, self.bnorm4a.running_mean, self.bnorm4a.running_var
        assert w is not None and mean is not None and var is not None
        bn_weights.append(w)
        bn_means.append(mean)
        bn_vars.append(var)
        w, mean, var = self.bnorm4b.weight, self.bnorm4b.running_mean, self.bnorm4b.running_var
        assert w is not None and mean is not None and var is not None
        bn_weights.append(w)
        bn_means.append(mean)
        bn_vars.append(var)
        return bn_weights, bn_means, bn_vars

    def _conv_weights(self) -> List[Tensor]:
        return [self.conv1a.weight, self.conv1b.weight, self.conv2a.weight, self.conv2b.weight,
                self.conv3a.weight, self.conv3b.weight, self.conv4a.weight, self.conv4b.weight]

    def layer_weights(self, x: Tensor) -> Tuple[Tensor, List[Tensor], List[Tensor]]:
        """Logits (B, C), the eight activations and their Grad-CAM weights (8 x (B, C, K)), all classes at once.

        :func:`grad_cam_weights`: the same backward as :meth:`layer_gradients`
        for all classes in one pass, the cheap parts of it replaced by their
        closed forms (equal up to float32 rounding). Eval mode only.
        """
        logits, _inputs, _pre_bn, acts, pools, gidx = self._forward_for_backward(x)
        bn_weights, _means, bn_vars = self._bn_parameters()
        scales = [torch.rsqrt(bn_vars[layer] + self.bn_eps) * bn_weights[layer] for layer in range(8)]
        alphas = grad_cam_weights(acts, pools, gidx.flatten(1), self._conv_weights(), scales, self.linear1.weight)
        return logits, acts, alphas

    def layer_gradients(self, x: Tensor) -> Tuple[Tensor, List[Tensor], List[List[Tensor]]]:
        """d logit_c / d activation for every class c and layer, without autograd.

        MICRA-Net is conv -> BN -> ReLU (-> 2x2 max pool) x 8, global max pool,
        dropout (identity in eval) and one linear layer, so the gradient of each
        logit is back-propagated by hand, calling the very ATen backward kernels
        autograd calls (threshold_backward, native_batch_norm_backward in eval
        mode, convolution_backward, max_pool2d_with_indices_backward): the
        result is bit-identical to ``torch.autograd.grad``, yet no autograd is
        involved, so it works under ``torch.no_grad()``, ``torch.inference_mode()``
        and in TorchScript. Eval mode only (running BN statistics, no dropout).

        Returns logits (B, C), activations (8 x (B, K, h, w)) and, per class,
        the gradients (C x 8 x (B, K, h, w)), layers in the order 1a ... 4b.
        """
        logits, inputs, pre_bn, acts, pools, gidx = self._forward_for_backward(x)
        conv_weights = self._conv_weights()
        bn_weights, bn_means, bn_vars = self._bn_parameters()
        a4b = acts[7]
        b, k, h, w4 = a4b.shape[0], a4b.shape[1], a4b.shape[2], a4b.shape[3]
        per_class: List[List[Tensor]] = []
        for c in range(self.num_classes):
            # logit_c = W[c] . max_hw(A4b) + bias: linear and global-max-pool backward
            seed = self.linear1.weight[c][None, :, None].expand(b, k, 1)
            g = torch.zeros(b, k, h * w4, dtype=a4b.dtype, device=a4b.device)
            g = g.scatter(2, gidx.reshape(b, k, 1), seed).reshape(b, k, h, w4)
            grads: List[Tensor] = [g]                                            # d/d A4b
            for layer in range(7, 0, -1):                                       # 4b ... 1b
                g = torch.ops.aten.threshold_backward(g, acts[layer], 0.0)       # ReLU
                g = torch.ops.aten.native_batch_norm_backward(
                    g, pre_bn[layer], bn_weights[layer], bn_means[layer], bn_vars[layer], None, None,
                    False, self.bn_eps, [True, False, False])[0]                 # BN (eval)
                g = torch.ops.aten.convolution_backward(
                    g, inputs[layer], conv_weights[layer], None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                    [True, False, False])[0]                                     # conv
                if layer == 2 or layer == 4 or layer == 6:                      # 2a, 3a, 4a follow a pool
                    g = torch.ops.aten.max_pool2d_with_indices_backward(
                        g, acts[layer - 1], [2, 2], [2, 2], [0, 0], [1, 1], False, pools[layer // 2 - 1])
                grads.append(g)                                                  # d/d A(layer - 1)
            grads.reverse()
            per_class.append(grads)
        return logits, acts, per_class

    def _cam(self, act: Tensor, grad: Tensor, layer: int, height: int, width: int) -> Tensor:
        """Grad-CAM map of one layer for one class, upsampled: (B, H, W)."""
        return self._cam_from_weights(act, grad.mean(dim=(2, 3)), layer, height, width)

    def _cam_from_weights(self, act: Tensor, alpha: Tensor, layer: int, height: int, width: int) -> Tensor:
        """Grad-CAM map of one layer for one class from its channel weights alpha (B, K): (B, H, W)."""
        strides = [1, 1, 2, 2, 4, 4, 8, 8]                  # gradcam.LAYER_STRIDES (globals are not scriptable)
        cam = torch.einsum("bk,bkhw->bhw", alpha, act)                           # (B, h, w)
        if layer == 7:                                                           # 4b only
            cam = cam.clamp(min=0)
        if self.normalize_layers:
            low = cam.amin(dim=(1, 2), keepdim=True)
            high = cam.amax(dim=(1, 2), keepdim=True)
            cam = (cam - low) / (high - low + 1e-12)                             # gradcam._NORMALIZE_EPS
        return self._upsample(cam, strides[layer], height, width)

    def local_maps(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Grad-CAM maps (B, C, 8, H, W) float32 of every class and layer, and the logits (B, C).

        ``self.backward == "analytic"`` (default): :meth:`layer_gradients`, no autograd.
        ``"batched"``: :meth:`layer_weights`, all classes in one hand-written backward
        (faster; equal to the others up to float32 rounding).
        ``"autograd"``: one forward, one ``torch.autograd.grad`` per class with
        autograd switched on (eager mode only in practice: TorchScript's profiling
        executor drops the gradient graph from the second call on).
        """
        height, width = x.shape[-2], x.shape[-1]
        per_class: List[Tensor] = []
        if self.backward == "autograd":
            # torch.enable_grad() is not TorchScript-able; torch.set_grad_enabled(bool) called as a
            # function is (and does the same in eager mode).
            previous = torch.is_grad_enabled()
            torch.set_grad_enabled(True)
            # clone: an "inference tensor" (made under torch.inference_mode) cannot require grad
            xg = x.detach().clone().requires_grad_(True)
            logits, acts = self.forward_with_activations(xg)
            for c in range(self.num_classes):
                grads = torch.autograd.grad([logits[:, c].sum()], acts, retain_graph=c < self.num_classes - 1)
                layers: List[Tensor] = []
                for layer in range(8):
                    grad = grads[layer]
                    assert grad is not None
                    layers.append(self._cam(acts[layer].detach(), grad.detach(), layer, height, width))
                per_class.append(torch.stack(layers, dim=1))                     # (B, 8, H, W)
            torch.set_grad_enabled(previous)
            return torch.stack(per_class, dim=1), logits.detach()
        if self.backward == "batched":
            logits, acts, alphas = self.layer_weights(x)
            for c in range(self.num_classes):
                layers = [self._cam_from_weights(acts[layer], alphas[layer][:, c], layer, height, width)
                          for layer in range(8)]
                per_class.append(torch.stack(layers, dim=1))
            return torch.stack(per_class, dim=1), logits
        logits, acts, grads = self.layer_gradients(x)
        for c in range(self.num_classes):
            layers = [self._cam(acts[layer], grads[c][layer], layer, height, width) for layer in range(8)]
            per_class.append(torch.stack(layers, dim=1))
        return torch.stack(per_class, dim=1), logits

    @staticmethod
    def _upsample(cam: Tensor, stride: int, height: int, width: int) -> Tensor:
        """Repeat each cell `stride` times; trailing pixels pooling dropped repeat the last cell."""
        h, w = cam.shape[-2], cam.shape[-1]
        rows = torch.clamp(torch.arange(height, device=cam.device) // stride, max=h - 1)
        cols = torch.clamp(torch.arange(width, device=cam.device) // stride, max=w - 1)
        return cam.index_select(1, rows).index_select(2, cols)

    # ------------------------------------------------------------------ recipe steps 1-3
    def _foreground(self, x: Tensor) -> Tensor:
        """Bool (B, H, W): 8x8 blocks whose mean is above the median block mean (recipes.foreground)."""
        image = x.to(torch.float64).mean(dim=1)                                  # (B, H, W)
        b, height, width = image.shape
        bin_ = 8                                                                 # thresholds.BIN
        rows = (height + bin_ - 1) // bin_
        cols = (width + bin_ - 1) // bin_
        padded = F.pad(image, [0, cols * bin_ - width, 0, rows * bin_ - height], value=float("nan"))
        binned = torch.nanmean(padded.reshape(b, rows, bin_, cols, bin_), dim=(2, 4))   # (B, rows, cols)
        median = torch.quantile(binned.reshape(b, -1), 0.5, dim=1)             # linear, as numpy
        keep = binned > median[:, None, None]
        keep = keep.repeat_interleave(bin_, dim=1).repeat_interleave(bin_, dim=2)
        return keep[:, :height, :width]

    def _smooth(self, scores: Tensor) -> Tensor:
        """scipy.ndimage.gaussian_filter(mode="nearest") on (N, H, W) float64, axis 0 then axis 1."""
        kernel = torch.tensor(self.kernel, dtype=torch.float64, device=scores.device)
        radius = (kernel.shape[0] - 1) // 2
        out = scores[:, None]                                                    # (N, 1, H, W)
        out = F.conv2d(F.pad(out, [0, 0, radius, radius], mode="replicate"), kernel.view(1, 1, -1, 1))
        out = F.conv2d(F.pad(out, [radius, radius, 0, 0], mode="replicate"), kernel.view(1, 1, 1, -1))
        return out[:, 0]

    def combine(self, maps: Tensor, x: Tensor) -> Tensor:
        """Steps 1-3 of the recipe for every image and class: (B, C, 8, H, W) -> (B, C, H, W) float64."""
        b, c, _, height, width = maps.shape
        n = b * c
        flat = maps.reshape(n, 8, height * width).to(torch.float64)
        deepest = flat[:, 7]                                                     # (N, HW)
        gate = maps[:, :, 7].reshape(n, height * width) > 0
        if self.gate_foreground:
            fg = self._foreground(x).reshape(b, 1, height * width).expand(b, c, height * width)
            gate = gate & fg.reshape(n, height * width)
        # PCA7: leading eigenvector of the 7x7 covariance, largest-magnitude loading positive
        values = flat[:, :7]                                                     # (N, 7, HW)
        centred = values - values.mean(dim=2, keepdim=True)
        covariance = centred @ centred.transpose(1, 2) / (height * width)
        _, vectors = torch.linalg.eigh(covariance)
        component = vectors[:, :, -1]                                            # (N, 7)
        biggest = component.gather(1, component.abs().argmax(dim=1, keepdim=True))
        sign = torch.sign(biggest)
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        scores = (component * sign).unsqueeze(1) @ centred                        # (N, 1, HW)
        scores = scores[:, 0]
        # orientation: structure high (positive 4b-weighted sum)
        weighted = (scores * deepest.clamp(min=0)).sum(dim=1, keepdim=True)
        scores = torch.where(weighted < 0, -scores, scores)
        if self.normalize:
            inf = torch.full_like(scores, float("inf"))
            low = torch.where(gate, scores, inf).amin(dim=1, keepdim=True)
            high = torch.where(gate, scores, -inf).amax(dim=1, keepdim=True)
            span = torch.where(high > low, high - low, torch.ones_like(high))
            scores = (scores - low) / span
        scores = scores.reshape(n, height, width)
        if self.sigma > 0:
            scores = self._smooth(scores)
        empty = ~gate.any(dim=1)
        scores = torch.where(empty[:, None, None], torch.zeros_like(scores), scores)
        return scores.reshape(b, c, height, width)

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """(combined maps (B, C, H, W), probabilities (B, C)), both float32."""
        if torch.jit.is_scripting() or self.backward != "autograd":
            with torch.no_grad():        # no graph even if the caller has autograd on
                return self._forward_impl(x)
        return self._forward_eager_autograd(x)

    @torch.jit.unused
    def _forward_eager_autograd(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """backward="autograd", eager mode: leave torch.inference_mode if the caller is in it, autograd on."""
        if torch.is_inference_mode_enabled():
            with torch.inference_mode(False), torch.enable_grad():
                return self._forward_impl(x.clone())
        with torch.enable_grad():
            return self._forward_impl(x)

    def _forward_impl(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError("expected input of shape (B, in_channels, H, W)")
        if x.shape[2] < 8 or x.shape[3] < 8:
            raise ValueError("MICRA-Net needs at least 8x8 pixels")
        x = x.to(torch.float32)
        maps, logits = self.local_maps(x)
        combined = self.combine(maps, x)
        probabilities = torch.sigmoid(logits)
        if self.only_predicted:
            thresholds = torch.tensor(self.thresholds, dtype=probabilities.dtype, device=probabilities.device)
            present = probabilities > thresholds if self.strict else probabilities >= thresholds
            combined = torch.where(present[:, :, None, None], combined, torch.zeros_like(combined))
        return combined.to(torch.float32), probabilities
