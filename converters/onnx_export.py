"""Export a captured component to ONNX with torch.onnx (dynamo exporter)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgegen.core.errors import MissingDependencyError

OPSET = 18


def export(captured, path: str | Path) -> None:
    """Write `captured.module` as an ONNX model with the component's input and output names.
    Weights over 2 GB go to an external-data file beside it, as ONNX requires."""
    import torch

    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("ONNX export needs onnx and onnxscript: `pip install 'edgegen[onnx]'`.") from exc
    args = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in captured.inputs.values())
    big = sum(p.numel() * p.element_size() for p in captured.module.parameters()) > (2 << 30) - (64 << 20)
    with torch.no_grad():
        torch.onnx.export(captured.module, args, str(path), input_names=list(captured.inputs),
                          output_names=list(captured.outputs), opset_version=OPSET, dynamo=True,
                          optimize=True, external_data=big, verbose=False)


def session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session for a model file."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingDependencyError("running ONNX needs onnxruntime: `pip install 'edgegen[onnx]'`.") from exc
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
