"""Training throughput and memory: our loop against the original's, interleaved in one process.

The original ``src/Actin/train.py`` reads the whole training file into memory
(data cast to float32, every label channel) before the first batch, then
crops from that cache and augments each crop in the DataLoader worker. Ours
(:func:`micranet_utils.train.runs.train`) reads each crop from the file when
it is needed and augments the whole batch at once. This script times both on the same
training file, with the same model, batch size, crop size, augmentation
probability and number of workers, in one process, in interleaved rounds
(:mod:`harness`): each round runs ``--batches + 1`` batches of ours, then of
the original, each loop starting afresh (worker start-up included, as in a
real run); the first batch of each loop, which pays for that start-up, is
left out.

* seconds: time of the ``--batches`` timed batches of a round; the figure of a
  loop is the median over the rounds (with the spread), its speed against the
  original the median of the per-round ratios; images/s follow from the median;
* peak memory: the largest proportional set size (PSS) of the process plus its
  DataLoader workers, sampled every 0.2 s during the loop (PSS splits the pages
  that forked workers share with the parent, so the sum is the real footprint).
  The original's cache is read at the start of each of its rounds and freed at
  the end, so it is never resident while ours is measured.

Ours stops after its last timed batch (no BatchNorm re-estimation or validation
pass: the original's loop has none in its batches either). The load average is
printed at the start; the result goes to ``benchmarks/results/training.json``
(``tools/readme_tables.py``, block ``benchmark-training``), marked busy when the
machine was loaded. Run by hand::

    python benchmarks/training.py                       # demo data, 128 px crops, batches of 32
    python benchmarks/training.py --size 256 --batch-size 64 --batches 3   # the recipe's batches
    python benchmarks/training.py --gigabytes 4 --size 256 --batch-size 64
    python benchmarks/training.py --device cuda --amp   # on a GPU: with and without mixed precision

Where the time goes (one step of ours, 2 busy CPU cores, batches of 32 crops of
128 px; seconds): reading 32 crops from the HDF5 file 0.14, batch augmentation
0.17, forward 4.2, forward + backward 8.5 in NCHW (convolution backward ~50 %,
convolution forward ~20 %, BatchNorm ~12 %, ReLU backward ~5 %, max pooling ~5 %),
Adam 0.14. The network is everything; the data path is about 3 %.

What was tried (interleaved, same process, load average 6 to 7 on 2 cores, so
the ratios are indicative):

* measured, then NOT kept: channels_last (weights and batches) on CPU: forward + backward + Adam
  of one batch 1.36x faster than NCHW (256 px, batches of 16, 5 interleaved
  rounds: 10.2 s, 9.9-10.8, against 13.8 s, 12.2-14.5; load 5.9) and 1.17x to
  1.6x at 128 px, batches of 32 (load 7). The arithmetic is the
  same; oneDNN sums in another order, so the first loss differs by ~3e-6
  (relative) from an NCHW run and the weights after two Adam steps by up to
  4e-3 (Adam's step is ~lr wherever a gradient is near zero): runs are
  reproducible and resumable as before, but not bitwise equal to NCHW runs,
  and lesson 03 shows that ``train`` equals a plain NCHW training step to the
  bit; the layout was taken back out of ``train/loop.py`` (the figures of the
  last run below were measured with it);
* kept: ``Adam(foreach=True)``: bitwise the same weights as the default
  per-parameter loop on CPU, one kernel per operation for all parameters;
* dead end: ``Adam(fused=True)`` on CPU: no faster than foreach here (7.63 s
  against 7.45 s a step) and not bitwise equal (weights differ by up to 1.5e-3
  after two steps);
* not worth it: faster crop reading (fewer h5py calls, a per-worker cache of
  decoded images): the reading is ~1.6 % of a step (0.14 s of 8.5 s), so at
  most that much to gain;
* not concluded: thread settings. Under a load of 6 to 9 on 2 cores the two
  OpenMP threads of a step wait for each other and the time of a round moves by
  2x with the load (one original round took 38 s, the others 75-83 s), far more
  than any thread setting could be judged by.

Last run (2026-12-03, busy machine, so not in the README): demo data, 128 px,
batches of 32, 1 worker, 2 threads, 5 rounds of 6 timed batches (30 batches
per loop): ours 67.7 s per round (61.2-79.4), 2.8 images/s; the original 76.3 s
(37.7-83.5), 2.5 images/s; ours / original 1.13x (0.56-1.25 over rounds); load
average 6.95 at start, 5.98 at end, 6.0-9.0 in between. Four rounds of five
gave 1.20x to 1.25x and one 0.94x; the round where the load fell during the
original's loop gave 0.56x. Not enough to conclude whether the 1.5x goal is
met: rerun on a quiet machine.
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
import harness  # noqa: E402
from data_memory import whole_file_crops, write_large_file  # noqa: E402

from micranet_utils.model.network import MICRANet
from micranet_utils.train import runs as training


class PeakMemory:
    """Sample the PSS of this process and its children in a thread; keep the peak (bytes)."""

    def __init__(self, interval=0.2):
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


class _Enough(Exception):
    """Raised from our callback after the last batch of a round: no validation pass."""


def original_loop(path, size, batch_size, batches, workers, device):
    """The original training loop for `batches` batches; returns the batch end times."""
    dataset = WholeFileCrops(path, size, 0.75, 0.5)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        pin_memory=device.type == "cuda")
    model = MICRANet(dataset.cache[next(iter(dataset.cache))][1].shape[1]).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([3.3, 1.6], device=device))
    times = []
    for n, (x, y) in enumerate(loader):
        x, y = x.unsqueeze(1).to(device), y.to(device)
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()
        times.append(time.perf_counter())
        if n + 1 == batches:
            break
    del loader, dataset          # free the whole-file cache before the next loop is measured
    return times


def our_loop(path, size, batch_size, batches, workers, device, amp, run_dir):
    """Our training loop for `batches` batches (the recipe's pos_weight); returns the batch end times."""
    times = []

    def callback(info):
        if info["event"] == "batch":
            times.append(time.perf_counter())
            if len(times) == batches:
                raise _Enough

    try:
        training.train(path, run_dir, validation=path, size=size, batch_size=batch_size, epochs=1,
                       max_batches=batches, num_workers=workers, device=str(device), amp=amp, progress=False,
                       pos_weight=[3.3, 1.6], bn_recalibration_crops=0, callback=callback)
    except _Enough:
        pass
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="a training file (default: the demo training file)")
    parser.add_argument("--gigabytes", type=float, help="write and use a synthetic file of this size instead")
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()), help="where files go")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=6, help="timed batches per loop and round (first excluded)")
    parser.add_argument("--rounds", type=int, default=harness.MIN_ROUNDS)
    parser.add_argument("--workers", type=int, default=max(1, min(4, (os.cpu_count() or 1) - 1)))
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="on CUDA: also time ours with mixed precision")
    parser.add_argument("--no-save", action="store_true", help="print only; do not write benchmarks/results")
    args = parser.parse_args()
    if args.rounds < harness.MIN_ROUNDS:
        parser.error(f"--rounds must be at least {harness.MIN_ROUNDS}")
    load = harness.announce("Training throughput: our loop against the original's (interleaved rounds)")
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
          f"{args.rounds} rounds of {args.batches} timed batches, {args.workers} worker(s), "
          f"{args.threads} thread(s), device {device}")
    amp_runs = [("ours, amp", True)] if args.amp and device.type == "cuda" else []
    seconds, peaks = {}, {}
    with tempfile.TemporaryDirectory(dir=args.folder) as scratch:
        counter = iter(range(10 ** 6))

        def ours(amp):
            return lambda: our_loop(path, args.size, args.batch_size, args.batches + 1, args.workers, device, amp,
                                    Path(scratch) / f"run{next(counter)}")

        variants = {"ours": ours(False), **{name: ours(amp) for name, amp in amp_runs},
                    "original": lambda: original_loop(path, args.size, args.batch_size, args.batches + 1,
                                                      args.workers, device)}
        for round_ in range(args.rounds):
            for name, run in variants.items():
                with PeakMemory() as memory:
                    times = run()
                if len(times) != args.batches + 1:
                    raise SystemExit(f"{name}: only {len(times)} batches; use a larger file or fewer batches")
                seconds.setdefault(name, []).append(times[-1] - times[0])
                peaks[name] = max(peaks.get(name, 0), memory.peak)
                print(f"round {round_ + 1}/{args.rounds}: {name:>10} {seconds[name][-1]:7.2f} s "
                      f"({args.batch_size * args.batches / seconds[name][-1]:.1f} images/s), "
                      f"load {harness.load_average():.2f}", flush=True)
    summary = harness.summarise(seconds, "original")
    for name, row in summary.items():
        row["images_per_second"] = args.batch_size * args.batches / row["median"]
        row["peak_pss_mb"] = peaks[name] / 1e6
    print(f"seconds per {args.batches} batches of {args.batch_size}:")
    harness.print_table(summary, "original")
    for name, row in summary.items():
        print(f"{name:>10}: {row['images_per_second']:.1f} images/s, peak PSS {row['peak_pss_mb']:.0f} MB")
    settings = {"crops": f"{args.size} px", "batch": args.batch_size, "timed batches per round": args.batches,
                "rounds": args.rounds, "workers": args.workers, "threads": args.threads, "device": str(device),
                "data MB": round(path.stat().st_size / 1e6)}
    if not args.no_save:
        harness.save("training", summary, load, settings)


if __name__ == "__main__":
    main()
