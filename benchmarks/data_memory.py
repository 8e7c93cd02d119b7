"""Peak memory while reading a large training file: lazy crops vs. the whole-file cache.

The original loader reads every group of the training file into memory before
the first crop (16 GB and more for the published Actin data). CropDataset reads
one foreground channel at a time to enumerate crops, then one crop per item.

This script writes a synthetic file of the requested size in the published
layout (fast, blocky content: it measures memory, not realism), then measures in
two fresh processes the peak resident memory (``ru_maxrss``) of

* ``lazy``:  CropDataset(path) + targets() + reading `--crops` random crops;
* ``whole``: a plain re-implementation of the whole-file approach (data cast to
  float32 and labels held for every group) + reading the same crops.

Run by hand; not part of the tests::

    python benchmarks/data_memory.py --gigabytes 4 --folder /tmp
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

IMAGE = 1024                       # side of the generated images
BYTES_PER_IMAGE = IMAGE * IMAGE * (4 + 3)  # float32 data + 3 uint8 label channels


def write_large_file(path, gigabytes, seed=0):
    """Write a published-layout file of about `gigabytes` GB, one image at a time."""
    n_images = max(2, int(gigabytes * 1e9 / BYTES_PER_IMAGE))
    rng = np.random.default_rng(seed)
    half = n_images // 2
    with h5py.File(path, "w") as file:
        for name, count in (("part-a", half), ("part-b", n_images - half)):
            group = file.create_group(name)
            data = group.create_dataset("data", (count, IMAGE, IMAGE), np.float32)
            label = group.create_dataset("label", (count, 3, IMAGE, IMAGE), np.uint8)
            label.attrs["shapes"] = np.full((count, 2), IMAGE)
            for k in range(count):
                data[k] = rng.random((IMAGE, IMAGE), np.float32)
                band = np.zeros((3, IMAGE, IMAGE), np.uint8)
                row = rng.integers(0, IMAGE - 300)
                band[2, row:row + 300] = 1                     # a horizontal "dendrite"
                band[0, row + 20:row + 120, : IMAGE // 2] = 1 + k % 2
                band[1, row + 150:row + 280, IMAGE // 2:] = 1 + (k + 1) % 2
                label[k] = band
    return n_images


def whole_file_crops(path, size, step):
    """The original's approach, written plainly: cache everything, then enumerate."""
    cache, samples = {}, []
    with h5py.File(path, "r") as file:
        for name, group in file.items():
            data = group["data"][()].astype(np.float32)
            label = group["label"][()]
            for k, (foreground, shape) in enumerate(zip(label[:, -1], group["label"].attrs["shapes"])):
                for j in range(0, shape[0], int(size * step)):
                    for i in range(0, shape[1], int(size * step)):
                        if foreground[j:j + size, i:i + size].sum() >= 0.1 * size * size:
                            samples.append((name, k, j, i))
            cache[name] = (data, label[:, :-1])
    return cache, samples


def measure(mode, path, size, step, crops):
    """Run in a fresh process: returns peak RSS in MB and the time to reach it."""
    import torch  # noqa: F401  (both readers live in a torch program: count its memory in both)

    start = time.perf_counter()
    rng = np.random.default_rng(0)
    if mode == "lazy":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from micranet_utils.io.training_files import CropDataset

        dataset = CropDataset(path, size=size, step=step)
        dataset.targets()
        for n in rng.choice(len(dataset), min(crops, len(dataset)), replace=False):
            dataset[int(n)]
        count = len(dataset)
    else:
        cache, samples = whole_file_crops(path, size, step)
        for n in rng.choice(len(samples), min(crops, len(samples)), replace=False):
            name, k, j, i = samples[n]
            image = cache[name][0][k, j:j + size, i:i + size]
            target = (cache[name][1][k, :, j:j + size, i:i + size] > 0).sum(axis=(1, 2)) > 0.05 * size * size
            assert image.size and target.shape
        count = len(samples)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "peak_rss_mb": round(peak_mb), "crops": count, "seconds": round(time.perf_counter() - start, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gigabytes", type=float, default=1.0, help="size of the generated file (default 1)")
    parser.add_argument("--folder", type=Path, default=Path("/tmp"), help="where to write it (default /tmp)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--step", type=float, default=0.75)
    parser.add_argument("--crops", type=int, default=500, help="random crops read after enumeration")
    parser.add_argument("--skip-whole", action="store_true", help="only measure the lazy reader")
    parser.add_argument("--measure", choices=["lazy", "whole"], help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.file, args.size, args.step, args.crops)))
        return
    path = args.folder / f"micranet_memory_{args.gigabytes:g}GB.hdf5"
    if not path.exists():
        started = time.perf_counter()
        n_images = write_large_file(path, args.gigabytes)
        print(f"wrote {path} ({n_images} images of {IMAGE}x{IMAGE}) in {time.perf_counter() - started:.0f} s")
    print(f"file: {path}, {path.stat().st_size / 1e9:.2f} GB")
    results = {}
    for mode in ["lazy"] + ([] if args.skip_whole else ["whole"]):
        out = subprocess.run([sys.executable, __file__, "--measure", mode, "--file", str(path), "--size",
                              str(args.size), "--step", str(args.step), "--crops", str(args.crops)],
                             capture_output=True, text=True, check=True)
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{mode:>6}: peak RSS {results[mode]['peak_rss_mb']:>6} MB, {results[mode]['crops']} crops, "
              f"{results[mode]['seconds']} s")
    if "whole" in results:
        ratio = results["whole"]["peak_rss_mb"] / results["lazy"]["peak_rss_mb"]
        print(f"whole-file / lazy peak memory: {ratio:.1f}x")


if __name__ == "__main__":
    main()
