"""Backend `onnxruntime`: an ONNX model run by onnxruntime's CPU provider."""

from __future__ import annotations

import importlib.util

import numpy as np

from edgegen.core.artifact import Artifact, Component
from edgegen.core.cpus import available_cores
from edgegen.core.errors import ArtifactError, InputError
from edgegen.core.quiet import verbose
from edgegen.core.specs import check_inputs

from .native_errors import wrapped

INSTALL_HINT = "pip install 'edgegen[onnx]' (onnxruntime==1.31.1)"
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
               "tensor(int32)": np.int32, "tensor(double)": np.float64}


def is_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def adapt_feed(session, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Fit a feed to what the ONNX graph declares: its input dtypes (optimum exports token ids
    as int64) and a scalar where the graph takes one (optimum's UNet timestep) and the caller
    passes one value per batch row, all equal."""
    out = {}
    for inp in session.get_inputs():
        if inp.name not in feed:
            raise InputError(f"ONNX model input {inp.name!r} was not given (got {sorted(feed)})")
        a = np.asarray(feed[inp.name])
        if len(inp.shape) == 0 and a.ndim == 1:
            if a.size and not np.all(a == a[0]):
                raise InputError(f"input {inp.name!r}: this ONNX model takes one scalar for the whole batch, "
                                 f"got different values {a.tolist()}")
            a = a[0]
        out[inp.name] = np.array(a, dtype=_ORT_DTYPES.get(inp.type, a.dtype), order="C")  # keeps 0-d as 0-d
    return out


class Session:
    """`threads`: onnxruntime's intra-op threads (default: every core this process may use)."""

    def __init__(self, artifact: Artifact, component: Component, threads: int | None = None):
        import onnxruntime as ort

        self.component = component
        opts = ort.SessionOptions()
        opts.log_severity_level = 2 if verbose() else 3     # 2: onnxruntime's default, warnings
        self.threads = opts.intra_op_num_threads = threads or available_cores()
        if "model" not in component.files:
            raise ArtifactError(f"component {component.name!r}: the manifest names no model file (files/model); "
                                f"rebuild the artifact.")
        self._model = artifact.file(component.files["model"])
        with wrapped(component.name, "loading the ONNX model", self._model):
            self._sess = ort.InferenceSession(str(self._model), opts, providers=["CPUExecutionProvider"])
        self._names = [s.name for s in component.outputs]

    def run(self, **inputs) -> dict[str, np.ndarray]:
        arrays = check_inputs(self.component.inputs, inputs, f"component {self.component.name!r}")
        feed = adapt_feed(self._sess, {s.name: a for s, a in zip(self.component.inputs, arrays)})
        with wrapped(self.component.name, "running the ONNX model", self._model):
            return dict(zip(self._names, self._sess.run(self._names, feed)))

    def close(self) -> None:
        self._sess = None


def load(artifact: Artifact, component: Component, threads: int | None = None) -> Session:
    return Session(artifact, component, threads)
