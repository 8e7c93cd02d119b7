"""Mask R-CNN: the instance-supervised baseline, from torchvision.

The original (Actin "baseline/MaskRCNN") used torchvision's
``maskrcnn_resnet50_fpn`` without any pretrained weights, a 1-channel 7x7
first convolution, 3 classes (background, rings, fibers), images of 256
pixels (``min_size = max_size = 256``), the training set's intensity mean and
standard deviation (0.0110, 0.0212), Adam at 1e-4, batch 32 and 700 epochs,
on the crops holding at least 1 % ring or fiber pixels. Objects narrower or
shorter than 4 pixels were dropped. At inference, detections with a score of
at least 0.5 paint their mask (probability >= 0.5) into their class.

:func:`build_maskrcnn` gives that configuration with ``backbone="resnet50"``
(:data:`ORIGINAL`); the tutorial trains a *small* one by default
(:data:`SMALL`: ResNet-18 FPN, fewer proposals) so that it learns something
in minutes on a laptop CPU. No weights are downloaded: ``weights=None``.
"""

import numpy as np
import torch
from torch.utils.data import Dataset

from ...io.zoo import read_group, save_zoo
from . import common

GROUP = "MaskRCNN"
"""str: HDF5 group of the Mask R-CNN weights in a model zoo."""

ORIGINAL = {"backbone": "resnet50", "fpn_channels": 256, "representation_size": 1024,
            "mask_layers": [256, 256, 256, 256], "anchor_sizes": [32, 64, 128, 256, 512],
            "min_size": 256, "max_size": 256, "image_mean": [0.0110], "image_std": [0.0212]}
"""dict: the published Actin configuration (torchvision's ``maskrcnn_resnet50_fpn``)."""

SMALL = {"backbone": "resnet18", "fpn_channels": 64, "representation_size": 256,
         "mask_layers": [64, 64], "anchor_sizes": [8, 16, 32, 64, 128],
         "min_size": 256, "max_size": 256,
         "rpn_pre_nms_top_n_train": 600, "rpn_post_nms_top_n_train": 300,
         "rpn_pre_nms_top_n_test": 300, "rpn_post_nms_top_n_test": 150,
         "box_batch_size_per_image": 128, "box_detections_per_img": 60}
"""dict: the tutorial's small configuration for CPU training (narrower FPN and heads,
anchors sized for objects of 8 to 128 pixels, fewer proposals)."""


