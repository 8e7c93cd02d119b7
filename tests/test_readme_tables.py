"""tools/readme_tables.py: README tables come from measured results; busy benchmarks are refused."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import readme_tables  # noqa: E402


def result(quiet, load):
    return {"benchmark": "gradcam", "date": "2026-12-03", "machine": "x86_64", "cores": 2, "load_start": load,
            "load_end": load, "quiet": quiet, "settings": {"images": 16},
            "variants": {"original": {"median": 2.0, "low": 1.9, "high": 2.2, "speedup": 1.0, "speedup_low": 1.0,
                                      "speedup_high": 1.0},
                         "ours": {"median": 0.8, "low": 0.75, "high": 0.9, "speedup": 2.5, "speedup_low": 2.3,
                                  "speedup_high": 2.7}}}


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setattr(readme_tables, "ROOT", tmp_path)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "outputs").mkdir()
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- generated: benchmark-gradcam -->\nold figures\n<!-- end generated: benchmark-gradcam -->\n"
                      "<!-- generated: comparison -->\nold table\n<!-- end generated: comparison -->\nend\n")
    return tmp_path, readme


def test_a_quiet_benchmark_is_written_and_check_then_passes(project):
    root, readme = project
    (root / "benchmarks" / "results" / "gradcam.json").write_text(json.dumps(result(True, 0.3)))
    assert readme_tables.main(["--readme", str(readme), "--check"]) == 1
    assert readme_tables.main(["--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "| ours | 0.800 | 0.750 to 0.900 | 2.50x (2.30 to 2.70) |" in text and "old figures" not in text
    assert "load average 0.30 at start" in text and text.startswith("intro\n") and text.endswith("end\n")
    assert readme_tables.main(["--readme", str(readme), "--check"]) == 0


def test_a_busy_benchmark_is_refused(project, capsys):
    root, readme = project
    (root / "benchmarks" / "results" / "gradcam.json").write_text(json.dumps(result(False, 9.5)))
    before = readme.read_text()
    readme_tables.main(["--readme", str(readme)])
    assert readme.read_text() == before
    assert "refused: measured while the machine was busy" in capsys.readouterr().out


def test_the_comparison_comes_from_a_full_mode_summary_only(project):
    root, readme = project
    entry = {"supervision": "image-level", "train_seconds": 12.0, "annotations": "10 yes/no",
             "dice": {"rings": 0.8123, "fibers": 0.7}}
    summary = {"fast_mode": True, "comparison": {"micranet": entry}}
    (root / "outputs" / "summary.json").write_text(json.dumps(summary))
    readme_tables.main(["--readme", str(readme)])
    assert "old table" in readme.read_text()
    summary["fast_mode"] = False
    (root / "outputs" / "summary.json").write_text(json.dumps(summary))
    readme_tables.main(["--readme", str(readme)])
    assert "| 0.81 | 0.70 |" in readme.read_text() and "old table" not in readme.read_text()
