"""Training checkpoints: a ModelZoo file plus everything needed to resume.

A run folder written by :func:`micranet_utils.train.runs.train` holds two
checkpoints, both ModelZoo HDF5 files in the published layout (so the
original code, :func:`~micranet_utils.io.zoo.load_zoo` and every lesson read
them as they read the published zoos):

``best.hdf5``
    the weights with the lowest validation loss so far;
``last.hdf5``
    the weights at the end of the latest finished epoch (or batch position),
    plus a ``training_state`` group::

        training_state
        ├── attrs["state"]      JSON: epoch, batch position, history, best loss,
        │                       scheduler, grad scaler, python and numpy RNG scalars
        ├── optimizer/
        │   ├── attrs["param_groups"]   JSON
        │   └── <param index>/<key>     one dataset per optimizer tensor
        └── rng/<name>          uint8 or uint32 arrays: torch, cuda, numpy, augment

Everything is HDF5 arrays and JSON text: nothing is ever pickled, so a
checkpoint from a stranger is safe to open. Every write is atomic (see
:mod:`micranet_utils.base.files`): a crash while saving leaves the previous file.

The run folder's other files are written here too: ``trainer_params.json``
(:func:`write_json`), ``history.csv`` (:func:`write_history`, read back with
:func:`read_history`) and ``history.png`` (:func:`plot_history`).
"""

import json
import random
from pathlib import Path

import h5py
import numpy as np
import torch

from ..base.errors import ZooError
from ..base.files import atomic_path
from .hdf5 import open_hdf5
from .zoo import save_zoo

STATE_GROUP = "training_state"


def save_checkpoint(path, model, params, name, state=None, optimizer=None, generators=None):
    """Write a ModelZoo checkpoint, with the training state when given.

    Parameters
    ----------
    path : str or Path
        Destination ``.hdf5`` file; replaced atomically.
    model : torch.nn.Module
        The MICRA-Net (unwrapped from DistributedDataParallel).
    params : dict
        trainer_params (JSON-able; must contain ``size``).
    name : str
        Model name inside the ``MICRANet`` group.
    state : dict, optional
        JSON-able resume state (epoch, position, history, scheduler ...).
        Without it, the file is a plain zoo (``best.hdf5``).
    optimizer : torch.optim.Optimizer, optional
        Its state goes to ``training_state/optimizer``.
    generators : dict of str to torch.Generator, optional
        Extra random generators to store (for instance the augmentation one).

    Returns
    -------
    Path
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.unlink()  # save_zoo would otherwise try to extend the empty placeholder
        save_zoo(tmp, model, params, name=name)
        if state is not None:
            with h5py.File(tmp, "a") as file:
                group = file.create_group(STATE_GROUP)
                _write_state(group, state, optimizer, generators or {})
    return path


def _write_state(group, state, optimizer, generators):
    state = dict(state)
    state["rng_python"] = _python_rng_to_json(random.getstate())
    numpy_name, keys, pos, has_gauss, cached = np.random.get_state()
    state["rng_numpy"] = {"name": numpy_name, "pos": int(pos), "has_gauss": int(has_gauss),
                          "cached_gaussian": float(cached)}
    group.attrs["state"] = json.dumps(state, allow_nan=True)
    rng = group.create_group("rng")
    rng.create_dataset("numpy", data=np.asarray(keys, dtype=np.uint32))
    rng.create_dataset("torch", data=torch.get_rng_state().numpy())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng.create_dataset("cuda", data=np.stack([s.numpy() for s in torch.cuda.get_rng_state_all()]))
    for key, generator in generators.items():
        rng.create_dataset(key, data=generator.get_state().numpy())
    if optimizer is not None:
        _write_optimizer(group.create_group("optimizer"), optimizer.state_dict())


def _python_rng_to_json(rng_state):
    version, internal, gauss = rng_state
    return {"version": version, "internal": list(internal), "gauss_next": gauss}


def _write_optimizer(group, optimizer_state):
    group.attrs["param_groups"] = json.dumps(optimizer_state["param_groups"], default=_jsonable)
    for index, values in optimizer_state["state"].items():
        node = group.create_group(str(index))
        for key, value in values.items():
            if torch.is_tensor(value):
                node.create_dataset(key, data=value.detach().cpu().numpy())
            else:
                node.attrs[key] = json.dumps(value, default=_jsonable)


def _jsonable(value):
    if isinstance(value, (tuple, set)):
        return list(value)
    if torch.is_tensor(value) or isinstance(value, np.ndarray):
        return np.asarray(value).tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


def read_training_state(path):
    """Read the resume state of a ``last.hdf5`` checkpoint.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    state : dict
        The JSON state, plus ``"rng"`` (dict of name to ndarray) and
        ``"optimizer"`` (a state_dict ready for ``optimizer.load_state_dict``).

    Raises
    ------
    ZooError
        When the file is not a checkpoint with a training state.
    """
    with open_hdf5(path, ZooError, "checkpoint") as file:
        if STATE_GROUP not in file:
            raise ZooError(f"{path}: has no '{STATE_GROUP}' group; it is a model, not a resumable "
                           "checkpoint (resume from a run's last.hdf5)")
        group = file[STATE_GROUP]
        try:
            state = json.loads(group.attrs["state"])
            state["rng"] = {key: np.array(value[()]) for key, value in group["rng"].items()}
            if "optimizer" in group:
                state["optimizer"] = _read_optimizer(group["optimizer"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:     # damaged JSON, missing parts
            raise ZooError(f"{path}: the training state is damaged ({type(err).__name__}: {str(err)[:100]}); "
                           "start a new run from best.hdf5 with --restore-from") from None
    return state


def _read_optimizer(group):
    param_groups = json.loads(group.attrs["param_groups"])
    for param_group in param_groups:
        if "betas" in param_group:
            param_group["betas"] = tuple(param_group["betas"])
    values = {}
    for index, node in group.items():
        entry = {key: torch.from_numpy(np.array(value[()])) for key, value in node.items()}
        entry.update({key: json.loads(value) for key, value in node.attrs.items()})
        values[int(index)] = entry
    return {"state": dict(sorted(values.items())), "param_groups": param_groups}


def restore_rng(state, generators=None):
    """Put back the global RNG states (and `generators`) saved by :func:`save_checkpoint`.

    Parameters
    ----------
    state : dict
        As returned by :func:`read_training_state`.
    generators : dict of str to torch.Generator, optional
        Generators saved under the same names.
    """
    python = state["rng_python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    numpy = state["rng_numpy"]
    np.random.set_state((numpy["name"], state["rng"]["numpy"], numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    torch.set_rng_state(torch.from_numpy(state["rng"]["torch"]))
    if "cuda" in state["rng"] and torch.cuda.is_available():
        saved = state["rng"]["cuda"]
        if len(saved) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([torch.from_numpy(s) for s in saved])
    for key, generator in (generators or {}).items():
        if key in state["rng"]:
            generator.set_state(torch.from_numpy(state["rng"][key]))


def write_json(path, values):
    """Write `values` as indented, sorted JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(values, indent=4, sort_keys=True, default=str) + "\n")
    return Path(path)