def build_maskrcnn(num_classes=2, in_channels=1, backbone="resnet18", fpn_channels=256,
                   representation_size=1024, mask_layers=(256, 256, 256, 256),
                   anchor_sizes=(32, 64, 128, 256, 512), image_mean=None, image_std=None,
                   **options):
    """A randomly initialised Mask R-CNN for `in_channels`-channel images.

    With :data:`ORIGINAL` this is torchvision's ``maskrcnn_resnet50_fpn(weights=None,
    weights_backbone=None)`` with a 1-channel first convolution, parameter names
    included.

    Parameters
    ----------
    num_classes : int
        Structure classes, *without* the background (2 for Actin).
    in_channels : int
        Input channels; the backbone's first convolution is a 7x7/2
        convolution with this many inputs, as in the original.
    backbone : str
        A torchvision ResNet name (``"resnet18"``, ``"resnet50"``, ...), with an FPN.
    fpn_channels : int
        Channels of the feature pyramid (torchvision: 256).
    representation_size : int
        Width of the two fully connected layers of the box head (torchvision: 1024).
    mask_layers : sequence of int
        Channels of the 3x3 convolutions of the mask head (torchvision: four of 256).
    anchor_sizes : sequence of 5 int
        Anchor side, in pixels, on each pyramid level (aspect ratios 0.5, 1, 2).
    image_mean, image_std : list of float, optional
        Intensity normalisation (one value per channel); default 0 and 1.
    **options
        Passed to :class:`torchvision.models.detection.MaskRCNN` (``min_size``,
        ``rpn_pre_nms_top_n_train``, ...).

    Returns
    -------
    torchvision.models.detection.MaskRCNN
        With attributes ``num_classes`` (including background), ``in_channels``
        and ``config`` (JSON-serialisable arguments, for the zoo).
    """
    from torchvision.models import resnet
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    # no pretrained weights: plain trainable BatchNorm, as the original without pretraining
    trunk = getattr(resnet, backbone)(weights=None, norm_layer=torch.nn.BatchNorm2d)
    trunk.conv1 = torch.nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    widths = [trunk.inplanes // 8 * 2 ** level for level in range(4)]
    body = BackboneWithFPN(trunk, {f"layer{k + 1}": str(k) for k in range(4)}, widths, fpn_channels,
                           extra_blocks=LastLevelMaxPool())
    anchors = AnchorGenerator(tuple((int(a),) for a in anchor_sizes), ((0.5, 1.0, 2.0),) * len(anchor_sizes))
    mask_layers = [int(c) for c in mask_layers]
    image_mean = list(image_mean) if image_mean is not None else [0.0] * in_channels
    image_std = list(image_std) if image_std is not None else [1.0] * in_channels
    model = MaskRCNN(
        body, rpn_anchor_generator=anchors,
        box_head=TwoMLPHead(fpn_channels * 7 * 7, representation_size),
        box_predictor=FastRCNNPredictor(representation_size, num_classes + 1),
        mask_head=MaskRCNNHeads(fpn_channels, mask_layers, 1),
        mask_predictor=MaskRCNNPredictor(mask_layers[-1], mask_layers[-1], num_classes + 1),
        image_mean=image_mean, image_std=image_std, **options)
    model.num_classes, model.in_channels = num_classes + 1, in_channels
    model.config = {"num_classes": num_classes + 1, "num_input_images": in_channels,
                    "backbone": backbone, "fpn_channels": fpn_channels,
                    "representation_size": representation_size, "mask_layers": mask_layers,
                    "anchor_sizes": [int(a) for a in anchor_sizes],
                    "image_mean": image_mean, "image_std": image_std, **options}
    return model


def instance_targets(labels, min_side=4):
    """Mask R-CNN targets from instance-labelled class channels.

    Parameters
    ----------
    labels : ndarray of int, shape (C, H, W)
        One channel per class; 0 is background, each object has its own id.
    min_side : int
        Objects whose box is narrower or shorter than this (``x_max - x_min``,
        pixels) are dropped, as in the original.

    Returns
    -------
    dict
        ``boxes`` float32 (K, 4) as (x_min, y_min, x_max, y_max), ``labels``
        int64 (K,) = class index + 1, ``masks`` uint8 (K, H, W).
    """
    boxes, classes, masks = [], [], []
    for channel, plane in enumerate(np.asarray(labels)):
        for object_id in np.unique(plane):
            if object_id == 0:
                continue
            mask = plane == object_id
            rows, cols = np.nonzero(mask)
            if cols.max() - cols.min() < min_side or rows.max() - rows.min() < min_side:
                continue
            boxes.append([cols.min(), rows.min(), cols.max(), rows.max()])
            classes.append(channel + 1)
            masks.append(mask)
    height, width = np.asarray(labels).shape[-2:]
    return {"boxes": torch.as_tensor(np.reshape(boxes, (-1, 4)), dtype=torch.float32),
            "labels": torch.as_tensor(classes, dtype=torch.int64),
            "masks": torch.as_tensor(np.reshape(masks, (-1, height, width)), dtype=torch.uint8)}


class InstanceCrops(Dataset):
    """Crops of a :class:`~micranet_utils.io.training_files.CropDataset` as Mask R-CNN samples.

    Only crops where rings and fibers cover at least `min_fraction` of the
    pixels are kept (the original's 1 % rule). Flips (each with probability
    `augment`) move image and instances together.

    Parameters
    ----------
    crops : CropDataset
    min_fraction : float
    augment : float
    seed : int

    Items: image Tensor (C_in, S, S) float32 and the dict of :func:`instance_targets`.
    """

    def __init__(self, crops, min_fraction=0.01, augment=0.0, seed=0):
        self.crops, self.augment = crops, float(augment)
        self.rng = np.random.default_rng(seed)
        area = crops.size * crops.size
        self.indices = [index for index in range(len(crops))
                        if (crops.read_crop(index)[1] > 0).any(axis=0).sum() >= min_fraction * area]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, item):
        image, labels = self.crops.read_crop(self.indices[item])
        if self.augment > 0 and self.rng.random() < self.augment:
            image, labels = image[:, ::-1], labels[..., ::-1]
        if self.augment > 0 and self.rng.random() < self.augment:
            image, labels = image[::-1], labels[..., ::-1, :]
        image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)[None])
        return image, instance_targets(np.ascontiguousarray(labels))


def collate(batch):
    """Keep images and targets as lists (detection models take lists)."""
    return tuple(zip(*batch))


def train_maskrcnn(train_data, valid_data=None, epochs=10, batch_size=4, lr=1e-4, seed=0,
                   config=None, device="cpu", max_seconds=None, progress=True):
    """Train a Mask R-CNN from scratch on instance crops.

    Parameters
    ----------
    train_data, valid_data : InstanceCrops (or any Dataset of (image, target dict))
    epochs, batch_size, lr, seed : as :func:`~micranet_utils.tutorial.baselines.unet.train_unet`
        (original: 700 epochs, batch 32, Adam 1e-4).
    config : dict, optional
        :func:`build_maskrcnn` arguments; default :data:`SMALL` with the
        training crops' intensity statistics.
    device : str or torch.device
    max_seconds : float, optional
    progress : bool

    Returns
    -------
    model : MaskRCNN
        Eval mode, best epoch by validation loss (computed in train mode with
        BatchNorm statistics frozen).
    info : dict
        As :func:`~micranet_utils.tutorial.baselines.common.fit`, plus ``params``.
    """
    torch.manual_seed(seed)
    first_image, _ = train_data[0]
    config = dict(SMALL if config is None else config)
    if "image_mean" not in config:
        images = torch.stack([train_data[i][0] for i in range(min(len(train_data), 100))])
        config["image_mean"] = images.mean(dim=(0, 2, 3)).tolist()
        config["image_std"] = images.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()
    model = build_maskrcnn(in_channels=first_image.shape[0], **config)

    def loss_fn(model, batch, device):
        images, targets = batch
        images = [image.to(device) for image in images]
        targets = [{key: value.to(device) for key, value in target.items()} for target in targets]
        return sum(model(images, targets).values())

    model, info = common.fit(model, loss_fn, train_data, valid_data, epochs=epochs,
                             batch_size=batch_size, lr=lr, seed=seed, device=device,
                             max_seconds=max_seconds, progress=progress, desc="Mask R-CNN",
                             collate_fn=collate, valid_in_train_mode=True, bn_forward=backbone_forward)
    info["params"] = common.trainer_params(
        "maskrcnn", model.config, size=int(first_image.shape[-1]), lr=lr, epochs=epochs,
        batch_size=batch_size, seed=seed, info=info)
    return model, info


