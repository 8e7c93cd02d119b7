"""The ``micranet`` command line: one program, one subcommand per task.

Each subcommand lives in the module of its idea, which defines two functions:
``cli_arguments(parser)`` (add its arguments to an :class:`argparse.ArgumentParser`)
and ``cli_run(args) -> int`` (do the work, return the exit status). This file
only wires them together and turns our errors into one readable line.

Exit status: 0 success, 1 some inputs failed (e.g. a few bad images in a
folder), 2 bad arguments or bad input, 130 interrupted.
"""

import argparse
import importlib
import sys

from .errors import MicranetError

# name -> (module, one-line help); a module that does not exist yet is skipped.
SUBCOMMANDS = {
    "info": ("micranet_utils.zoo_cli", "describe a model-zoo file (models, classes, crop size)"),
    "download": ("micranet_utils.download", "download the published models and data sets"),
    "demo-data": ("micranet_utils.demo", "generate the offline demo data set with pixel truth"),
    "train": ("micranet_utils.training", "train MICRA-Net from image-level labels"),
    "predict": ("micranet_utils.predict", "segment, detect and count on a folder of images"),
    "make-dataset": ("micranet_utils.inhouse", "turn a folder of your images into training files"),
}


def build_parser(only=None):
    """The :class:`argparse.ArgumentParser` of ``micranet`` with every available subcommand.

    With `only` (a subcommand name), just that subcommand's module is imported, so that a
    light command such as ``micranet download`` does not wait for PyTorch to load.
    """
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="micranet",
        description="MICRA-Net tutorial tools: weakly supervised microscopy analysis.",
        epilog="Run 'micranet COMMAND --help' for the options of one command.")
    parser.add_argument("--version", action="version", version=f"micranet-utils {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if only is not None and name != only:
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue
            raise
        if not hasattr(module, "cli_run"):
            continue
        command = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip().split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        module.cli_arguments(command)
        command.set_defaults(_run=module.cli_run)
    return parser


def main(argv=None):
    """Entry point of the ``micranet`` console script. Returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=first if first in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except MicranetError as err:
        print(f"micranet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as err:
        print(f"micranet {args.command}: error: {err.filename or ''}: {err.strerror or err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"micranet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"micranet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
