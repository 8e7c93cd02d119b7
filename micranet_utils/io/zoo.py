"""The published ModelZoo HDF5 format: ``load_zoo``, ``read_group`` and ``save_zoo``.

Layout (as written by the original training script)::

    file.hdf5
    └── MICRANet                    group (other architectures: "UNet", "MaskRCNN", ...)
        ├── attrs["trainer_params"] JSON text: size, model_params.{num_classes, num_input_images}, ...
        ├── attrs["class_thresholds"]  optional, one probability threshold per class
        └── <model name>            group, e.g. "20190401-101112_42"
            └── <state_dict key>    one dataset per key ("conv1a.weight", ...)

Only :mod:`h5py` is used: nothing is ever unpickled.
"""

import datetime
import json
import numbers
import shutil
from pathlib import Path

import h5py
import numpy as np
import torch

from ..base.errors import ZooError
from ..base.files import atomic_path
from ..model.network import MICRANet
from .hdf5 import open_hdf5

DEFAULT_GROUP = "MICRANet"


def open_zoo(path):
    """Open a zoo file read-only with h5py, or raise :class:`ZooError` saying why not.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    h5py.File
        Use it as a context manager (``with open_zoo(path) as file:``).

    Raises
    ------
    ZooError
        No such file, a folder or FIFO, an empty file, not readable as HDF5
        (truncated, another format), or anything that reaches outside the file
        (see :mod:`micranet_utils.io.hdf5`), naming the file.
    """
    return open_hdf5(path, ZooError, "model file")


def _pick(names, what, path, wanted):
    if wanted is not None:
        if wanted not in names:
            raise ZooError(f"{path}: no {what} named {wanted!r}; available: {', '.join(names) or 'none'}")
        return wanted
    if len(names) == 1:
        return names[0]
    if not names:
        raise ZooError(f"{path}: contains no {what}")
    raise ZooError(f"{path}: holds {len(names)} {what}s ({', '.join(names)}); choose one with name=")


def _parse_params(path, group):
    raw = group.attrs.get("trainer_params")
    if raw is None:
        raise ZooError(f"{path}: group {group.name!r} has no 'trainer_params' attribute")
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    try:
        params = json.loads(str(raw))
    except json.JSONDecodeError as err:
        raise ZooError(f"{path}: trainer_params of {group.name!r} is not valid JSON ({err})") from None
    if not isinstance(params, dict):
        raise ZooError(f"{path}: trainer_params of {group.name!r} is not a JSON object")
    if "class_thresholds" in group.attrs:
        params["class_thresholds"] = np.asarray(group.attrs["class_thresholds"]).tolist()
    _check_params(path, group.name, params)
    return params


def _check_params(path, where, params):
    """Refuse trainer_params whose model settings or class names cannot be right."""
    nested = params.get("model_params") or {}
    if not isinstance(nested, dict):
        raise ZooError(f"{path}: trainer_params of {where!r}: model_params is not a JSON object")
    for key in ("num_classes", "num_input_images", "size"):
        for source, value in (("", params.get(key)), ("model_params.", nested.get(key))):
            integral = isinstance(value, numbers.Real) and not isinstance(value, bool) \
                and float(value).is_integer()
            if value is not None and not (integral and value > 0):
                raise ZooError(f"{path}: trainer_params of {where!r}: {source}{key} is {value!r}, "
                               "expected a positive whole number")
    names = params.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise ZooError(f"{path}: trainer_params of {where!r}: class_names is {names!r}, "
                       "expected a list of strings")


def model_settings(params):
    """Read ``num_classes``, ``in_channels`` and ``size`` from trainer_params.

    The keys may sit at the top level (CTC, EM, P. vivax zoos) or under
    ``model_params`` (Actin); ``num_input_images`` is the original's name
    for the number of input channels.

    Returns
    -------
    dict
        ``{"num_classes": int or None, "in_channels": int or None, "size": int or None}``
    """
    nested = params.get("model_params") or {}

    def get(key):
        value = nested.get(key, params.get(key))
        return None if value is None else int(value)

    return {"num_classes": get("num_classes"), "in_channels": get("num_input_images"),
            "size": get("size")}


def list_models(path, group=None):
    """Names of the models stored in a zoo file.

    Returns
    -------
    dict of str to list of str
        Architecture group name -> model names inside it.
    """
    with open_zoo(path) as file:
        groups = [group] if group else list(file.keys())
        return {g: list(file[g].keys()) for g in groups if isinstance(file.get(g), h5py.Group)}