def predict_maskrcnn(model, images, score_threshold=0.5, mask_threshold=0.5, batch_size=8,
                     device="cpu"):
    """Semantic masks and instances predicted by a Mask R-CNN.

    Parameters
    ----------
    model : MaskRCNN
    images : ndarray of float, shape (N, C_in, H, W)
    score_threshold : float
        Detections scoring below are ignored (original: 0.5).
    mask_threshold : float
        Mask probability above which a pixel belongs to the object (original: 0.5).
    batch_size : int
    device : str or torch.device

    Returns
    -------
    masks : ndarray of bool, shape (N, C, H, W)
        Union of the kept instances of each class (C = num_classes - 1, no background).
    instances : list of dict
        Per image: ``labels`` (K,) class index (0-based), ``scores`` (K,),
        ``masks`` (K, H, W) bool.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {images.shape}")
    num_classes = model.num_classes - 1
    masks = np.zeros((len(images), num_classes) + images.shape[2:], bool)
    instances = []
    model = model.to(device).eval()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            chunk = [torch.from_numpy(image).to(device) for image in images[start:start + batch_size]]
            for offset, output in enumerate(model(chunk)):
                keep = output["scores"] >= score_threshold
                labels = output["labels"][keep].cpu().numpy() - 1
                objects = output["masks"][keep, 0].cpu().numpy() >= mask_threshold
                for label, obj in zip(labels, objects):
                    masks[start + offset, label] |= obj
                instances.append({"labels": labels, "scores": output["scores"][keep].cpu().numpy(),
                                  "masks": objects})
    return masks, instances


def masks_from_instances(instances, shape, num_classes, score_threshold=0.5):
    """Semantic masks from the instances of :func:`predict_maskrcnn`, keeping those scoring enough.

    Parameters
    ----------
    instances : list of dict
        Per image: ``labels`` (K,), ``scores`` (K,), ``masks`` (K, H, W) bool.
    shape : (int, int)
        (H, W).
    num_classes : int
        Classes without the background.
    score_threshold : float

    Returns
    -------
    ndarray of bool, shape (N, num_classes, H, W)
    """
    masks = np.zeros((len(instances), num_classes) + tuple(shape), bool)
    for n, found in enumerate(instances):
        for label, score, obj in zip(found["labels"], found["scores"], found["masks"]):
            if score >= score_threshold:
                masks[n, label] |= obj
    return masks


def save_maskrcnn(path, model, params, name=None):
    """Write a Mask R-CNN into group ``"MaskRCNN"`` of a model-zoo file (atomically)."""
    params = dict(params)
    params["model_params"] = {**(params.get("model_params") or {}), **model.config}
    return save_zoo(path, model, params, name=name, group=GROUP)


def load_maskrcnn(path, name=None, group=GROUP, device="cpu"):
    """Load a Mask R-CNN written by :func:`save_maskrcnn` (or in the original's layout).

    The original's zoo records ``pretrained``/``pretrained_backbone`` and no
    backbone name; ResNet-50 is assumed then.

    Raises
    ------
    ZooError
        When the weights do not fit the recorded configuration.
    """
    state, params = read_group(path, name, group)
    config = dict(params.get("model_params") or {})
    for key in ("pretrained", "pretrained_backbone", "weights", "weights_backbone"):
        config.pop(key, None)
    num_classes = int(config.pop("num_classes", 3)) - 1
    in_channels = int(config.pop("num_input_images", 1))
    config.setdefault("backbone", "resnet50")
    model = build_maskrcnn(num_classes=num_classes, in_channels=in_channels, **config)
    common.load_weights(model, state, path, group, f"Mask R-CNN weights for {config['backbone']}")
    return model.to(device).eval(), params


def backbone_forward(model, batch):
    """Run a Mask R-CNN's normalisation and backbone (where its BatchNorms are) on a batch.

    For :func:`micranet_utils.model.batchnorm.recalibrate_batchnorm`.
    """
    images, _ = model.transform(list(batch))
    return model.backbone(images.tensors)
