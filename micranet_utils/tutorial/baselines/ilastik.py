"""The published Ilastik baselines: turning a zoo group back into an ``.ilp`` project.

The authors trained Ilastik pixel classifiers for Actin and the Cell Tracking
Challenge and shipped them inside HDF5 "model zoos" (group ``Ilastik`` of
``ActinModelZoo-ilastik.hdf5``, ``Ilastik-FS`` of ``CTCModelZoo-ilastik.hdf5``).
An Ilastik project is itself an HDF5 file, so the group's members are copied,
unchanged, to the top level of a new file which Ilastik then opens.

Running the projects needs the Ilastik application (distributed as a binary
or conda package, not on PyPI), so the tutorial does not run them; this module
only recovers the project files.
"""

from pathlib import Path

import h5py

from ...base.errors import ZooError
from ...base.files import atomic_path
from ...io.hdf5 import open_hdf5
from ...io.zoo import open_zoo

DEFAULT_GROUPS = ("Ilastik", "Ilastik-FS")
"""tuple of str: groups holding an Ilastik project in the published zoos (Actin, CTC)."""


def extract_ilastik_project(zoo_path, output, group=None):
    """Copy the Ilastik project stored in a zoo group into its own ``.ilp`` file.

    Parameters
    ----------
    zoo_path : str or Path
        Model-zoo HDF5 file holding the project.
    output : str or Path
        The ``.ilp`` file to write (atomically; replaced if it exists).
    group : str, optional
        Group to extract; by default the first of :data:`DEFAULT_GROUPS` present.

    Returns
    -------
    list of str
        Top-level keys of the written project (e.g. ``"Input Data"``,
        ``"PixelClassification"``, ``"ilastikVersion"``).

    Raises
    ------
    ZooError
        When the file is not HDF5 or holds no such group.
    """
    zoo_path, output = Path(zoo_path), Path(output)
    with open_zoo(zoo_path) as source:
        if group is None:
            present = [name for name in DEFAULT_GROUPS if name in source]
            if not present:
                raise ZooError(f"{zoo_path}: holds no Ilastik project (looked for groups "
                               f"{', '.join(DEFAULT_GROUPS)}; found {', '.join(source.keys()) or 'none'})")
            group = present[0]
        if not isinstance(source.get(group), h5py.Group):
            raise ZooError(f"{zoo_path}: no group {group!r}; groups in the file: "
                           f"{', '.join(source.keys()) or 'none'}")
        project = source[group]
        with atomic_path(output) as tmp:
            with h5py.File(tmp, "w") as target:
                for key, value in project.attrs.items():
                    target.attrs[key] = value
                for key in project:
                    source.copy(project[key], target, name=key)
    with open_hdf5(output, ZooError, "Ilastik project") as written:
        return list(written.keys())