def _weights(path, node):
    """The datasets of a model group, by key (metadata only; nothing is read)."""
    datasets = {}
    for key, item in node.items():
        if isinstance(item, h5py.Group):
            raise ZooError(
                f"{path}: {node.name!r} holds sub-groups ({', '.join(node.keys())}); it is an "
                f"ensemble, choose one member with name='{node.name.split('/')[-1]}/<member>'")
        if item.dtype.kind not in "biuf":
            raise ZooError(f"{path}: weight {item.name!r} has dtype {item.dtype}; expected real numbers")
        datasets[key] = item
    return datasets


def _read_state_dict(path, datasets):
    state = {}
    for key, item in datasets.items():
        try:
            value = np.array(item[()])
        except (OSError, TypeError, ValueError) as err:
            raise ZooError(f"{path}: cannot read weight {item.name!r} ({err})") from None
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ZooError(f"{path}: weight {item.name!r} contains NaN or infinite values")
        if key.endswith("running_var") and (value < 0).any():
            raise ZooError(f"{path}: weight {item.name!r} (a BatchNorm variance) has negative values")
        state[key] = torch.from_numpy(value)
    return state


def _check_weights(path, where, datasets, model):
    """Compare the stored weights' names, shapes and kinds with `model`'s, before reading them.

    A floating weight may be stored as float16, float32 or float64 (loaded as the
    model's float32); an integer buffer (``num_batches_tracked``) as any integer.
    Integer, boolean or complex numbers where the model has floats are refused.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in datasets]
    unexpected = [k for k in datasets if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} weight(s): {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
        if unexpected:
            parts.append(f"unexpected key(s): {', '.join(unexpected[:6])}{' ...' if len(unexpected) > 6 else ''}")
        raise ZooError(f"{path}: {where} is not a MICRA-Net state_dict; " + "; ".join(parts))
    for key, value in expected.items():
        stored = datasets[key]
        if tuple(stored.shape) != tuple(value.shape):
            raise ZooError(f"{path}: {where}/{key} has shape {tuple(stored.shape)}, "
                           f"expected {tuple(value.shape)}")
        wanted = "f" if value.is_floating_point() else "iu"
        if stored.dtype.kind not in wanted:
            raise ZooError(f"{path}: {where}/{key} is stored as {stored.dtype}, expected "
                           f"{'floating-point numbers' if wanted == 'f' else 'integers'} ({value.dtype})")


def _read_model(path, name, group, build=None):
    """:func:`read_group`, plus the HDF5 path of the model read (for error messages).

    With `build`, ``build(params, datasets, where)`` makes the model from the
    settings and the weights' metadata and checks them before any weight is
    read; it is returned in place of the HDF5 path.
    """
    with open_zoo(path) as file:
        if group is None:
            candidates = [g for g in file.keys() if g.startswith(DEFAULT_GROUP)]
            group = DEFAULT_GROUP if DEFAULT_GROUP in file else _pick(candidates, "MICRANet group", path, None)
        if group not in file or not isinstance(file[group], h5py.Group):
            raise ZooError(f"{path}: no group {group!r}; groups in the file: {', '.join(file.keys()) or 'none'}")
        arch = file[group]
        params = _parse_params(path, arch)
        if name is not None and "/" in name:
            if name not in arch:
                raise ZooError(f"{path}: no model {name!r} in group {group!r}")
            node = arch[name]
        else:
            node = arch[_pick(list(arch.keys()), "model", path, name)]
        if not isinstance(node, h5py.Group):
            raise ZooError(f"{path}: {node.name!r} is a dataset, expected a group of weights")
        datasets = _weights(path, node)
        built = build(params, datasets, node.name) if build else node.name
        return _read_state_dict(path, datasets), params, built


def read_group(path, name=None, group=None):
    """The weights and trainer_params of one model of a zoo file, without building a model.

    What :func:`load_zoo` reads, for any architecture group (``"UNet"``,
    ``"MaskRCNN"``, ...): the caller builds the network and loads the weights.

    Parameters
    ----------
    path : str or Path
        The zoo file.
    name : str, optional
        Model inside the group; ``None`` picks the only one. An ensemble member
        is named ``"<model>/<fold>"``.
    group : str, optional
        Architecture group. ``None`` picks ``"MICRANet"``, or the only group whose
        name starts with ``"MICRANet"``.

    Returns
    -------
    state_dict : dict of str to Tensor
        One tensor per stored weight, in the dtype and shape stored.
    params : dict
        The parsed ``trainer_params`` (plus ``class_thresholds`` when stored).

    Raises
    ------
    ZooError
        Unreadable file, missing group or ``trainer_params``, no such model, or
        several models and no `name`.

    Examples
    --------
    >>> state, params = read_group("zoo.hdf5", group="UNet")    # doctest: +SKIP
    >>> unet.load_state_dict(state, strict=True)                 # doctest: +SKIP
    """
    state, params, _ = _read_model(path, name, group)
    return state, params


def load_zoo(path, name=None, group=None, device="cpu"):
    """Load a MICRA-Net model from a ModelZoo HDF5 file.

    Parameters
    ----------
    path : str or Path
        The zoo file (published, e.g. ``ActinModelZoo.hdf5``, or written by :func:`save_zoo`).
    name : str, optional
        Model inside the group. ``None`` picks the only one, and fails listing the
        names when there are several. For ensembles (P. vivax ``MICRANet-finetuned``)
        name one member as ``"<model>/<fold>"``.
    group : str, optional
        Architecture group. ``None`` picks ``"MICRANet"``, or the only group whose
        name starts with ``"MICRANet"``.
    device : str or torch.device, optional
        Where to put the model.

    Returns
    -------
    model : MICRANet
        In ``eval()`` mode, weights loaded with ``strict=True``.
    params : dict
        The parsed ``trainer_params`` (plus ``class_thresholds`` when stored).

    Raises
    ------
    ZooError
        Naming the file and the problem: not HDF5, truncated, missing group or
        attribute, wrong or misshapen weights.
    """
    state, params, model = _read_model(path, name, group, build=lambda *args: _build(path, *args))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), params


def _build(path, params, datasets, where):
    """The MICRA-Net the settings and stored weight shapes describe, checked against them."""
    settings = model_settings(params)
    if settings["num_classes"] is None and "linear1.weight" in datasets:
        settings["num_classes"] = datasets["linear1.weight"].shape[0]
    if settings["in_channels"] is None and "conv1a.weight" in datasets:
        settings["in_channels"] = datasets["conv1a.weight"].shape[1]
    if settings["num_classes"] is None or settings["in_channels"] is None:
        raise ZooError(f"{path}: trainer_params gives no num_classes/num_input_images and the weights "
                       "cannot tell them")
    model = MICRANet(settings["num_classes"], settings["in_channels"])
    _check_weights(path, where, datasets, model)
    return model


def default_model_name(seed=42, when=None):
    """The original's naming scheme: ``"%Y%m%d-%H%M%S_<seed>"``."""
    when = when or datetime.datetime.now()
    return f"{when:%Y%m%d-%H%M%S}_{seed}"


