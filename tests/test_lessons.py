"""Every lesson is a well-formed jupytext pair that follows the lesson template."""

import sys
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import lesson_badges  # noqa: E402

LESSON_SCRIPTS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
LESSON_NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_lessons():
    assert LESSON_SCRIPTS, "no lesson found in notebooks/"


@pytest.mark.parametrize("notebook", LESSON_NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_has_its_script(notebook):
    assert notebook.with_suffix(".py").exists(), f"{notebook.name} has no jupytext pair"


@pytest.mark.parametrize("script", LESSON_SCRIPTS, ids=lambda p: p.stem)
def test_pair_holds_the_same_cells(script):
    notebook = script.with_suffix(".ipynb")
    assert notebook.exists(), f"{script.name}: no executed notebook; run tools/execute_lesson.py"
    from_script = [(c.cell_type, c.source.strip()) for c in jupytext.read(script).cells]
    from_notebook = [(c.cell_type, c.source.strip()) for c in jupytext.read(notebook).cells]
    assert from_script == from_notebook, (
        f"{script.name} and {notebook.name} differ: edit the .py, then run "
        f"tools/execute_lesson.py {script.relative_to(ROOT)}")


@pytest.mark.parametrize("script", LESSON_SCRIPTS, ids=lambda p: p.stem)
def test_notebook_was_executed_without_errors(script):
    notebook = jupytext.read(script.with_suffix(".ipynb"))
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert any(c.get("outputs") for c in code), f"{script.stem}.ipynb has no outputs: execute it"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{script.stem}.ipynb holds error outputs: {errors[0].get('ename')}"


@pytest.mark.parametrize("script", LESSON_SCRIPTS, ids=lambda p: p.stem)
def test_lesson_follows_the_template(script):
    cells = jupytext.read(script).cells
    text = script.read_text()
    badge, install = lesson_badges.expected_lines(script)
    assert cells[0].source.splitlines()[0] == badge[2:], "first line must be the generated badges"
    assert install in text, "the Colab setup cell is missing or stale: run tools/lesson_badges.py"
    parameters = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1, "exactly one cell tagged 'parameters'"
    for name in ("DATASET", "FAST", "DEVICE"):
        assert f"{name} =" in parameters[0].source, f"parameters cell lacks {name}"
    assert "FAST = is_fast()" in parameters[0].source, "fast mode is read by lessons.is_fast, as everywhere"
    for heading in ("**Goal.**", "## What you learned", "## Try this on your data"):
        assert heading in text, f"{script.name} lacks {heading!r}"
    assert any("assert " in c.source for c in cells if c.cell_type == "code"), "a lesson checks its results"
