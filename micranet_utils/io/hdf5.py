"""Opening an HDF5 file from someone else: only what is inside the file is ever read.

HDF5 can make a file read bytes from elsewhere: an *external link* names an
object of another file, a dataset with *external storage* keeps its bytes in
raw files beside it, a *virtual dataset* assembles other files' datasets.
Reading such a file would read whatever those names point to on this machine
(or fail with a traceback when they point nowhere), and a dataset can declare
far more bytes than the file holds. Every HDF5 file the package reads (model
zoos, checkpoints, training files, fold ensembles, Ilastik projects, demo
files) is opened with :func:`open_hdf5`, which walks the whole tree once, on
metadata only, and refuses:

* a path that is not a regular file (a folder, a FIFO, a device: h5py would
  block on a FIFO), an empty file, or one h5py cannot open;
* external links, external storage and virtual datasets;
* soft links whose target does not exist;
* a dataset declaring more bytes than
  :func:`~micranet_utils.io.limits.max_dataset_bytes` (100 GiB by default).
"""

import os
import stat
from pathlib import Path

import h5py
import numpy as np

from .limits import bytes_refused, max_dataset_bytes


def open_hdf5(path, error, what="HDF5 file"):
    """Open `path` read-only after checking it holds nothing that reaches outside it.

    Parameters
    ----------
    path : str or Path
    error : type
        The :class:`~micranet_utils.base.errors.MicranetError` subclass to raise
        (``ZooError`` for models, ``DatasetError`` for training files).
    what : str
        What the file should be, for the messages (``"model-zoo file"``).

    Returns
    -------
    h5py.File
        Open read-only; use it as a context manager.

    Raises
    ------
    error
        One line naming the file and the problem.
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except OSError as err:
        raise error(f"{path}: cannot open ({err.strerror or err})") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{path}: is a folder, expected a {what}")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path}: not a regular file (a FIFO, socket or device?); expected a {what}")
    if info.st_size == 0:
        raise error(f"{path}: empty file (0 bytes); expected a {what}")
    try:
        file = h5py.File(path, "r")
    except OSError as err:
        raise error(f"{path}: not a readable HDF5 file ({info.st_size} bytes; truncated or another "
                    f"format?): {_one_line(err)}") from None
    try:
        check_tree(file, path, error)
    except BaseException:
        file.close()
        raise
    return file


def check_tree(group, path, error):
    """Raise `error` if anything under `group` reaches outside the file or is too large.

    Walks every link once (hard links to an already seen group are not followed
    again, so cycles end); reads metadata only.
    """
    limit = max_dataset_bytes()
    seen = {group.id}
    pending = [group]
    while pending:
        current = pending.pop()
        for name in current:
            where = f"{current.name.rstrip('/')}/{name}"
            link = current.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise error(f"{path}: {where} is an external link to {link.filename}:{link.path}; "
                            "refused (only what is inside the file is read)")
            if isinstance(link, h5py.SoftLink):
                if _follow(current, link.path, path, error, where) is None:
                    raise error(f"{path}: {where} is a soft link to {link.path}, which does not exist")
                continue  # its target is checked where its own hard link is
            item = current.get(name)
            if isinstance(item, h5py.Dataset):
                check_dataset(item, path, error, limit)
            elif isinstance(item, h5py.Group) and item.id not in seen:
                seen.add(item.id)
                pending.append(item)


def check_dataset(dataset, path, error, limit=None):
    """Raise `error` if `dataset` keeps its bytes outside the file or declares too many."""
    if dataset.is_virtual:
        raise error(f"{path}: {dataset.name} is a virtual dataset (its data live in other files); refused")
    if dataset.external:
        files = ", ".join(str(entry[0]) for entry in dataset.external)
        raise error(f"{path}: {dataset.name} keeps its data in external file(s) {files}; refused")
    declared = int(np.prod(dataset.shape or (), dtype=object)) * dataset.dtype.itemsize
    refused = bytes_refused(declared, max_dataset_bytes() if limit is None else limit)
    if refused:
        raise error(f"{path}: dataset {dataset.name} (shape {dataset.shape}, {dataset.dtype}) {refused}")


def _follow(group, target, path, error, where, depth=0):
    """The object a soft link's `target` names, or None; never opens another file.

    h5py would resolve the path itself, following an external link met on the
    way (and so open that other file): the path is followed link by link here.
    """
    node = group.file if target.startswith("/") else group
    for part in (p for p in target.split("/") if p and p != "."):
        link = node.get(part, getlink=True) if isinstance(node, h5py.Group) else None
        if link is None:
            return None
        if isinstance(link, h5py.ExternalLink):
            raise error(f"{path}: {where} is a soft link through the external link {node.name.rstrip('/')}/{part}; "
                        "refused (only what is inside the file is read)")
        if isinstance(link, h5py.SoftLink):
            node = _follow(node, link.path, path, error, where, depth + 1) if depth < 32 else None
            if node is None:
                return None
        else:
            node = node.get(part)
    return node


def _one_line(err):
    return " ".join(str(err).split()) or type(err).__name__
