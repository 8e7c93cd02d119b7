"""What the package tells users to type exists: every ``--option`` its messages name.

Docstrings are prose for readers of the code and may speak of any command; the
messages and help texts are what a user sees.

A message raised by a module can reach the user through every ``micranet``
subcommand that runs that module, so each option a module names must exist in
each of those subcommands (``images`` told ``micranet predict`` users to pass
``--plane``, which only ``make-dataset`` had).
"""

import ast
import re
from pathlib import Path

import pytest
from test_layers import MODULES, imports

from micranet_utils import cli

ROOT = Path(__file__).resolve().parents[1]
NOT_OURS = {"--nproc-per-node", "--nnodes", "--rdzv-backend", "--rdzv-endpoint", "--help", "--version"}


def options_of(name):
    parser = cli.build_parser(only=name)
    command = next(a for a in parser._actions if a.dest == "command").choices[name]
    return {flag for action in command._actions for flag in action.option_strings}


def docstrings(tree):
    """The docstring nodes of a module and of its functions and classes (prose for readers, not messages)."""
    owners = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                    ast.ClassDef))]
    return {id(owner.body[0].value) for owner in owners if owner.body and isinstance(owner.body[0], ast.Expr)
            and isinstance(owner.body[0].value, ast.Constant)}


def options_named_in(module):
    """``--words`` inside the strings of a module that can reach the user (messages, help texts)."""
    tree = MODULES[module][1]
    prose = docstrings(tree)
    named = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            named |= set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", node.value))
    return named - NOT_OURS


def modules_run_by(subcommand):
    """The package modules a subcommand's functions in cli.py import, and everything they import."""
    functions = {f"_{subcommand.replace('-', '_')}_arguments", f"_{subcommand.replace('-', '_')}_run"}
    tree = MODULES["micranet_utils.cli"][1]
    lines = {n.lineno for f in tree.body if isinstance(f, ast.FunctionDef) and f.name in functions
             for n in ast.walk(f) if hasattr(n, "lineno")}
    todo = [t for t, _, line, _ in imports("micranet_utils.cli") if line in lines and t in MODULES]
    seen = set()
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += [t for t, _, _, _ in imports(module) if t in MODULES]
    return seen


@pytest.mark.parametrize("subcommand", sorted(cli.SUBCOMMANDS))
def test_options_named_on_the_way_of_a_subcommand_exist_in_it(subcommand):
    known = options_of(subcommand)
    modules = modules_run_by(subcommand)
    assert modules, f"{subcommand}: found no module it runs"
    unknown = sorted(f"{m}: {o}" for m in modules for o in options_named_in(m) - known)
    assert not unknown, f"'micranet {subcommand}' may print options it does not have:\n" + "\n".join(unknown)


def test_the_check_sees_the_plane_option_the_image_reader_names():
    assert "--plane" in options_named_in("micranet_utils.io.images")
    assert "micranet_utils.io.images" in modules_run_by("predict")
