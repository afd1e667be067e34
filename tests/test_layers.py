"""The package's import rule (docs/architecture.md, "Layers"): a module imports only
from layers below its own or from its own package, never upward, and the module
import graph has no cycles — function-level (lazy) imports included."""
import ast
import pathlib

import networkx as nx
import pytest

import warpweave

ROOT = pathlib.Path(warpweave.__file__).parent

# Bottom to top; a module may import from a lower rank, or within its own package.
LAYERS = [
    ["errors", "version"],
    ["options", "ir"],
    ["backends"],
    ["passes"],
    ["schedule"],
    ["lower"],
    ["tune"],
    ["program"],
    ["pipeline"],
    ["frontend"],
    ["calibrate"],  # a tool over the frontend: measures the GPU for the cost model
    ["torch", "__init__", "cli"],
    ["__main__"],  # `python -m warpweave` runs the command line
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
MAX_LINES = 800


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(["warpweave", *parts])] = path
    return out


MODULES = _modules()


def _resolve(module: str, path: pathlib.Path, node: ast.AST) -> list[str]:
    """Absolute names of the warpweave modules one import statement reads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "warpweave"]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    if node.level:
        base = package.split(".")
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != "warpweave":
        return []
    names = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
    return names or [target]


def _imports() -> nx.DiGraph:
    graph = nx.DiGraph()
    for module, path in MODULES.items():
        graph.add_node(module)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _resolve(module, path, node):
                    while target not in MODULES:  # `warpweave.x.y` where y is a name in x
                        target = target.rpartition(".")[0]
                    if target != module:
                        graph.add_edge(module, target)
    return graph


def _component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_has_a_layer():
    missing = sorted({_component(m) for m in MODULES} - set(RANK))
    assert not missing, f"packages without a layer in LAYERS: {missing}"


def test_no_module_imports_upward():
    upward = []
    for src, dst in _imports().edges:
        a, b = _component(src), _component(dst)
        if a != b and RANK[b] >= RANK[a] and dst != "warpweave":
            upward.append(f"{src} (layer {RANK[a]}) imports {dst} (layer {RANK[b]})")
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycles():
    graph = _imports()
    graph.remove_node("warpweave")  # the public API imports everything; nothing imports it back
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, "\n".join(" -> ".join(c + [c[0]]) for c in cycles[:10])


def test_nothing_imports_the_public_package():
    offenders = sorted(src for src, dst in _imports().edges if dst == "warpweave")
    assert not offenders, f"modules importing the top-level package: {offenders}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size(module):
    lines = MODULES[module].read_text().count("\n")
    assert lines <= MAX_LINES, f"{module} has {lines} lines (limit {MAX_LINES}): split it by job"


def test_the_rule_catches_an_upward_import(tmp_path, monkeypatch):
    """The checker itself: an upward import planted in a copy of a module is found."""
    fake = tmp_path / "cost.py"
    fake.write_text("from ..pipeline import compile\n")
    monkeypatch.setitem(MODULES, "warpweave.passes.cost", fake)
    graph = _imports()
    assert graph.has_edge("warpweave.passes.cost", "warpweave.pipeline.compile")
    with pytest.raises(AssertionError, match="passes.cost .* imports warpweave.pipeline.compile"):
        test_no_module_imports_upward()
