"""The method's network: MICRA-Net itself, Grad-CAM maps of its eight layers, BatchNorm re-estimation.
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(__name__, submodules=['batchnorm', 'gradcam', 'network'])
