"""Run every lesson headless, in order, and record time and memory.

    python tools/run_lessons.py [--output outputs] [--only 02_architecture ...]

Executed copies go to OUTPUT/NN_topic.ipynb; OUTPUT/summary.json records, per
lesson, the wall-clock seconds and the peak resident memory (MB) of the kernel
and everything it started (sum over the process tree, sampled every 0.2 s), and
the ``comparison`` table that lesson 06 leaves in the work folder. A lesson that
does not exist yet is skipped with a message. Exit status 1 if any lesson failed.
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

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ["01_download", "02_architecture", "03_training", "04_gradcam_maps",
           "05_segmentation_detection", "06_baselines", "07_inhouse_data"]


class PeakMemory:
    """Sample the summed RSS of this process's descendants until stopped."""

    def __init__(self, interval=0.2):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for child in me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_lesson(name, output, timeout):
    source = ROOT / "notebooks" / f"{name}.ipynb"
    if not source.exists():
        source = source.with_suffix(".py")
    if not source.exists():
        print(f"[skip] {name}: lesson not written yet")
        return None
    notebook = jupytext.read(source)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT / "notebooks")}})
    print(f"[run ] {name} ...", flush=True)
    start, error = time.perf_counter(), None
    with PeakMemory() as memory:
        try:
            client.execute()
        except Exception as err:  # a failing cell: record it, keep the partial notebook
            error = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
    seconds = time.perf_counter() - start
    jupytext.write(notebook, output / f"{name}.ipynb")
    record = {"seconds": round(seconds, 1), "peak_rss_mb": round(memory.peak / 2**20, 1),
              "ok": error is None}
    if error:
        record["error"] = error
    status = "ok  " if error is None else "FAIL"
    print(f"[{status}] {name}: {seconds:.0f} s, peak {record['peak_rss_mb']:.0f} MB"
          + (f"\n       {error}" if error else ""), flush=True)
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=str(ROOT / "outputs"))
    parser.add_argument("--only", nargs="*", help="lesson names to run (default: all)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
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
        record = run_lesson(name, output, args.timeout)
        if record is None:
            continue
        summary["lessons"][name] = record
        if not record["ok"]:
            failed.append(name)
    comparison = work / "comparison.json"
    if comparison.exists():
        summary["comparison"] = json.loads(comparison.read_text())
    summary["total_seconds"] = round(time.perf_counter() - total_start, 1)
    summary["fast_mode"] = os.environ.get("MICRANET_FAST", "0") == "1"
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
