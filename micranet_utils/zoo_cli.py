"""``micranet info ZOO``: what is inside a model-zoo file."""

import json

from .network import count_parameters
from .zoo import list_models, load_zoo, model_settings


def cli_arguments(parser):
    parser.add_argument("zoo", help="model-zoo .hdf5 file (published or saved by this package)")
    parser.add_argument("--group", default=None, help="architecture group (default: MICRANet)")
    parser.add_argument("--name", default=None, help="model inside the group (default: the only one)")
    parser.epilog = "example: micranet info models/ActinModelZoo.hdf5"


def cli_run(args):
    for group, names in list_models(args.zoo).items():
        print(f"{group}: {', '.join(names) or '(empty)'}")
    model, params = load_zoo(args.zoo, name=args.name, group=args.group)
    settings = model_settings(params)
    print(f"MICRA-Net: {model.in_channels} input channel(s), {model.num_classes} class(es), "
          f"trained on {settings['size']} px crops, {count_parameters(model):,} parameters")
    print("trainer_params:", json.dumps(params, sort_keys=True)[:400])
    return 0
