"""The import direction of the layers: the array layer (Tensor and the raw device ops) imports nothing
from autograd or anything above it, at module level or inside a function, so there is no import circle
between them (the registry's methods reach Tensor and Variable from surface.py, above both)."""

import ast
import pathlib

import axonml_autograd

PACKAGE = pathlib.Path(axonml_autograd.__file__).parent
# Below autograd: devices, kernels, launches, and the array type with its raw ops.
ARRAY_LAYER = {"device", "target", "kernels", "launch", "fusion", "tuning", "expr", "registry", "tensor", "shapes",
               "elementwise_kernels", "rows", "pointwise", "matmul", "random", "attribute_values", "dtypes"}


def imports_of(path: pathlib.Path) -> set:
    """The package modules ``path`` imports anywhere in it (first component below the package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and not (node.module or "").startswith("axonml_autograd"):
                continue
            parts = (node.module or "").split(".")
            if node.level == 0:
                parts = parts[1:]
            if parts and parts[0]:
                found.add(parts[0])
            else:   # from . import x, y
                found |= {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("axonml_autograd.")}
    return found


def test_the_array_layer_imports_nothing_above_it():
    above = {}
    for name in sorted(ARRAY_LAYER):
        wrong = imports_of(PACKAGE / f"{name}.py") - ARRAY_LAYER
        if wrong:
            above[name] = sorted(wrong)
    assert above == {}, f"array-layer modules importing from above: {above}"


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from .variable import Variable\n    from . import surface\n")
    assert imports_of(bad) == {"variable", "surface"}
