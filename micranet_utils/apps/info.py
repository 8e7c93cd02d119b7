"""What is inside a model-zoo file: its groups, models, classes and training crop size."""

import json

from ..io.zoo import list_models, load_zoo, model_settings
from ..model.network import count_parameters


def describe_zoo(path, name=None, group=None):
    """A few lines describing a model-zoo file, as ``micranet info`` prints them.

    Parameters
    ----------
    path : str or Path
        ModelZoo HDF5 file (published or saved by this package).
    name, group : str, optional
        The model to describe, as in :func:`micranet_utils.io.zoo.load_zoo`.

    Returns
    -------
    str
    """
    lines = [f"{group_name}: {', '.join(names) or '(empty)'}" for group_name, names in list_models(path).items()]
    model, params = load_zoo(path, name=name, group=group)
    settings = model_settings(params)
    lines.append(f"MICRA-Net: {model.in_channels} input channel(s), {model.num_classes} class(es), "
                 f"trained on {settings['size']} px crops, {count_parameters(model):,} parameters")
    lines.append("trainer_params: " + json.dumps(params, sort_keys=True)[:400])
    return "\n".join(lines)
