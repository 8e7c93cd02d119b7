"""The ``micranet`` command line: every subcommand's arguments, in one place.

Each subcommand has two functions here: ``_<name>_arguments(parser)`` adds its
arguments to an :class:`argparse.ArgumentParser`, and ``_<name>_run(args)``
calls the package and returns the exit status. The work itself lives in the
modules of the layers below (:mod:`micranet_utils.apps`, :mod:`micranet_utils.io`,
:mod:`micranet_utils.train`, :mod:`micranet_utils.tutorial`); this module only
reads arguments and turns our errors into one readable line.

Exit status: 0 success, 1 some inputs failed (e.g. a few bad images in a
folder), 2 bad arguments or bad input, 130 interrupted.

The same program runs as ``python -m micranet_utils`` (and under
``torchrun --nproc-per-node N -m micranet_utils train ...`` for several GPUs).

The modules that do the work are imported inside the functions below, when a
subcommand runs: they load PyTorch (about a second), which ``micranet --help``
and ``micranet download`` must not wait for.
"""

import argparse
import os
import sys
import warnings
from pathlib import Path

from . import __version__
from .base.errors import DatasetError, MicranetError
from .base.files import human_size


def _info_arguments(parser):
    """Arguments of ``micranet info``."""
    parser.add_argument("zoo", help="model-zoo .hdf5 file (published or saved by this package)")
    parser.add_argument("--group", default=None, help="architecture group (default: MICRANet)")
    parser.add_argument("--name", default=None, help="model inside the group (default: the only one)")
    parser.epilog = "example: micranet info models/ActinModelZoo.hdf5"


def _info_run(args):
    """Print what a model-zoo file holds."""
    from .apps import info

    print(info.describe_zoo(args.zoo, name=args.name, group=args.group))
    return 0


def _download_arguments(parser):
    """Arguments of ``micranet download``."""
    from .io import download

    parser.add_argument("what", nargs="?", default="all", choices=download.WHAT,
                        help="what to fetch: all (default), models or datasets (both are in the one "
                             "published archive), ilastik (the two Ilastik zoos)")
    parser.add_argument("--home", type=Path, default=None,
                        help="cache folder (default: $MICRANET_HOME, else the OS cache folder for 'micranet')")
    parser.add_argument("--keep-archive", action="store_true", help="keep MICRA-Net.tar.gz after extracting it")
    parser.add_argument("--retries", type=int, default=None, help="retries after a broken download (default 2)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait for the server (default 60)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.epilog = ("examples:\n  micranet download models\n"
                     "  MICRANET_HOME=/data/micranet micranet download all\n"
                     "  MICRANET_BASE_URL=http://my-mirror:8000 micranet download   # from a mirror\n"
                     "An interrupted download resumes when the command is run again.")


def _download_run(args):
    """Run ``micranet download``; warnings are printed as plain lines. Returns 0."""
    from .io import download

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", download.UnverifiedDownloadWarning)
        try:
            tree = download.fetch_published(args.what, args.home, progress=not args.no_progress, retries=args.retries,
                                   timeout=args.timeout, keep_archive=args.keep_archive)
        finally:
            for warning in caught:
                print(f"micranet download: warning: {warning.message}", file=sys.stderr)
    print(f"Published files in {tree}:")
    for folder in download.FOLDERS.values():
        files = sorted(p for p in (tree / folder).glob("*") if p.is_file()) if (tree / folder).is_dir() else []
        if files:
            size = human_size(sum(p.stat().st_size for p in files))
            names = ", ".join(p.name for p in files[:6]) + (", ..." if len(files) > 6 else "")
            print(f"  {folder}/: {len(files)} file{'s' * (len(files) != 1)}, {size} ({names})")
    return 0


def _demo_data_arguments(parser):
    """Options of ``micranet demo-data``."""
    from .tutorial import demo_data

    parser.epilog = "example: micranet demo-data --output demo --seed 3"
    parser.add_argument("--output", required=True, type=Path, help="folder for the three .hdf5 files")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same files")
    parser.add_argument("--n-images", type=int, default=demo_data.DEFAULT_N_IMAGES,
                        help=f"training images (default {demo_data.DEFAULT_N_IMAGES}); validation and testing get a third each")
    parser.add_argument("--size", type=int, default=demo_data.DEFAULT_SIZE, help=f"image side in pixels (default {demo_data.DEFAULT_SIZE})")
    parser.add_argument("--overwrite", action="store_true", help="replace demo files already in --output")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _demo_data_run(args):
    """Generate the demo files and print where they are."""
    from .tutorial import demo_data

    files = demo_data.generate_demo(args.output, seed=args.seed, n_images=args.n_images, size=args.size,
                                    progress=not args.quiet, overwrite=args.overwrite)
    for split, path in files.items():
        print(f"{split:>10}: {path}")
    return 0


