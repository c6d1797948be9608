"""The one-way dependency order (../shared/ARCHITECTURE.md), checked on the source."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(folder: str) -> set[tuple[str, str]]:
    found = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {(path.name, a.name) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add((path.name, node.module))
    return found


@pytest.mark.parametrize("folder,allowed", [
    # the schema validator and the signature check are imported where they are used (test below)
    ("edgegen/core", {"numpy", "jsonschema", "cryptography"}),
    # each backend may import its own library (tvm, onnxruntime, coremltools, pyopencl, wgpu); the pipelines need
    # tokenizers and PIL
    ("runtimes", {"numpy", "edgegen.core", "tvm", "onnxruntime", "coremltools", "tokenizers", "PIL", "pyopencl",
                  "wgpu"}),
    ("kernels", {"numpy", "edgegen.core", "tvm"}),
])
def test_layer_imports(folder, allowed):
    bad = sorted((f, m) for f, m in _imports(folder)
                 if m.split(".")[0] not in sys.stdlib_module_names and not any(m == a or m.startswith(a + ".")
                                                                               for a in allowed))
    assert not bad, f"{folder} imports outside its layer: {bad}"


def test_core_imports_numpy_only():
    import subprocess
    import sys

    code = ("import sys, edgegen.core, edgegen.core.manifest_check, edgegen.core.signing; "
            "print(sorted(m for m in ('jsonschema', 'cryptography') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