def write_history(path, history):
    """Write the per-epoch history rows as CSV, atomically.

    Parameters
    ----------
    path : str or Path
    history : list of dict
        One row per epoch; the columns are the keys of the first row.
    """
    import csv

    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(history[0]) if history else ["epoch"])
            writer.writeheader()
            writer.writerows(history)
    return Path(path)


def read_history(path):
    """Read ``history.csv`` back: list of dict of floats (``epoch`` and ``best`` as int)."""
    import csv

    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: (int(float(v)) if k in ("epoch", "best") else float(v)) for k, v in row.items()} for row in rows]


def plot_history(path, history, class_names):
    """Save a figure of the training history: losses, learning rate, validation F1 per class.

    Parameters
    ----------
    path : str or Path
        PNG file, written atomically.
    history : list of dict
        Rows as written by the training loop.
    class_names : sequence of str

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(12, 3.4))
    figure.subplots_adjust(left=0.06, right=0.98, bottom=0.16, top=0.9, wspace=0.28)
    loss, rate, score = figure.subplots(1, 3)
    loss.plot(epochs, [row["train_loss"] for row in history], "o-", ms=3, label="training")
    loss.plot(epochs, [row["valid_loss"] for row in history], "o-", ms=3, label="validation")
    best = [row["epoch"] for row in history if row.get("best")]
    if best:
        loss.axvline(best[-1], color="grey", ls=":", label=f"best (epoch {best[-1]})")
    loss.set(xlabel="epoch", ylabel="BCE loss (pos_weight)", title="Loss")
    loss.legend()
    rate.semilogy(epochs, [row["lr"] for row in history], "o-", ms=3, color="C2")
    rate.set(xlabel="epoch", ylabel="learning rate", title="Learning rate (ReduceLROnPlateau)")
    for name in class_names:
        score.plot(epochs, [row[f"valid_f1_{name}"] for row in history], "o-", ms=3, label=f"F1 {name}")
        score.plot(epochs, [row[f"valid_accuracy_{name}"] for row in history], ":", label=f"accuracy {name}")
    score.set(xlabel="epoch", ylim=(0, 1.02), title="Validation, per class")
    score.legend(fontsize="small")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=80)
    return figure
