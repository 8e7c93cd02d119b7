"""pyproject.toml, environment.yml and binder/ must install the same things."""

import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name, where they differ


def _name(requirement):
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


@pytest.fixture(scope="module")
def pyproject():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_matches_pyproject(pyproject):
    project = pyproject["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in ("dev", "lab"):
        wanted |= {_name(r) for r in project["optional-dependencies"][extra]}
    wanted = {CONDA_NAMES.get(n, n) for n in wanted}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {_name(d) for d in env["dependencies"] if isinstance(d, str)} - {"python", "pip"}
    assert conda == wanted, f"only in environment.yml: {conda - wanted}; only in pyproject: {wanted - conda}"
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert any(line.endswith(" .") or line == "." for line in pip_section), "environment.yml must install the package"


def test_binder_installs_runtime_and_package(pyproject):
    runtime = {_name(r) for r in pyproject["project"]["dependencies"]}
    lines = [l for l in (ROOT / "binder" / "requirements.txt").read_text().splitlines()
             if l.strip() and not l.startswith(("#", "-"))]
    binder = {_name(l) for l in lines}
    assert runtime <= binder, f"binder/requirements.txt lacks {runtime - binder}"
    assert "download.pytorch.org/whl/cpu" in (ROOT / "binder" / "requirements.txt").read_text()
    assert "pip install --no-deps -e ." in (ROOT / "binder" / "postBuild").read_text()


def test_console_script_and_urls(pyproject):
    assert pyproject["project"]["scripts"]["micranet"] == "micranet_utils.cli:main"
    assert pyproject["project"]["urls"]["Repository"].startswith("https://github.com/")


def test_licence_is_full_gpl3():
    text = (ROOT / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 3, 29 June 2007" in text
    assert len(text.splitlines()) > 600


def test_cli_runs_and_lists_subcommands(capsys):
    from micranet_utils.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "info" in out


def test_cli_info_on_bad_file_gives_one_line(tmp_path, capsys):
    from micranet_utils.cli import main

    bad = tmp_path / "model zoo é.hdf5"
    bad.write_text("hello")
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "model zoo é.hdf5" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_every_subpackage_and_module_is_reachable_from_the_top():
    import micranet_utils as mu

    missing = [name for name in mu.__all__ if getattr(mu, name, None) is None]
    assert not missing, missing
    assert mu.model.network.MICRANet.__module__ == "micranet_utils.model.network"
    assert mu.tutorial.baselines.unet.UNet.__module__ == "micranet_utils.tutorial.baselines.unet"


# import name -> distribution name, where they differ
DISTRIBUTIONS = {"skimage": "scikit-image", "IPython": "ipython", "lazy_loader": "lazy-loader",
                 "yaml": "pyyaml", "PIL": "pillow", "bioimageio": "bioimageio.core"}


def test_every_library_the_package_imports_is_declared(pyproject):
    """A module imported anywhere in micranet_utils is a declared dependency (or in an extra)."""
    import ast

    declared = {_name(r) for r in pyproject["project"]["dependencies"]}
    extras = {_name(r) for group in pyproject["project"]["optional-dependencies"].values() for r in group}
    imported = set()
    for path in (ROOT / "micranet_utils").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = {name for name in imported if name not in sys.stdlib_module_names and name != "micranet_utils"}
    missing = {name for name in third_party
               if DISTRIBUTIONS.get(name, name).lower().replace("_", "-") not in declared | extras}
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"
