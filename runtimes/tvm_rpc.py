"""TVM artifacts run on a remote device through TVM's RPC tracker and server.

A phone or board runs `python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY`
(or TVM's Android/iOS RPC app); this side asks the tracker for a device with that
key, uploads each component's library, and runs the Relax VM there. Weights and
inputs are copied to the device; outputs come back as numpy arrays.
"""

from __future__ import annotations

import re
import socket

from edgegen.core.artifact import Artifact, Component
from edgegen.core.errors import BackendUnavailableError, InputError

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


def remote_session(artifact: Artifact, component: Component, remote, threads: int | None = None):
    """One tvm_vm component on the remote device, with the local session's run() contract;
    `threads`: how many of the device's TVM pool threads it uses (default all)."""
    from .tvm_vm import Session

    if component.backend != "tvm_vm":
        raise BackendUnavailableError(f"component {component.name!r} runs on {component.backend!r}; "
                                      f"only tvm_vm artifacts run through TVM RPC")
    return Session(artifact, component, remote=remote, threads=threads)
