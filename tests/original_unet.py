"""A plain, functional re-creation of the original Actin U-Net forward pass.

Written for this project from the published description, using the original's
state_dict key names (``firstConvolution.conv.0.weight``, ``contractingPath.0.conv.1.conv.0.weight``,
``expandingPath.0.expand.weight``, ``lastConv.weight`` ...), so a model whose keys
or wiring differ fails the comparison.
"""

import torch
from torch.nn import functional as F


def _double(state, prefix, x):
    for conv, norm in ((0, 1), (3, 4)):
        x = F.conv2d(x, state[f"{prefix}.{conv}.weight"], state[f"{prefix}.{conv}.bias"], padding=1)
        x = F.batch_norm(x, state[f"{prefix}.{norm}.running_mean"], state[f"{prefix}.{norm}.running_var"],
                         state[f"{prefix}.{norm}.weight"], state[f"{prefix}.{norm}.bias"], training=False)
        x = F.relu(x)
    return x


def original_unet(state, x, depth=4):
    """Sigmoid maps of the original U-Net (eval mode) computed from `state`."""
    x = _double(state, "firstConvolution.conv", x)
    skips = [x]
    for level in range(depth - 1):
        x = _double(state, f"contractingPath.{level}.conv.1.conv", F.max_pool2d(x, 2))
        skips.append(x)
    for step in range(depth - 1):
        x = F.conv_transpose2d(x, state[f"expandingPath.{step}.expand.weight"],
                               state[f"expandingPath.{step}.expand.bias"], stride=2)
        x = torch.cat([x, skips[-2 - step]], dim=1)
        x = _double(state, f"expandingPath.{step}.conv.conv", x)
    return torch.sigmoid(F.conv2d(x, state["lastConv.weight"], state["lastConv.bias"]))
