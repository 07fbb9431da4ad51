"""The shape of the library: layers imported only downwards, no cycles, and nothing outside
the algorithms (and the protocol table) asking which algorithm it holds.

Read from the source with `ast`, so a new upward import, cycle or `if algo == "maml"` fails
here rather than in review.
"""

import ast

import pytest

from conftest import ROOT
from tf_meta import ALGORITHMS

PACKAGE = ROOT / "tf_meta"
# Episode -> data -> networks -> learners -> evaluating, training, exporting -> the run.
LAYERS = [
    ["tf_meta.episode", "tf_meta.version", "tf_meta.files", "tf_meta.console"],
    ["tf_meta.data"],
    ["tf_meta.backbones", "tf_meta.distribute", "tf_meta.precision"],
    ["tf_meta.algorithms"],
    ["tf_meta.progress"],
    ["tf_meta.evaluation", "tf_meta.training", "tf_meta.export", "tf_meta.protocols",
     "tf_meta.curves"],
    ["tf_meta.datasets", "tf_meta.config", "tf_meta.run_folder"],
    ["tf_meta.experiment"],
    ["tf_meta.run_command"],  # the run's command line (train.py, tf-meta train|evaluate|export)
    ["tf_meta.predict"],  # reads exports, not the learners
    ["tf_meta.cli"],
]
# Beyond the layering: learners never reach for episode sampling, training or the run.
FORBIDDEN = {"tf_meta.algorithms": ["tf_meta.data"]}
# Where the algorithms' names may appear: their modules and the protocol table.
MAY_NAME_ALGORITHMS = ("tf_meta/algorithms/", "tf_meta/protocols.py")


def module_name(path):
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules():
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path):
    """The tf_meta modules `path` imports (anywhere in it, functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("tf_meta")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tf_meta"):
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules()
                      else node.module for a in node.names}
    return found


def layer(name):
    for i, members in enumerate(LAYERS):
        if any(name == m or name.startswith(m + ".") for m in members):
            return i
    return None  # the package's __init__, which may import anything


def test_every_module_has_a_layer():
    unplaced = [name for name in modules() if name != "tf_meta" and layer(name) is None]
    assert not unplaced, f"place {unplaced} in LAYERS"


@pytest.mark.parametrize("name", [n for n in modules() if n != "tf_meta"])
def test_imports_go_down_the_layers(name):
    for target in imports(modules()[name]):
        if target == "tf_meta":
            pytest.fail(f"{name} imports the package itself (import its modules instead)")
        assert layer(target) <= layer(name), f"{name} imports {target}, a higher layer"
        for prefix, banned in FORBIDDEN.items():
            if name.startswith(prefix):
                assert not any(target.startswith(b) for b in banned), f"{name} imports {target}"


def test_there_are_no_import_cycles():
    graph = {name: {t for t in imports(path) if t in modules()}
             for name, path in modules().items()}
    done, active = set(), []

    def visit(name):
        if name in active:
            pytest.fail("import cycle: " + " -> ".join(active[active.index(name):] + [name]))
        if name in done:
            return
        active.append(name)
        for target in graph[name]:
            visit(target)
        active.pop()
        done.add(name)

    for name in graph:
        visit(name)


def outside_the_algorithms():
    files = [p for p in PACKAGE.rglob("*.py")
             if not str(p.relative_to(ROOT)).startswith(MAY_NAME_ALGORITHMS)]
    return files + [ROOT / "train.py"]


@pytest.mark.parametrize("path", outside_the_algorithms(), ids=lambda p: p.name)
def test_nothing_outside_the_algorithms_asks_which_algorithm_it_holds(path):
    """No algorithm name as a string, no algorithm class imported, no probing with hasattr."""
    classes = {getattr(c, "func", c).__name__ for c in ALGORITHMS.values()}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert node.value not in ALGORITHMS, f"{path.name}:{node.lineno} names {node.value!r}"
        if isinstance(node, ast.ImportFrom):
            named = {a.name for a in node.names} & classes
            assert not named, f"{path.name}:{node.lineno} imports {named}"
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "hasattr":
            pytest.fail(f"{path.name}:{node.lineno} probes with hasattr: read a declaration")