_TRAIN_EXAMPLES = """examples:
  micranet train --data micranet-work/demo --output runs/demo --size 128 --epochs 12
  micranet train --data micranet-work/demo --output runs/try --dry-run --device cpu
  micranet train --resume runs/demo
  micranet train --data DATA --output runs/ft --restore-from ActinModelZoo.hdf5 --freeze all-conv
  torchrun --nproc-per-node 4 -m micranet_utils train --data DATA --output runs/ddp
"""


def _train_arguments(parser):
    """Add the arguments of ``micranet train`` to `parser`."""
    parser.epilog = _TRAIN_EXAMPLES
    where = parser.add_argument_group("data and run folder")
    where.add_argument("--data", help="folder with training_*.hdf5 and validation_*.hdf5, or a training file")
    where.add_argument("--validation", help="validation file, when --data is a file")
    where.add_argument("--output", help="run folder (best.hdf5, last.hdf5, history.csv, history.png)")
    where.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.hdf5")
    recipe = parser.add_argument_group("recipe (defaults: the original Actin training)")
    for flag, kind, default_text in (
            ("--size", int, "256"), ("--step", float, "0.75"), ("--foreground-fraction", float, "0.1"),
            ("--label-fraction", float, "0.05"), ("--augment", float, "0.5"), ("--batch-size", int, "64"),
            ("--epochs", int, "250"), ("--lr", float, "1e-3"), ("--lr-factor", float, "0.1"),
            ("--lr-patience", int, "10"), ("--lr-threshold", float, "0.01"), ("--min-lr", float, "1e-5"),
            ("--seed", int, "42")):
        recipe.add_argument(flag, type=kind, help=f"default {default_text}")
    recipe.add_argument("--pos-weight", nargs="+", metavar="W",
                        help="one weight per class, 'balanced' or 'none' (default: 3.3 1.6, the original "
                             "Actin's, for two classes; 'balanced' for any other number)")
    tune = parser.add_argument_group("fine-tuning")
    tune.add_argument("--restore-from", metavar="ZOO", help="start from the weights of a ModelZoo file")
    tune.add_argument("--freeze", default="", help="comma-separated: all-conv, 1a..4b, conv1a, bnorm1a, ...")
    run = parser.add_argument_group("running")
    run.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    run.add_argument("--amp", default="auto", choices=("auto", "on", "off"), help="mixed precision on CUDA")
    run.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower on GPU)")
    run.add_argument("--workers", type=int,
                     help="DataLoader worker processes (default: spare cores, max 4; none with 2 cores or fewer)")
    run.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                     help="also save last.hdf5 every N batches")
    run.add_argument("--max-batches", type=int, help="stop each epoch after this many batches")
    run.add_argument("--dry-run", action="store_true", help="two batches through the whole path, in seconds")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")


def _train_run(args):
    """Run ``micranet train``; returns the exit status."""
    from .train import runs

    progress = not args.no_progress
    if args.resume:
        result = runs.resume(args.resume, epochs=args.epochs, progress=progress,
                        device=None if args.device == "auto" else args.device)
    else:
        if not args.data or not args.output:
            raise DatasetError("give --data and --output (or --resume RUN_DIR)")
        recipe = {key: getattr(args, key) for key in (
            "size", "step", "foreground_fraction", "label_fraction", "augment", "batch_size", "epochs",
            "lr", "lr_factor", "lr_patience", "lr_threshold", "min_lr", "seed")}
        recipe = {key: value for key, value in recipe.items() if value is not None}
        if args.pos_weight:
            word = args.pos_weight[0].lower()
            if len(args.pos_weight) == 1 and word in ("balanced", "none"):
                recipe["pos_weight"] = None if word == "none" else "balanced"
            else:
                recipe["pos_weight"] = _pos_weights(args.pos_weight)
        result = runs.train(args.data, args.output, validation=args.validation, restore_from=args.restore_from,
                       freeze=args.freeze, device=args.device,
                       amp={"auto": "auto", "on": True, "off": False}[args.amp],
                       deterministic=args.deterministic, num_workers=args.workers,
                       checkpoint_every=args.checkpoint_every, max_batches=args.max_batches,
                       dry_run=args.dry_run, progress=progress, **recipe)
    if os.environ.get("RANK", "0") == "0":
        print(f"best model: {result.best} (epoch {result.best_epoch}, validation loss {result.best_loss:.4f}); "
              f"resumable state: {result.last}")
    return 0


