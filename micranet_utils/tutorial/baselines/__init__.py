"""Baselines MICRA-Net is compared with: U-Net, Mask R-CNN, Otsu and the Ilastik projects.

U-Net and Mask R-CNN are trained with pixel (instance) masks, Otsu needs no
training at all, and MICRA-Net only image-level labels: the comparison in
:mod:`micranet_utils.tutorial.comparison` weighs what each one costs to annotate
against how well it segments.
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(__name__, submodules=['common', 'ilastik', 'maskrcnn', 'otsu', 'unet'])
