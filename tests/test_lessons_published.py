"""Each lesson's ``DATASET = "actin"`` branch, run offline against the stand-in published files.

Every lesson offering the choice is executed with its parameters cell
switched from ``"demo"`` to ``"actin"``, in fast mode, with ``MICRANET_HOME``
holding the stand-in archive of ``tests/published_archive.py`` (already
downloaded by the ``published_home`` fixture, through ``micranet download``'s
code) and the server still up for anything fetched on first use. Lesson 05
reads the two Actin sample images of the original repository, which are
copied into its work folder from ``../shared`` (the test skips without them).

The weights are random: this checks that the published branch runs, not what
it scores. Three lessons are too slow to run whole here (:data:`SUBSETS` says
why); CI runs the cells their published branch needs, in order, up to the
heavy step. All lessons share one kernel (reset between lessons) and one work
folder, as in ``make tutorial``. ``MICRANET_PUBLISHED_LESSONS=full`` runs
every lesson whole; measured on 2 busy cores: lesson 07 passes (about 70 s of
CPU), lesson 06 stops at its assertion that MICRA-Net's Dice exceeds 0.2,
which random weights cannot meet (about 50 s of CPU to get there), lesson 03
needs more than 4 minutes of CPU.
"""

import os
import re
import shutil
import sys
from pathlib import Path

import jupytext
import nbclient
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from run_lessons import QUIET_KERNEL

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "upstream-samples" / "actin"
SETUP = "<the first code cell after the parameters cell>"
SUBSETS = {
    "03_training": {
        "why": "it trains the demo model before its published branch, whose two epochs of fine-tuning "
               "take about 45 s of CPU more; here they stop after two batches",
        "cells": [SETUP, "crops = CropDataset(splits", 'if DATASET == "actin":'],
        "glue": {'if DATASET == "actin":': "names = list(crops.class_names)\n"
                                           "SETTINGS = {**SETTINGS, 'max_batches': 2, 'bn_recalibration_crops': 32}"}},
    "06_baselines": {
        "why": "it then evaluates MICRA-Net, the U-Net and the ResNet-50 Mask R-CNN on 80 crops of 256 px",
        "cells": [SETUP, 'tree = fetch_published("all")', "maskrcnn.load_maskrcnn(",
                  "recalibrate_batchnorm(micranet_model", 'seconds = {"micranet"', "extract_ilastik_project(zoo"]},
    "07_inhouse_data": {
        "why": "it then fine-tunes on 256-px crops (about 70 s of CPU in fast mode)",
        "upto": "start_model, start_params = load_zoo(START)"},
}
"""Lesson -> the cells run in CI (each named by a line it contains) and why not the whole lesson.

``upto``: every cell up to the one containing it; ``cells``: the parameters
cell and these cells (:data:`SETUP`: the lesson's setup cell); ``glue``: code
run before the cell named, for a name the skipped cells would have defined or
for less work on the same code path."""


EXPECTED = {"02": "published model:", "03": "fine-tuned published model", "05": "model ActinModelZoo.hdf5",
            "06": "ACTIN.ilp written", "07": "start model: ActinModelZoo.hdf5"}
"""Lesson number -> what its published branch prints (a regular expression; default: the data set line)."""


def lessons_with_a_published_branch():
    """The lessons whose parameters cell offers ``DATASET = "actin"``."""
    found = []
    for script in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")):
        if re.search(r'DATASET [!=]= "(actin|demo)"', script.read_text()):
            found.append(script.stem)
    return found


def _cell_index(cells, line):
    if line == SETUP:
        parameters = next(k for k, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
        return next(k for k in range(parameters + 1, len(cells)) if cells[k].cell_type == "code")
    found = [k for k, cell in enumerate(cells) if cell.cell_type == "code" and line in cell.source]
    assert found, f"no code cell contains {line!r}: update SUBSETS in {Path(__file__).name}"
    return found[0]


def select_cells(notebook, subset):
    """The cells of `subset` (see :data:`SUBSETS`), in lesson order, glue included."""
    cells = notebook.cells
    if "upto" in subset:
        return cells[:_cell_index(cells, subset["upto"]) + 1]
    chosen = sorted({k for k, c in enumerate(cells) if "parameters" in c.metadata.get("tags", [])} |
                    {_cell_index(cells, line) for line in subset["cells"]})
    glue = {_cell_index(cells, line): code for line, code in subset.get("glue", {}).items()}
    selected = []
    for k in chosen:
        if k in glue:
            selected.append(nbformat.v4.new_code_cell(glue[k]))
        selected.append(cells[k])
    return selected


def published_branch(stem, whole=False):
    """Lesson `stem` with ``DATASET = "actin"``: every cell, or those of :data:`SUBSETS`."""
    notebook = jupytext.read(ROOT / "notebooks" / f"{stem}.py")
    parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and 'DATASET = "demo"' in parameters[0].source
    parameters[0].source = parameters[0].source.replace('DATASET = "demo"', 'DATASET = "actin"')
    if stem in SUBSETS and not whole:
        notebook.cells = select_cells(notebook, SUBSETS[stem])
    return notebook


RESET = "%reset -f\nimport matplotlib.pyplot\nmatplotlib.pyplot.close('all')"
"""Run before each lesson in the shared kernel: the lessons' names go, the imported modules stay."""


@pytest.fixture(scope="module")
def lesson_kernel(published_server, published_home, tmp_path_factory):
    """One kernel for all the lessons (each one's start and imports cost seconds of CPU).

    Its environment: fast mode, one work folder shared by the lessons (as in
    ``make tutorial``), ``MICRANET_HOME`` holding the stand-in published files.
    """
    work = tmp_path_factory.mktemp("published-lessons")
    if SAMPLES.is_dir():
        shutil.copytree(SAMPLES, work / "actin_samples")     # what lesson 05 downloads, pinned by SHA-256
    environment = {"MICRANET_FAST": "1", "MICRANET_WORKDIR": str(work), "MICRANET_HOME": str(published_home),
                   "MICRANET_BASE_URL": published_server.url, "MICRANET_DOWNLOAD_RETRIES": "0"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        client = nbclient.NotebookClient(nbformat.v4.new_notebook(), timeout=600, kernel_name="python3",
                                         resources={"metadata": {"path": str(ROOT / "notebooks")}},
                                         extra_arguments=QUIET_KERNEL)
        with client.setup_kernel():
            yield client


def run_in(client, notebook):
    """Execute `notebook`'s code cells in `client`'s kernel, after :data:`RESET`; returns `notebook`."""
    notebook.cells.insert(0, nbformat.v4.new_code_cell(RESET))
    client.nb = notebook                      # execute_cell stores each executed cell back at its index
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            client.execute_cell(cell, index)
    return notebook


def outputs_text(notebook):
    return "\n".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                     for o in c.get("outputs", []) if o.get("output_type") == "stream")


def test_lessons_are_found():
    assert {"01_download", "02_architecture", "05_segmentation_detection"} <= set(lessons_with_a_published_branch())


@pytest.mark.parametrize("stem", lessons_with_a_published_branch())
def test_published_branch_runs(stem, lesson_kernel):
    if stem.startswith("05_") and not SAMPLES.is_dir():
        pytest.skip(f"the Actin sample images are not available ({SAMPLES} is absent)")
    whole = os.environ.get("MICRANET_PUBLISHED_LESSONS", "").strip().lower() == "full"
    text = outputs_text(run_in(lesson_kernel, published_branch(stem, whole=whole)))
    assert re.search(EXPECTED.get(stem[:2], r"data set:?\s+actin"), text), text[-3000:]
    assert "DATASET is 'demo'" not in text
