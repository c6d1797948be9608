"""TVM artifacts run on a remote device through TVM's RPC tracker and server.

A phone or board runs `python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY`
(or TVM's Android/iOS RPC app); this side asks the tracker for a device with that
key, uploads each component's library, and runs the Relax VM there. Weights and
inputs are copied to the device; outputs come back as numpy arrays.
"""

from __future__ import annotations

import re
import socket

import numpy as np

from edgegen.core import safetensors_io
from edgegen.core.artifact import Artifact, Component
from edgegen.core.errors import BackendUnavailableError, InputError
from edgegen.core.specs import check_inputs

_URL = re.compile(r"^rpc://(?P<host>[^:/]+):(?P<port>\d+)/(?P<key>[^/]+)$")


def parse_url(url: str) -> tuple[str, int, str]:
    m = _URL.match(url)
    if not m:
        raise InputError(f"device {url!r}: expected rpc://TRACKER_HOST:TRACKER_PORT/DEVICE_KEY")
    return m["host"], int(m["port"]), m["key"]


def connect(url: str, session_timeout_s: float = 600.0):
    """A remote session on a device registered with the tracker under the URL's key."""
    from .tvm_import import import_tvm

    import_tvm()
    from tvm import rpc

    host, port, key = parse_url(url)
    try:  # TVM's own connect retries for a minute; say at once when nothing listens
        socket.create_connection((host, port), timeout=10).close()
    except OSError as exc:
        raise BackendUnavailableError(f"no device for {url}: no RPC tracker answers at {host}:{port} ({exc}). "
                                      f"Start one: python -m tvm.exec.rpc_tracker --port {port}") from exc
    try:
        tracker = rpc.connect_tracker(host, port)
        return tracker.request(key, priority=1, session_timeout=session_timeout_s, max_retry=2)
    except Exception as exc:  # noqa: BLE001 - tracker/socket errors come as TVMError or RuntimeError
        raise BackendUnavailableError(f"no device for {url}: {exc}. Is the tracker running, and a server "
                                      f"registered with `--key {key}`?") from exc


class RemoteSession:
    """One tvm_vm component on the remote device, with the local session's run() contract."""

    def __init__(self, artifact: Artifact, component: Component, remote):
        from .tvm_import import import_tvm

        tvm = import_tvm()
        from tvm.runtime.vm import VirtualMachine

        if component.backend != "tvm_vm":
            raise BackendUnavailableError(f"component {component.name!r} runs on {component.backend!r}; "
                                          f"only tvm_vm artifacts run through TVM RPC")
        self.component = component
        self._tvm = tvm
        self._device = remote.cpu()
        remote_name = f"{component.name}.so"
        remote.upload(str(artifact.file(component.files["library"])), remote_name)
        self._vm = VirtualMachine(remote.load_module(remote_name), self._device)
        weights = safetensors_io.load(artifact.file(component.files["weights"]))
        self._params = [tvm.runtime.tensor(np.asarray(weights[s.name]), self._device) for s in component.weights]
        self._main = self._vm["main"]

    def run(self, **inputs) -> dict[str, np.ndarray]:
        arrays = check_inputs(self.component.inputs, inputs, f"component {self.component.name!r}")
        args = [self._tvm.runtime.tensor(np.ascontiguousarray(a), self._device) for a in arrays]
        result = self._main(*args, *self._params)
        outs = [result] if len(self.component.outputs) == 1 else list(result)
        return {spec.name: out.numpy() for spec, out in zip(self.component.outputs, outs)}

    def close(self) -> None:
        self._params, self._vm, self._main = [], None, None
