"""MICRA-Net: the small VGG-like classifier whose Grad-CAM maps segment.

The module and parameter names are those of the original implementation, so a
published state_dict loads with ``strict=True``. Two things differ, neither of
which touches a parameter:

* the global pooling is an *adaptive* max pool over the whole deepest feature
  map, so any input height and width works (the original fixes its kernel to
  ``size // 8`` and silently pools only part of larger inputs);
* the batch axis is kept for a batch of one (the original ``squeeze()`` drops
  it).

On a ``size x size`` input both networks compute exactly the same logits.
"""

from torch import nn
from torch.nn import functional as F

LAYERS = ("1a", "1b", "2a", "2b", "3a", "3b", "4a", "4b")
"""tuple of str: the eight convolutional layers Grad-CAM reads, input to output."""

_WIDTHS = (32, 32, 64, 64, 128, 128, 256, 256)
_POOL_AFTER = {"1b", "2b", "3b"}


class MICRANet(nn.Module):
    """The MICRA-Net classifier.

    Eight 3x3 convolutions (each followed by batch normalisation and ReLU),
    max-pooling by 2 after layers 1b, 2b and 3b, a global max pool, dropout
    (p = 0.5) and one linear layer giving one logit per class.

    Parameters
    ----------
    num_classes : int
        Number of image-level classes (one sigmoid each, multi-label).
    in_channels : int, optional
        Number of input channels (1 for the grey-level data sets, 3 for RGB).

    Notes
    -----
    Input: float tensor of shape (N, in_channels, H, W), any H, W >= 8.
    Output: logits of shape (N, num_classes), before the sigmoid.

    :meth:`forward_with_activations` also returns the eight post-ReLU
    activations, which is what Grad-CAM needs.

    Examples
    --------
    >>> model = MICRANet(num_classes=2).eval()
    >>> model(torch.zeros(1, 1, 64, 96)).shape
    torch.Size([1, 2])
    """

    def __init__(self, num_classes, in_channels=1):
        super().__init__()
        if int(num_classes) < 1 or int(in_channels) < 1:
            raise ValueError(
                f"num_classes and in_channels must be >= 1, got {num_classes} and {in_channels}")
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.maxpool = nn.MaxPool2d(kernel_size=2)
        previous = self.in_channels
        for name, width in zip(LAYERS, _WIDTHS):
            setattr(self, f"conv{name}", nn.Conv2d(previous, width, kernel_size=3, padding=1))
            setattr(self, f"bnorm{name}", nn.BatchNorm2d(width))
            previous = width
        self.global_pool = nn.AdaptiveMaxPool2d(1)
        self.dropout = nn.Dropout(p=0.5)
        self.linear1 = nn.Linear(previous, self.num_classes)

    def _check_input(self, x):
        if x.ndim != 4:
            raise ValueError(f"expected a batch of shape (N, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"input has {x.shape[1]} channel(s); this MICRA-Net expects {self.in_channels}")
        if min(x.shape[-2:]) < 8:
            raise ValueError(f"input is {x.shape[-2]}x{x.shape[-1]} pixels; MICRA-Net needs at least 8x8")

    def forward_with_activations(self, x):
        """Forward pass that also returns the eight post-ReLU activations.

        Parameters
        ----------
        x : Tensor, shape (N, in_channels, H, W)

        Returns
        -------
        logits : Tensor, shape (N, num_classes)
        activations : list of 8 Tensor
            Layer ``l`` has shape (N, K_l, H // s_l, W // s_l) with
            s = 1, 1, 2, 2, 4, 4, 8, 8 (floor division, as max pooling does).
        """
        self._check_input(x)
        activations = []
        for name in LAYERS:
            x = F.relu(getattr(self, f"bnorm{name}")(getattr(self, f"conv{name}")(x)))
            activations.append(x)
            if name in _POOL_AFTER:
                x = self.maxpool(x)
        x = self.global_pool(x).flatten(1)
        return self.linear1(self.dropout(x)), activations

    def forward(self, x):
        """Logits of shape (N, num_classes) for a batch of shape (N, C, H, W)."""
        return self.forward_with_activations(x)[0]


def count_parameters(model, trainable_only=True):
    """Number of (trainable) parameters of `model`, an int."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
