"""The method's network: MICRA-Net itself, Grad-CAM maps of its eight layers, BatchNorm re-estimation,
and the torch-only network with Grad-CAM inside ``forward`` that the bioimage.io export ships.
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(__name__, submodules=['batchnorm', 'exported_maps', 'gradcam', 'network', 'tiled_gradcam'])