def _pos_weights(values):
    try:
        return [float(v) for v in values]
    except ValueError:
        raise DatasetError(f"--pos-weight expects numbers, 'balanced' or 'none', got {' '.join(values)}") from None


def _predict_arguments(parser):
    """Add the ``micranet predict`` arguments to `parser`."""
    from .analysis import recipes
    from .io import images

    parser.epilog = ("example:\n  micranet predict --model ActinModelZoo.hdf5 --input images/ "
                     "--output results/ --recipe actin\n\nexit status: 0 all images analysed, 1 some files "
                     "failed (named on stderr), 2 bad arguments")
    parser.add_argument("--model", required=True, help="ModelZoo HDF5 file")
    parser.add_argument("--input", required=True, help="folder of images (or one image file)")
    parser.add_argument("--output", required=True, help="folder for the results (created)")
    parser.add_argument("--recipe", default="actin", choices=sorted(recipes.RECIPES), help="post-processing recipe")
    parser.add_argument("--name", help="model inside the zoo (when it holds several); a model holding folds "
                        "(P. vivax) uses all of them as an ensemble, MODEL/FOLD picks one fold")
    parser.add_argument("--group", help="architecture group inside the zoo (default MICRANet*)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    parser.add_argument("--maps", action="store_true", help="also save the Grad-CAM maps (HDF5)")
    parser.add_argument("--overwrite", action="store_true", help="redo images already analysed")
    parser.add_argument("--tile", type=int, default=1024, help="tile side for large images (default 1024)")
    parser.add_argument("--overlap", type=int, default=128, help="overlap between tiles (default 128)")
    parser.add_argument("--normalize", default="auto", choices=images.NORMALIZE_CHOICES,
                        help="intensity scaling (default auto: see the notes above)")
    parser.add_argument("--channel", type=int, help="keep only this channel of multi-channel files")
    stack = parser.add_mutually_exclusive_group()
    stack.add_argument("--plane", type=int, help="for z-stacks / time series: keep this plane (0-based)")
    stack.add_argument("--projection", choices=("max", "mean"), help="for z-stacks / time series: project all planes")
    parser.add_argument("--min-size", type=int, default=32, help="smallest accepted side, pixels (default 32)")
    parser.add_argument("--min-area", type=int, default=1, help="smallest object counted, pixels (default 1)")
    parser.add_argument("--stream", default="auto", choices=("auto", "always", "never"),
                        help="read, map and write tile by tile: images above 8 megapixels (auto), all, or none")
    parser.add_argument("--stream-tile", type=int, default=512, help="streamed tile side, pixels (default 512)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _predict_run(args):
    """Run ``micranet predict``; 0 when every image was analysed, 1 when some failed."""
    from .apps import predict

    summary = predict.predict_folder(args.model, args.input, args.output, args.recipe, name=args.name, group=args.group,
                             device=args.device, save_maps=args.maps, overwrite=args.overwrite, tile=args.tile,
                             overlap=args.overlap, normalize=args.normalize, channel=args.channel, plane=args.plane,
                             projection=args.projection, min_size=args.min_size, min_area=args.min_area,
                             stream=args.stream, stream_tile=args.stream_tile, progress=not args.quiet)
    done, skipped, failed = len(summary["done"]), len(summary["skipped"]), len(summary["failed"])
    print(f"micranet predict: {done} analysed, {skipped} already done, {failed} failed -> {args.output}",
          file=sys.stderr)
    return 1 if failed else 0


def _make_dataset_arguments(parser):
    """Arguments of ``micranet make-dataset``."""
    from .apps import folder_check

    parser.add_argument("--images", required=True, type=Path, help="folder of your images")
    parser.add_argument("--labels", type=Path, help="CSV: filename column, then one 0/1 column per class "
                        "(default: class sub-folders of --images)")
    parser.add_argument("--output", required=True, type=Path, help="folder for the data set files")
    parser.add_argument("--masks", type=Path, help="folder of foreground masks with the same file names")
    parser.add_argument("--foreground", choices=folder_check.FOREGROUNDS, default="otsu",
                        help="foreground without masks: Otsu threshold or the whole image (default: otsu)")
    parser.add_argument("--crop-size", type=int, default=256, help="training crop side in pixels (default: 256)")
    parser.add_argument("--split", type=float, nargs=3, default=(0.7, 0.15, 0.15), metavar=("TRAIN", "VAL", "TEST"),
                        help="fractions of images per split (default: 0.7 0.15 0.15)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default: 0)")
    parser.add_argument("--channels", type=int, default=1, help="channels the model takes (default: 1)")
    parser.add_argument("--channel", type=int, help="keep only this channel of each image (0-based)")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--plane", type=int, help="for stacks: keep this plane (0-based)")
    choice.add_argument("--projection", choices=("max", "mean"), help="for stacks: project all planes")
    parser.add_argument("--name", default="inhouse", help="files are <split>_NAME.hdf5 (default: inhouse)")
    parser.add_argument("--check-only", action="store_true", help="only check the folder and print the report")


def _make_dataset_run(args):
    """Check the folder, print the report, write the files when there is no error."""
    from .apps import folder_check
    from .apps import make_dataset

    make_dataset.check_options(name=args.name, split=args.split, seed=args.seed)
    read_options = dict(channel=args.channel, plane=args.plane, projection=args.projection)
    report = folder_check.validate_folder(args.images, args.labels, masks=args.masks, crop_size=args.crop_size,
                             channels=args.channels, foreground=args.foreground, **read_options)
    print(report, file=sys.stderr if report.problems else sys.stdout)
    if not report.ok:
        files = sorted({p.file for p in report.errors})
        print(f"micranet make-dataset: error: {len(report.errors)} problem(s) in {len(files)} file(s): "
              f"{', '.join(files)}; nothing was written", file=sys.stderr)
        return 2
    if args.check_only:
        return 0
    paths = make_dataset.write_dataset(report, args.output, images=args.images, masks=args.masks, split=args.split,
                          seed=args.seed, read_options=read_options, foreground=args.foreground, name=args.name)
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


def _export_bioimageio_arguments(parser):
    """Arguments of ``micranet export-bioimageio``."""
    from .analysis import recipes

    parser.epilog = ("example:\n  micranet export-bioimageio --model models/demo_micranet.hdf5 --output demo.bioimageio\n"
                     "then: bioimageio test demo.bioimageio/rdf.yaml; open it in deepImageJ, ilastik or napari")
    parser.add_argument("--model", required=True, help="ModelZoo HDF5 file whose trainer_params name the classes")
    parser.add_argument("--output", required=True, type=Path, help="package folder to write (rdf.yaml and its files)")
    parser.add_argument("--name", help="model inside the zoo (when it holds several)")
    parser.add_argument("--group", help="architecture group inside the zoo (default MICRANet*)")
    parser.add_argument("--recipe", default="actin", choices=sorted(recipes.RECIPES),
                        help="recipe whose combined map the network returns (default actin)")
    parser.add_argument("--pixel-size", type=float, metavar="NM",
                        help="training pixel size in nm, when the zoo and its training file do not record it")
    parser.add_argument("--test-image", type=Path, help="TIFF or .npy image, (C, H, W) or (H, W), for the test "
                        "tensors and the cover (default: a synthetic image)")
    parser.add_argument("--overwrite", action="store_true", help="replace a package already in --output")


def _export_bioimageio_run(args):
    """Write the package and print where its rdf.yaml is."""
    from .apps import export_bioimageio

    rdf = export_bioimageio.export_bioimageio(args.model, args.output, name=args.name, group=args.group,
                                              recipe=args.recipe, pixel_size=args.pixel_size,
                                              test_image=args.test_image, overwrite=args.overwrite)
    print(f"bioimage.io package: {rdf}")
    return 0


# name -> (one-line help, add the arguments, run)
SUBCOMMANDS = {
    "info": ("describe a model-zoo file (models, classes, crop size)", _info_arguments, _info_run),
    "download": ("download the published models and data sets", _download_arguments, _download_run),
    "demo-data": ("generate the offline demo data set with pixel truth", _demo_data_arguments, _demo_data_run),
    "train": ("train MICRA-Net from image-level labels", _train_arguments, _train_run),
    "predict": ("segment, detect and count on a folder of images", _predict_arguments, _predict_run),
    "make-dataset": ("turn a folder of your images into training files", _make_dataset_arguments,
                     _make_dataset_run),
    "export-bioimageio": ("write a trained model as a bioimage.io package (deepImageJ, ilastik, napari)",
                          _export_bioimageio_arguments, _export_bioimageio_run),
}


def build_parser(only=None):
    """The :class:`argparse.ArgumentParser` of ``micranet``.

    Parameters
    ----------
    only : str, optional
        A subcommand name: only that subcommand gets its arguments, so that
        ``micranet download`` does not wait for PyTorch to load. Without it
        (``micranet --help``), the subcommands are listed with their help lines only.
    """
    parser = argparse.ArgumentParser(
        prog="micranet",
        description="MICRA-Net tutorial tools: weakly supervised microscopy analysis.",
        epilog="Run 'micranet COMMAND --help' for the options of one command.")
    parser.add_argument("--version", action="version", version=f"micranet-utils {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, add_arguments, run) in SUBCOMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == only:
            add_arguments(command)
            command.set_defaults(_run=run)
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
