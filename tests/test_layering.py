"""Imports run down the pipeline (docs/design.md, "Import rule"), at module level only.

Each module of ``gnn_jepa`` belongs to a layer; it may import from lower layers and from its own
package, never from a higher layer or from a sibling of its own layer. An import inside a
function (often a way around an import cycle) is refused too.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gnn_jepa"

#: The pipeline's order (docs/design.md); a unit is a top-level module or subpackage.
LAYERS = [("config", "geometry", "allocator"), ("data",), ("graph",), ("datamodule", "masks"), ("tracking",),
          ("viz",), ("nn",), ("models",), ("evaluation",), ("cli",), ("demo",)]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """``gnn_jepa.graph.edges`` -> ``graph``; ``gnn_jepa`` itself -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        yield name, path


def imports(path: Path, module: str):
    """(imported gnn_jepa module, line, at module level?) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{path}:{node.lineno}: relative import; the package imports absolutely"
            names = [node.module]
        else:
            continue
        for name in names:
            if name == "gnn_jepa" or name.startswith("gnn_jepa."):
                yield name, node.lineno, id(node) in top


def test_every_unit_has_a_layer():
    units = {unit_of(m) for m, _ in modules()} - {""}
    assert units <= set(LAYER), f"modules with no layer in LAYERS: {sorted(units - set(LAYER))}"


@pytest.mark.parametrize("module,path", list(modules()), ids=[m for m, _ in modules()])
def test_imports_run_down_the_pipeline(module, path):
    src = unit_of(module)
    for target, line, at_top in imports(path, module):
        where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
        assert at_top, f"{where} inside a function or block: import it at module level"
        dst = unit_of(target)
        if src in ("", dst) or dst == "":
            continue
        assert LAYER[dst] < LAYER[src], (
            f"{where}: {dst!r} (layer {LAYER[dst]}) is not below {src!r} (layer {LAYER[src]})")


def test_the_check_catches_an_upward_and_a_hidden_import(tmp_path):
    """The rule above really fails: an upward import and one inside a function are found."""
    bad = tmp_path / "bad.py"
    bad.write_text("from gnn_jepa.models import TrackFinding\n\ndef f():\n    import gnn_jepa.viz\n")
    found = list(imports(bad, "gnn_jepa.data.bad"))
    assert found == [("gnn_jepa.models", 1, True), ("gnn_jepa.viz", 4, False)]
    assert LAYER[unit_of(found[0][0])] > LAYER["data"]
