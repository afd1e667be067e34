"""to_dot: Graphviz text for GIR kernels."""
import re
import shutil
import subprocess

import pytest

from warpweave.ir import dtypes as dt
from warpweave.ir.gir import Edge, Node, make_kernel
from warpweave.ir.gir_dot import FAMILY_SHAPES, LEVEL_COLORS, to_dot


from tests.ir import example_kernels as EX  # noqa: E402



def _balanced(text: str) -> bool:
    """Braces balance outside quoted strings and HTML labels (a cheap syntax check)."""
    depth, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c == "<":
            level = 1
            i += 1
            while level:
                level += {"<": 1, ">": -1}.get(text[i], 0)
                i += 1
            continue
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth < 0:
                return False
        i += 1
    return depth == 0


@pytest.mark.parametrize("name", sorted(EX.GOOD))
def test_clusters_colours_and_shapes(name):
    k = EX.GOOD[name]()
    dot = to_dot(k)
    assert dot.startswith("digraph ") and _balanced(dot)
    clusters = re.findall(r'subgraph "cluster_[^"]*"', dot)
    assert len(clusters) == len(k.scopes)
    for s in k.scopes.values():
        assert f"{s.scope_kind} {s.attr('var')} < {s.attr('extent')}" in dot
    levels = {e.level for e in k.edges}
    for level in levels:
        assert f'color="{LEVEL_COLORS[level]}"' in dot
    for level, colour in LEVEL_COLORS.items():  # the legend names all three
        assert f'<font color="{colour}">' in dot
    for n in k.nodes:
        if not n.is_scope:
            assert f'"{n.id}" [label=' in dot and f"shape={FAMILY_SHAPES[n.family]}" in dot
    assert dot.count(" -> ") == len(k.edges)


def test_rowsum_has_all_three_levels_and_nesting():
    dot = to_dot(EX.rowsum_kernel())
    for colour in LEVEL_COLORS.values():
        assert f'"{colour}", fontcolor=' in dot
    # the serial loop's cluster sits inside the block's, inside the grid's
    grid, block, serial = (dot.index(f"{kind} {v} <") for kind, v in
                           (("grid", "g"), ("block", "t"), ("serial", "i")))
    assert grid < block < serial
    assert 'shape=octagon' in dot and 'shape=cylinder' in dot and 'shape=parallelogram' in dot
    assert '"%0" -> "%6" [color="red"' in dot and 'label="global float32"' in dot
    assert 'label="shared float32"' in dot


def test_labels_are_escaped():
    k = EX.cpu_kernel()
    odd = Node('%q"uote\\', "compute.custom", "%3", dt.float32, {"note": 'a "b" \\ c\nd'})
    k = make_kernel('name "with" quotes', k.params, k.shared, k.nodes + (odd,),
                    k.edges + (Edge("%6", odd.id, 0, "reg", dt.float32),
                               Edge("%6", "%gone", 0, "weird", dt.float32)), k.target)
    dot = to_dot(k)
    assert _balanced(dot)
    assert '"%q\\"uote\\\\"' in dot and "missing" in dot
    _render(dot)


def _render(dot: str):
    try:
        import pydot  # noqa: F401
    except ImportError:
        pydot = None
    if pydot is not None:
        assert pydot.graph_from_dot_data(dot)
    if shutil.which("dot"):
        out = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        assert "<svg" in out.stdout


@pytest.mark.parametrize("name", sorted(EX.GOOD))
def test_renders_when_graphviz_is_available(name):
    try:
        import pydot  # noqa: F401
        have_pydot = True
    except ImportError:
        have_pydot = False
    if not have_pydot and not shutil.which("dot"):
        pytest.skip("neither pydot nor the dot binary is installed")
    _render(to_dot(EX.GOOD[name]()))
