"""The five published MICRA-Net data sets as one table.

They share one network; they differ only in the number of input channels, the
classes, the crop size the network was trained on and the post-processing
recipe that turns Grad-CAM maps into masks, detections or counts.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    """What distinguishes one published MICRA-Net data set from another.

    Attributes
    ----------
    name : str
        Short name used throughout the package (``"actin"``, ``"ctc"``, ...).
    title : str
        Human-readable name.
    in_channels : int
        Number of input channels (``num_input_images`` in the original code).
    class_names : tuple of str
        One name per output of the classifier, in index order.
    crop_size : int
        Side, in pixels, of the square crops the published model was trained on.
    recipe : str
        Name of the post-processing recipe in :mod:`micranet_utils.analysis.recipes`.
    zoo_file : str or None
        Name of the published model-zoo file in ``models/``.
    zoo_group : str
        HDF5 group holding the MICRA-Net weights inside that zoo.
    """

    name: str
    title: str
    in_channels: int
    class_names: tuple
    crop_size: int
    recipe: str
    zoo_file: str = None
    zoo_group: str = "MICRANet"

    @property
    def num_classes(self):
        """Number of classes (length of :attr:`class_names`)."""
        return len(self.class_names)


DATASETS = {
    info.name: info
    for info in [
        DatasetInfo("actin", "F-actin in neurons (STED)", 1, ("rings", "fibers"), 256,
                    "actin", "ActinModelZoo.hdf5"),
        # The code names no classes; they are processed in pairs (0,1), (2,3), (4,5).
        DatasetInfo("ctc", "Cell Tracking Challenge (2D)", 1,
                    tuple(f"class{i}" for i in range(6)), 512, "ctc", "CTCModelZoo.hdf5"),
        DatasetInfo("em", "Electron microscopy", 1, ("structure",), 512, "em",
                    "EMModelZoo.hdf5", "MICRANet-1:5"),
        DatasetInfo("mnist", "MNIST digit canvases", 1, tuple(str(d) for d in range(10)), 256,
                    "mnist", None),
        DatasetInfo("pvivax", "P. vivax blood smears", 3, ("parasite",), 512, "pvivax",
                    "PVivaxModelZoo.hdf5", "MICRANet-finetuned"),
    ]
}
"""dict of str to DatasetInfo: the published data sets, by short name."""


def get_dataset(name):
    """Return the :class:`DatasetInfo` called `name` (case-insensitive).

    Raises
    ------
    KeyError
        With the list of known names when `name` is unknown.
    """
    key = str(name).lower()
    if key not in DATASETS:
        raise KeyError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[key]
