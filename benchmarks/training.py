"""Training throughput and memory: our loop against the original's, same process, same data.

The original ``src/Actin/train.py`` reads the whole training file into memory
(data cast to float32, every label channel) before the first batch, then
crops from that cache. Ours (:func:`micranet_utils.train.runs.train`) reads each
crop from the file when a DataLoader worker needs it. This script times both
on the same training file, with the same model, batch size, crop size,
augmentation probability and number of workers, in one process:

* images/s: training crops per second over the timed batches (the first batch,
  which pays for worker start-up, is left out);
* start-up: seconds from the call to the first batch (the original loads the file);
* peak memory: the largest proportional set size (PSS) of the process plus its
  DataLoader workers, sampled every 50 ms during each loop. PSS splits the pages
  that forked workers share with the parent, so the sum is the real footprint
  (plain RSS would count the shared pages once per process).

Imports that the first loop would pay alone (torch._dynamo through Adam,
matplotlib) are done before timing.

Ours runs first, so the original's cache is not resident while ours is measured.
By default the data are the demo files; ``--gigabytes G`` writes a larger
synthetic file in the published layout (as ``benchmarks/data_memory.py`` does)
to show how memory scales with the file. Run by hand::

    python benchmarks/training.py                       # demo data, 128 px crops
    python benchmarks/training.py --gigabytes 4 --size 256 --batch-size 64
    python benchmarks/training.py --device cuda --amp   # on a GPU: with and without mixed precision
"""

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_memory import whole_file_crops, write_large_file  # noqa: E402

from micranet_utils.model.network import MICRANet
from micranet_utils.train import runs as training


class PeakMemory:
    """Sample the PSS of this process and its children in a thread; keep the peak (bytes)."""

    def __init__(self, interval=0.05):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _rss(self):
        process, total = psutil.Process(), 0
        for p in [process] + process.children(recursive=True):
            try:
                total += p.memory_full_info().pss
            except psutil.Error:
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class WholeFileCrops(Dataset):
    """The original's loader, re-created plainly: the whole file in memory, crops from the cache."""

    def __init__(self, path, size, step, data_aug):
        self.size, self.data_aug = size, data_aug
        self.cache, self.samples = whole_file_crops(path, size, step)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        name, k, j, i = self.samples[index]
        s = self.size
        image = self.cache[name][0][k, j:j + s, i:i + s]
        label = self.cache[name][1][k, :, j:j + s, i:i + s]
        if image.shape != (s, s):
            image = np.pad(image, ((0, s - image.shape[0]), (0, s - image.shape[1])))
            label = np.pad(label, ((0, 0), (0, s - label.shape[1]), (0, s - label.shape[2])))
        target = (label > 0).sum(axis=(1, 2)) > 0.05 * s * s
        if random.random() < self.data_aug:
            image = np.fliplr(image)
        if random.random() < self.data_aug:
            image = np.flipud(image)
        if random.random() < self.data_aug:
            image = np.clip(image * np.clip(np.random.lognormal(0.01, 0.1), 0, 1), 0, 1)
        if random.random() < self.data_aug:
            image = np.clip(image ** np.clip(np.random.lognormal(0.005, np.sqrt(0.005)), 0, 1), 0, 1)
        return torch.tensor(image.copy(), dtype=torch.float32), torch.tensor(target, dtype=torch.float32)


def original_loop(path, size, batch_size, batches, workers, device):
    """The original training loop for `batches` batches; returns (start-up s, batch end times)."""
    started = time.perf_counter()
    dataset = WholeFileCrops(path, size, 0.75, 0.5)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        pin_memory=device.type == "cuda")
    model = MICRANet(dataset.cache[next(iter(dataset.cache))][1].shape[1]).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([3.3, 1.6], device=device))
    times, first = [], None
    for n, (x, y) in enumerate(loader):
        if first is None:
            first = time.perf_counter() - started
        x, y = x.unsqueeze(1).to(device), y.to(device)
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()
        times.append(time.perf_counter())
        if n + 1 == batches:
            break
    return first, times


def our_loop(path, size, batch_size, batches, workers, device, amp, run_dir):
    """Our training loop (validation limited to one batch); returns (start-up s, batch end times)."""
    times, started = [], time.perf_counter()
    training.train(path, run_dir, validation=path, size=size, batch_size=batch_size, epochs=1,
                   max_batches=batches, num_workers=workers, device=str(device), amp=amp, progress=False,
                   pos_weight=None,
                   callback=lambda info: times.append(time.perf_counter()) if info["event"] == "batch" else None)
    first = times[0] - started if times else float("nan")
    return first, times


def images_per_second(times, batch_size):
    return batch_size * (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="a training file (default: the demo training file)")
    parser.add_argument("--gigabytes", type=float, help="write and use a synthetic file of this size instead")
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()), help="where files go")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=12, help="timed batches per loop (first one excluded)")
    parser.add_argument("--workers", type=int, default=max(1, min(4, (os.cpu_count() or 1) - 1)))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="on CUDA: also time ours with mixed precision")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])      # pay the one-time imports now
    import matplotlib.figure  # noqa: F401
    if args.gigabytes:
        path = args.folder / f"micranet_memory_{args.gigabytes:g}GB.hdf5"
        if not path.exists():
            write_large_file(path, args.gigabytes)
    elif args.data:
        path = args.data
    else:
        from micranet_utils.tutorial.demo_data import ensure_demo

        path = ensure_demo(args.folder / "micranet_benchmark_demo", fast=False)["training"]
    print(f"data: {path} ({path.stat().st_size / 1e6:.0f} MB); crops {args.size} px, batch {args.batch_size}, "
          f"{args.batches} batches, {args.workers} worker(s), {args.threads} thread(s), device {device}")
    runs = [("ours", False)] + ([("ours, amp", True)] if args.amp and device.type == "cuda" else [])
    results = {}
    with tempfile.TemporaryDirectory(dir=args.folder) as scratch:
        for n, (name, amp) in enumerate(runs):
            with PeakMemory() as memory:
                first, times = our_loop(path, args.size, args.batch_size, args.batches + 1, args.workers,
                                        device, amp, Path(scratch) / f"run{n}")
            results[name] = (first, images_per_second(times, args.batch_size), memory.peak)
    with PeakMemory() as memory:
        first, times = original_loop(path, args.size, args.batch_size, args.batches + 1, args.workers, device)
    results["original"] = (first, images_per_second(times, args.batch_size), memory.peak)
    print(f"{'loop':>10} {'start-up s':>11} {'images/s':>9} {'peak PSS MB':>12}")
    for name, (first, speed, peak) in results.items():
        print(f"{name:>10} {first:>11.1f} {speed:>9.1f} {peak / 1e6:>12.0f}")
    original = results["original"]
    for name in results:
        if name != "original":
            print(f"{name} / original: speed x{results[name][1] / original[1]:.2f}, "
                  f"peak memory x{results[name][2] / original[2]:.2f}, start-up x{results[name][0] / original[0]:.2f}")


if __name__ == "__main__":
    main()
