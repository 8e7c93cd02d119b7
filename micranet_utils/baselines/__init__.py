"""Baselines MICRA-Net is compared with: U-Net, Mask R-CNN, Otsu and the Ilastik projects.

U-Net and Mask R-CNN are trained with pixel (instance) masks, Otsu needs no
training at all, and MICRA-Net only image-level labels: the comparison in
:mod:`micranet_utils.comparison` weighs what each one costs to annotate
against how well it segments.
"""

from ..batchnorm import recalibrate_batchnorm
from .ilastik import extract_ilastik_project
from .maskrcnn import (build_maskrcnn, ensure_demo_maskrcnn, load_maskrcnn, predict_maskrcnn,
                       save_maskrcnn, train_maskrcnn)
from .otsu import otsu_masks
from .unet import UNet, ensure_demo_unet, load_unet, predict_unet, save_unet, train_unet

__all__ = ["UNet", "train_unet", "predict_unet", "save_unet", "load_unet", "ensure_demo_unet",
           "build_maskrcnn", "train_maskrcnn", "predict_maskrcnn", "save_maskrcnn", "load_maskrcnn",
           "ensure_demo_maskrcnn", "otsu_masks", "extract_ilastik_project", "recalibrate_batchnorm"]
