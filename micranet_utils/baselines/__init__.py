"""Baselines MICRA-Net is compared with: U-Net, Mask R-CNN, Otsu and the Ilastik projects.

U-Net and Mask R-CNN are trained with pixel (instance) masks, Otsu needs no
training at all, and MICRA-Net only image-level labels: the comparison in
:mod:`micranet_utils.comparison` weighs what each one costs to annotate
against how well it segments.
"""

from .ilastik import extract_ilastik_project
from .otsu import otsu_masks
from .unet import UNet, load_unet, predict_unet, save_unet, train_unet

__all__ = ["UNet", "train_unet", "predict_unet", "save_unet", "load_unet", "otsu_masks",
           "extract_ilastik_project"]
