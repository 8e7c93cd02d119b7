"""A plain re-creation of the original MICRA-Net forward pass, for equality tests.

Written for this project from the published description (reference §2: eight
3x3 convolutions, each followed by BatchNorm and ReLU, 2x2 max-pooling after
1b, 2b and 3b; fixed global max-pool kernel ``size // 8`` and ``squeeze()``,
which drops the batch axis for batch 1). It takes its weights from one of our
models, so both compute from the same numbers, but none of its code.
"""

from torch.nn import functional as F

ORDER = ("1a", "1b", "2a", "2b", "3a", "3b", "4a", "4b")


def original_activations(state, x):
    """The eight post-ReLU activations (1a ... 4b) of the original network, in eval mode.

    Parameters
    ----------
    state : dict of str to Tensor
        A MICRA-Net state_dict (tensors that require grad give activations that do).
    x : Tensor, shape (N, C, H, W)

    Returns
    -------
    list of 8 Tensor
    """
    activations = []
    for name in ORDER:
        x = F.conv2d(x, state[f"conv{name}.weight"], state[f"conv{name}.bias"], padding=1)
        x = F.batch_norm(x, state[f"bnorm{name}.running_mean"], state[f"bnorm{name}.running_var"],
                         state[f"bnorm{name}.weight"], state[f"bnorm{name}.bias"], training=False, eps=1e-5)
        x = F.relu(x)
        activations.append(x)
        if name in ("1b", "2b", "3b"):
            x = F.max_pool2d(x, 2)
    return activations


def original_logits(state, x, size):
    """Logits as the original network computes them, in eval mode.

    Parameters
    ----------
    state : dict of str to Tensor
        A MICRA-Net state_dict.
    x : Tensor, shape (N, C, size, size)
    size : int
        The ``size`` the original was built with.
    """
    x = F.max_pool2d(original_activations(state, x)[-1], size // 8).squeeze()
    return F.linear(x, state["linear1.weight"], state["linear1.bias"])
