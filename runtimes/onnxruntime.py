"""Backend `onnxruntime`: an ONNX model run by onnxruntime's CPU provider."""

from __future__ import annotations

import importlib.util

import numpy as np

from edgegen.core.artifact import Artifact, Component
from edgegen.core.specs import check_inputs

INSTALL_HINT = "pip install 'edgegen[onnx]' (onnxruntime==1.31.1)"


def is_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


class Session:
    def __init__(self, artifact: Artifact, component: Component):
        import onnxruntime as ort

        self.component = component
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self._sess = ort.InferenceSession(str(artifact.file(component.files["model"])), opts,
                                          providers=["CPUExecutionProvider"])
        self._names = [s.name for s in component.outputs]

    def run(self, **inputs) -> dict[str, np.ndarray]:
        arrays = check_inputs(self.component.inputs, inputs, f"component {self.component.name!r}")
        feed = {s.name: np.ascontiguousarray(a) for s, a in zip(self.component.inputs, arrays)}
        return dict(zip(self._names, self._sess.run(self._names, feed)))

    def close(self) -> None:
        self._sess = None


def load(artifact: Artifact, component: Component) -> Session:
    return Session(artifact, component)