def zoo_params(model, size, **extra):
    """trainer_params for `model` in the published Actin layout.

    ``size`` at the top level, ``model_params.{num_classes, num_input_images}``
    nested (never duplicated at the top, which would break the original's
    ``MICRANet(**params, **params["model_params"])``).
    """
    params = dict(extra)
    for key in ("num_classes", "num_input_images", "in_channels"):
        params.pop(key, None)
    params["size"] = int(size)
    params["model_params"] = {**(params.get("model_params") or {}),
                              "num_classes": int(model.num_classes),
                              "num_input_images": int(model.in_channels)}
    return params


def save_zoo(path, model, params, name=None, group=DEFAULT_GROUP, class_thresholds=None):
    """Write `model` into a ModelZoo HDF5 file, atomically.

    Like the original, the architecture `group` is replaced (other groups of an
    existing file are kept). The new file is written beside the old one and
    moved into place at the end, so a crash leaves the previous file intact.

    Parameters
    ----------
    path : str or Path
    model : MICRANet
    params : dict
        trainer_params; must give ``size``; ``model_params`` is filled from the model.
    name : str, optional
        Model name; default ``"%Y%m%d-%H%M%S_<seed>"``.
    group : str, optional
    class_thresholds : sequence of float, optional
        Stored as the group attribute of the same name.

    Returns
    -------
    Path
    """
    path = Path(path)
    params = dict(params)
    if "size" not in params and "size" not in (params.get("model_params") or {}):
        raise ValueError("params must contain 'size' (the crop size the model was trained on)")
    params = zoo_params(model, params.pop("size"), **params)
    name = name or default_model_name(params.get("seed", 42))
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        if path.exists():
            shutil.copyfile(path, tmp)
        with h5py.File(tmp, "a") as file:
            if group in file:
                del file[group]
            arch = file.create_group(group)
            arch.attrs["trainer_params"] = json.dumps(params, sort_keys=True, indent=4, default=str)
            if class_thresholds is not None:
                arch.attrs["class_thresholds"] = np.asarray(class_thresholds, dtype=np.float64)
            node = arch.create_group(name)
            for key, value in state.items():
                node.create_dataset(key, data=value)
    return path
