"""Peak memory and megapixels per second of ``micranet predict``: the in-memory path against streaming.

Usage::

    python benchmarks/predict_scale.py                       # 2048, 8192 and 16384 pixels square
    python benchmarks/predict_scale.py --sizes 2048 4096     # chosen sizes
    python benchmarks/predict_scale.py --model ActinModelZoo.hdf5 --paths stream

For each size a synthetic 16-bit TIFF (blurred noise, written strip by strip)
is made in a temporary folder, and each path runs on it in a fresh Python
process, which reports its wall time and its peak resident memory
(``resource.getrusage``, i.e. what ``/usr/bin/time -v`` calls "Maximum
resident set size"):

* ``whole``: what ``micranet predict`` does in memory: ``read_image``,
  ``prepare_image``, ``segment_image`` (maps by overlapping 1024-pixel tiles,
  the recipe on the whole image), the counts and the masks TIFF;
* ``stream``: :func:`micranet_utils.apps.stream_predict.predict_large` (tiles of
  ``--tile`` pixels, masks and labels written tile by tile).

Without ``--model`` the network has random weights (seed 0): the compute is
the same as a trained model's, only the maxima that ``alpha`` is taken around
are more scattered; its bias is set so that both classes are present. The load average is printed first: on a shared machine
compare the two paths of one run, not runs of different days.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_image(path, size, seed=0):
    """A size x size uint16 TIFF of blurred noise, written in strips (never all in memory as float)."""
    import tifffile
    from scipy import ndimage

    image = tifffile.memmap(path, shape=(size, size), dtype=np.uint16)
    rng = np.random.default_rng(seed)
    for y in range(0, size, 1024):
        strip = ndimage.gaussian_filter(rng.random((min(1024, size - y), size)), 4)
        image[y:y + strip.shape[0]] = np.round(strip * 4000 + 200).astype(np.uint16)
    image.flush()
    del image


def load_model(model_path):
    import torch

    from micranet_utils.io.zoo import load_zoo
    from micranet_utils.model.network import MICRANet

    if model_path:
        return load_zoo(model_path)[0]
    torch.manual_seed(0)
    model = MICRANet(num_classes=2).eval()
    with torch.no_grad():
        model.linear1.bias.fill_(5.0)              # both classes present: every step of the recipe runs
    return model


def child(args):
    """Run one path in this process and print its time and peak memory as JSON."""
    import tifffile

    from micranet_utils.analysis.detection import count
    from micranet_utils.analysis.ensemble import gradcam_settings, segment_image
    from micranet_utils.analysis.recipes import get_recipe
    from micranet_utils.apps.stream_predict import predict_large
    from micranet_utils.io.images import prepare_image, read_image

    model = load_model(args.model)
    recipe = get_recipe(args.recipe)
    settings = gradcam_settings(recipe.name)
    start = time.perf_counter()
    if args.child == "whole":
        image = prepare_image(read_image(args.image), "auto")
        result = segment_image([model], image, recipe, settings, 1024, 128, "cpu")
        counts = count(result.masks[None])[0].tolist()
        tifffile.imwrite(Path(args.out) / "whole_masks.tif", result.masks.astype(np.uint8) * 255)
    else:
        counts = predict_large(model, args.image, args.out, recipe, settings=settings, tile=args.tile)["count"]
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_mb": peak_kb / 1024, "counts": counts}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192, 16384])
    parser.add_argument("--paths", nargs="+", default=["whole", "stream"], choices=["whole", "stream"])
    parser.add_argument("--model", help="ModelZoo HDF5 (default: random weights)")
    parser.add_argument("--recipe", default="actin")
    parser.add_argument("--tile", type=int, default=512, help="streaming tile core, pixels")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--child", choices=["whole", "stream"], help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    if args.child:
        return child(args)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    print(f"{'size':>7} {'path':>7} {'seconds':>9} {'MP/s':>7} {'peak MB':>8}  counts")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            image = Path(tmp) / f"image{size}.tif"
            make_image(image, size)
            for path in args.paths:
                out = Path(tmp) / f"out{size}{path}"
                out.mkdir()
                command = [sys.executable, __file__, "--child", path, "--image", str(image), "--out", str(out),
                           "--recipe", args.recipe, "--tile", str(args.tile)]
                command += ["--model", args.model] if args.model else []
                command += ["--threads", str(args.threads)] if args.threads else []
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode:
                    print(f"{size:>7} {path:>7} failed: {done.stderr.strip().splitlines()[-1:]}")
                    continue
                row = json.loads(done.stdout.strip().splitlines()[-1])
                megapixels = size * size / 1e6
                print(f"{size:>7} {path:>7} {row['seconds']:9.1f} {megapixels / row['seconds']:7.3f} "
                      f"{row['peak_mb']:8.0f}  {row['counts']}", flush=True)
            image.unlink()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
