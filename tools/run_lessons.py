"""Run every lesson headless, in order, and record time and memory.

    python tools/run_lessons.py [--output outputs] [--only 02_architecture ...]

Executed copies go to OUTPUT/NN_topic.ipynb; OUTPUT/summary.json records, per
lesson, the wall-clock seconds and the peak memory (MB) of the kernel and
everything it started, sampled every 0.2 s: ``peak_rss_mb`` sums the resident
memory over the process tree (pages the DataLoader workers share with the
kernel count once per process), ``peak_pss_mb`` sums the proportional set size
(shared pages split between their processes: the honest total; sampled every
second; Linux only),
``peak_process_rss_mb`` is the largest single process, and ``peak_cells`` the
index of the cell running at each peak (``--cell-memory`` prints the peaks of
every cell). Also the ``comparison`` table that lesson 06 leaves in the work
folder. A lesson that does not exist yet is skipped with a message. Exit status
1 if any lesson failed.
"""

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import jupytext
import nbclient
import psutil

from micranet_utils.tutorial.lessons import is_fast

ROOT = Path(__file__).resolve().parents[1]
# the kernel's start-up notice about its local TCP link would repeat before every lesson
QUIET_KERNEL = ["--IPKernelApp.log_level=ERROR"]
LESSONS = ["01_download", "02_architecture", "03_training", "04_gradcam_maps",
           "05_segmentation_detection", "06_baselines", "07_inhouse_data"]


def _pss_bytes(pid):
    """Proportional set size of one process (bytes), from /proc/PID/smaps_rollup; None if unreadable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as file:
            for line in file:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class PeakMemory:
    """Sample the memory of this process's descendants until stopped.

    Three peaks, each over the samples (every `interval` seconds; PSS every
    `pss_interval` seconds, as reading it is slower):

    * ``rss``: the summed resident memory of the tree. Pages shared between the
      kernel and the DataLoader workers it forks count once per process, so this
      over-states what the tree really holds.
    * ``pss``: the summed proportional set size (a page shared by n processes
      counts 1/n in each), the honest total; None where /proc has no
      smaps_rollup (not Linux).
    * ``process_rss``: the largest resident memory of a single process.

    ``cell`` is set by the caller to the index of the cell running now; the
    cell that held each peak is kept in ``cells``.
    """

    def __init__(self, interval=0.2, pss_interval=1.0):
        self.interval, self.pss_interval, self._stop = interval, pss_interval, threading.Event()
        self._last_pss = -float("inf")
        self.peak = {"rss": 0, "pss": 0, "process_rss": 0}
        self.cells = {key: None for key in self.peak}
        self.has_pss, self.cell = os.path.exists("/proc/self/smaps_rollup"), None
        self.per_cell = {}          # cell index -> {"rss": peak, "pss": peak, "process_rss": peak}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, me):
        now = {"rss": 0, "pss": 0, "process_rss": 0}
        # PSS costs the kernel a walk over the page tables (tens of ms for a large
        # process): read it at most every pss_interval seconds
        with_pss = self.has_pss and time.monotonic() - self._last_pss >= self.pss_interval
        if with_pss:
            self._last_pss = time.monotonic()
        for child in me.children(recursive=True):
            try:
                rss = child.memory_info().rss
            except psutil.Error:
                continue
            now["rss"] += rss
            now["process_rss"] = max(now["process_rss"], rss)
            if with_pss:
                now["pss"] += _pss_bytes(child.pid) or 0     # 0: the process has just ended
        cell_peak = self.per_cell.setdefault(self.cell, dict.fromkeys(now, 0))
        for key, value in now.items():
            if key == "pss" and not with_pss:
                continue
            cell_peak[key] = max(cell_peak[key], value)
            if value > self.peak[key]:
                self.peak[key], self.cells[key] = value, self.cell

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            self._sample(me)
            self._stop.wait(self.interval)

    def record(self):
        """The peaks in MB (keys of summary.json), and the cells that held them."""
        mb = {key: round(value / 2**20, 1) for key, value in self.peak.items()}
        return {"peak_rss_mb": mb["rss"], "peak_pss_mb": mb["pss"] if self.has_pss else None,
                "peak_process_rss_mb": mb["process_rss"],
                "peak_cells": {f"{key}_mb": cell for key, cell in self.cells.items()}}

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def print_cell_memory(notebook, memory):
    """One line per cell that was sampled: its peaks (MB) and its first source line."""
    print(f"{'cell':>6} {'RSS sum':>8} {'PSS sum':>8} {'largest':>8}  first line")
    for index, peak in sorted(memory.per_cell.items(), key=lambda item: -1 if item[0] is None else item[0]):
        line = "(before the first cell)" if index is None else \
            (notebook.cells[index].source.strip().splitlines() or [""])[0][:60]
        print(f"{'-' if index is None else index:>6} " + " ".join(
            f"{peak[key] / 2**20:>8.0f}" for key in ("rss", "pss", "process_rss")) + f"  {line}")


def run_lesson(name, output, timeout, cell_memory=False):
    source = ROOT / "notebooks" / f"{name}.ipynb"
    if not source.exists():
        source = source.with_suffix(".py")
    if not source.exists():
        print(f"[skip] {name}: lesson not written yet")
        return None
    notebook = jupytext.read(source)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    memory = PeakMemory()

    def note_cell(cell, cell_index, **_):
        memory.cell = cell_index

    client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT / "notebooks")}},
                                     on_cell_execute=note_cell,
                                     extra_arguments=QUIET_KERNEL)
    print(f"[run ] {name} ...", flush=True)
    start, error = time.perf_counter(), None
    with memory:
        try:
            client.execute()
        except Exception as err:  # a failing cell: record it, keep the partial notebook
            error = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
    seconds = time.perf_counter() - start
    jupytext.write(notebook, output / f"{name}.ipynb")
    record = {"seconds": round(seconds, 1), **memory.record(), "ok": error is None}
    if error:
        record["error"] = error
    status = "ok  " if error is None else "FAIL"
    pss = "" if record["peak_pss_mb"] is None else f", PSS {record['peak_pss_mb']:.0f} MB"
    print(f"[{status}] {name}: {seconds:.0f} s, peak RSS {record['peak_rss_mb']:.0f} MB (summed){pss}, "
          f"largest process {record['peak_process_rss_mb']:.0f} MB"
          + (f"\n       {error}" if error else ""), flush=True)
    if cell_memory:
        print_cell_memory(notebook, memory)
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=str(ROOT / "outputs"))
    parser.add_argument("--only", nargs="*", help="lesson names to run (default: all)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    parser.add_argument("--cell-memory", action="store_true", help="print the memory peaks of every cell")
    args = parser.parse_args(argv)
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.setdefault("MICRANET_WORKDIR", str(output / "work")))
    summary_path = output / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary.setdefault("lessons", {})
    failed = []
    total_start = time.perf_counter()
    for name in args.only or LESSONS:
        record = run_lesson(name, output, args.timeout, args.cell_memory)
        if record is None:
            continue
        summary["lessons"][name] = record
        if not record["ok"]:
            failed.append(name)
    comparison = work / "comparison.json"
    if comparison.exists():
        summary["comparison"] = json.loads(comparison.read_text())
    summary["total_seconds"] = round(time.perf_counter() - total_start, 1)
    summary["fast_mode"] = is_fast()
    summary["machine"] = {"cpus": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1)}
    tmp = summary_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True))
    os.replace(tmp, summary_path)
    print(f"summary written to {summary_path}")
    if failed:
        print(f"{len(failed)} lesson(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
