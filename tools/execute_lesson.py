"""Build a lesson's .ipynb from its .py (jupytext) and execute it in place.

    python tools/execute_lesson.py notebooks/02_architecture.py [more.py ...]

The notebook runs with notebooks/ as its working directory and
MICRANET_WORKDIR=outputs/work (unless already set), like `make tutorial`.
Set MICRANET_FAST=1 for fast mode. The executed notebook, outputs included,
is written next to the .py file.
"""

import os
import sys
import time
from pathlib import Path

import jupytext
import nbclient
from run_lessons import QUIET_KERNEL  # tools/ is on sys.path when this script runs

ROOT = Path(__file__).resolve().parents[1]


def execute(py_path, timeout=1800):
    py_path = Path(py_path).resolve()
    notebook = jupytext.read(py_path)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    os.environ.setdefault("MICRANET_WORKDIR", str(ROOT / "outputs" / "work"))
    client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(py_path.parent)}},
                                     extra_arguments=QUIET_KERNEL)
    start = time.perf_counter()
    client.execute()
    jupytext.write(notebook, py_path.with_suffix(".ipynb"))
    # keep the .py byte-identical to the notebook's cells (jupytext pairing)
    jupytext.write(notebook, py_path, fmt="py:percent")
    return time.perf_counter() - start


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        seconds = execute(arg)
        print(f"{arg}: executed in {seconds:.0f} s (fast mode: {os.environ.get('MICRANET_FAST', '0')})")
