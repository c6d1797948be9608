"""Backend `tvm_vm`: a library compiled by TVM, run by the Relax virtual machine."""

from __future__ import annotations

import importlib.util

import numpy as np

from edgegen.core import safetensors_io
from edgegen.core.artifact import Artifact, Component
from edgegen.core.specs import check_inputs

INSTALL_HINT = "pip install 'edgegen[runtime]' (apache-tvm==0.27.0.post1, apache-tvm-ffi==0.1.14.post0)"


def is_available() -> bool:
    return importlib.util.find_spec("tvm") is not None


class Session:
    def __init__(self, artifact: Artifact, component: Component):
        from .tvm_import import import_tvm

        tvm = import_tvm()
        from tvm.runtime.vm import VirtualMachine

        self.component = component
        self._tvm = tvm
        self._device = tvm.cpu()
        lib = tvm.runtime.load_module(str(artifact.file(component.files["library"])))
        self._vm = VirtualMachine(lib, self._device)
        weights = safetensors_io.load(artifact.file(component.files["weights"]))
        self._params = [tvm.runtime.tensor(np.asarray(weights[s.name]), self._device)
                        for s in component.weights]
        self._main = self._vm["main"]

    def run(self, **inputs) -> dict[str, np.ndarray]:
        arrays = check_inputs(self.component.inputs, inputs, f"component {self.component.name!r}")
        args = [self._tvm.runtime.tensor(np.ascontiguousarray(a), self._device) for a in arrays]
        result = self._main(*args, *self._params)
        outs = [result] if len(self.component.outputs) == 1 else list(result)
        return {spec.name: out.numpy() for spec, out in zip(self.component.outputs, outs)}

    def close(self) -> None:
        self._params = []
        self._vm = None
        self._main = None


def load(artifact: Artifact, component: Component) -> Session:
    return Session(artifact, component)
