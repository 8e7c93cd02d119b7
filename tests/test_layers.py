"""The package's architecture, checked by reading its source: layers, cycles, one home per name.

``micranet_utils/`` holds one folder per layer. A module may import from its own
layer and from the layers below it, never from above; ``analysis`` and ``train``
sit side by side and do not import each other. Function-local imports count
like any other (an import hidden in a function cannot dodge the rule), and only
the command line may use them, to keep ``micranet --help`` from loading PyTorch.
A name is imported from the module that defines it (no re-exports).
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "micranet_utils"

# bottom to top; a tuple holds layers of the same height that must not import each other
STACK = ("base", "model", "io", ("analysis", "train"), "apps", "tutorial", "cli", "__main__")
HEIGHT = {name: h for h, level in enumerate(STACK) for name in (level if isinstance(level, tuple) else (level,))}
LOCAL_IMPORTS_ALLOWED = {"micranet_utils.cli"}


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None          # None: the top-level package itself


def package_of(path, module):
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def read_modules():
    """module name -> (path, syntax tree) for every .py file of the package."""
    return {module_name(p): (p, ast.parse(p.read_text(), str(p))) for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = read_modules()


def defined_names(tree):
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        names.add(leaf.id)
    return names


def imports(module):
    """(target module, imported names or None, line, inside a function?) of every import of ours."""
    path, tree = MODULES[module]
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        local = id(node) not in top_level
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "micranet_utils":
                    found.append((alias.name, None, node.lineno, local))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_of(path, module).split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "micranet_utils":
                continue
            for alias in node.names:
                if f"{target}.{alias.name}" in MODULES:          # `from package import module`
                    found.append((f"{target}.{alias.name}", None, node.lineno, local))
                else:
                    found.append((target, alias.name, node.lineno, local))
    return found


def test_the_package_tree_is_the_layer_list():
    entries = {p.name for p in PACKAGE.iterdir() if not p.name.startswith((".", "__pycache__"))}
    folders = {name for name in HEIGHT if (PACKAGE / name).is_dir()}
    assert folders == {"base", "model", "io", "analysis", "train", "apps", "tutorial"}
    assert entries == folders | {"__init__.py", "__main__.py", "cli.py"}


def test_imports_point_down_the_stack():
    wrong = []
    for module in MODULES:
        source = layer_of(module)
        for target, _, line, _ in imports(module):
            goal = layer_of(target)
            if goal is None or source is None:
                if goal is None and source is not None and target == "micranet_utils":
                    continue                                    # `from .. import __version__`
                if source is None and goal is None:
                    continue
                wrong.append(f"{module}:{line} imports {target}")
                continue
            if HEIGHT[goal] > HEIGHT[source] or (HEIGHT[goal] == HEIGHT[source] and goal != source):
                wrong.append(f"{module}:{line} ({source}) imports {target} ({goal})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_top_level_package_imports_none_of_its_modules():
    assert not imports("micranet_utils")


def test_no_import_cycles_between_modules():
    graph = {m: {t for t, _, _, _ in imports(m) if t in MODULES and t != m} for m in MODULES}
    # a package's __init__ only attaches its modules lazily; it must not import them
    for module, (path, _) in MODULES.items():
        if path.name == "__init__.py":
            assert not graph[module], f"{module} imports {graph[module]}"
    state, cycle = {}, []

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle.append(trail + [node, nxt])
            elif nxt not in state:
                visit(nxt, trail + [node])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [])
    assert not cycle, "import cycle: " + " -> ".join(cycle[0])


def test_imports_inside_functions_only_in_the_command_line():
    hidden = [f"{m}:{line} imports {t}" for m in MODULES if m not in LOCAL_IMPORTS_ALLOWED
              for t, _, line, local in imports(m) if local]
    assert not hidden, "function-local imports of our own modules:\n" + "\n".join(hidden)


def test_every_name_is_imported_from_the_module_that_defines_it():
    borrowed = []
    for module in MODULES:
        for target, name, line, _ in imports(module):
            if name is None or target == "micranet_utils":
                continue
            if target not in MODULES:
                borrowed.append(f"{module}:{line}: no module {target}")
            elif name not in defined_names(MODULES[target][1]):
                borrowed.append(f"{module}:{line}: {name} is not defined in {target}")
    assert not borrowed, "re-exported names:\n" + "\n".join(borrowed)


def test_all_lists_only_names_the_module_defines():
    wrong = []
    for module, (path, tree) in MODULES.items():
        listed = next((node.value for node in tree.body if isinstance(node, ast.Assign)
                       and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)), None)
        if listed is None or path.name == "__init__.py":
            continue
        names = [elt.value for elt in listed.elts]
        wrong += [f"{module}: {n}" for n in names if n not in defined_names(tree)]
    assert not wrong, "__all__ names defined elsewhere:\n" + "\n".join(wrong)


def test_tests_lessons_and_benchmarks_use_the_one_path_of_each_name():
    """Outside the package too, ``from micranet_utils.X import name`` finds `name` defined in X."""
    sources = [*ROOT.glob("tests/*.py"), *ROOT.glob("notebooks/*.py"), *ROOT.glob("benchmarks/*.py"),
               *ROOT.glob("tools/*.py")]
    wrong = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                    and node.module.split(".")[0] == "micranet_utils"):
                continue
            for alias in node.names:
                if f"{node.module}.{alias.name}" in MODULES:
                    continue
                if node.module not in MODULES or alias.name not in defined_names(MODULES[node.module][1]):
                    if not (node.module == "micranet_utils" and alias.name == "__version__"):
                        wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}.{alias.name}")
    assert not wrong, "\n".join(wrong)


# -- documented `python -m` entries --------------------------------------------------------------
def documented_module_entries():
    texts = [*ROOT.glob("*.md"), *ROOT.glob("docs/*.md"), *ROOT.glob("notebooks/*.py"), *PACKAGE.rglob("*.py")]
    found = set()
    for path in texts:
        found |= set(re.findall(r"-m (micranet_utils(?:\.[a-z_]+)*)", path.read_text()))
    return sorted(found)


def test_some_module_entries_are_documented():
    assert "micranet_utils" in documented_module_entries()


@pytest.mark.parametrize("module", documented_module_entries())
def test_every_documented_module_entry_runs(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)
    assert result.returncode == 0 and "usage: micranet" in result.stdout, (module, result.stderr[-500:])


def test_each_package_attaches_exactly_its_modules():
    """``micranet_utils.io.tiles`` and the like are reachable by attribute: the lazy lists are complete."""
    for module, (path, tree) in MODULES.items():
        if path.name != "__init__.py":
            continue
        calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
                 and getattr(node.func, "attr", None) == "attach"]
        assert len(calls) == 1, f"{module}: expected one lazy_loader.attach call"
        listed = next(kw.value for kw in calls[0].keywords if kw.arg == "submodules")
        listed = sorted(ast.literal_eval(listed)) if not isinstance(listed, ast.Call) else None
        present = sorted(p.stem if p.is_file() else p.name for p in path.parent.iterdir()
                         if (p.suffix == ".py" and p.stem not in ("__init__", "__main__", "cli"))
                         or (p.is_dir() and (p / "__init__.py").is_file()))
        if module == "micranet_utils":
            present = sorted(present + ["cli"])
            listed = sorted(ast.literal_eval(next(node.value for node in tree.body if isinstance(node, ast.Assign)
                                                  and node.targets[0].id == "SUBPACKAGES")))
        assert listed == present, f"{module}: attaches {listed}, holds {present}"
