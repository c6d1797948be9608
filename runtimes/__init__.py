"""Layer 1: load an artifact and run it, with no torch, diffusers, converters or kernels.

Each backend is a module `runtimes/<id>.py` with `is_available()`, `INSTALL_HINT`
and `load(artifact, component)` returning a session with `run(**inputs) -> dict`
and `close()`. The id is the one the manifest names.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from edgegen.core.artifact import Artifact
from edgegen.core.errors import BackendUnavailableError

BACKENDS = ("tvm_vm", "onnxruntime", "coreml", "opencl", "webgpu", "metal")
CPU_BACKENDS = ("tvm_vm", "onnxruntime")   # their load() takes threads=
# EDGEGEN_RUNTIME=native: OpenCL components run on edgegen's C runtime (runtimes/native.py) instead of pyopencl
RUNTIME_ENV = "EDGEGEN_RUNTIME"
RUNTIMES = ("python", "native")


def get_backend(backend_id: str):
    if backend_id not in BACKENDS:
        raise BackendUnavailableError(
            f"backend {backend_id!r} is unknown to this edgegen (it knows {list(BACKENDS)}); "
            f"upgrade edgegen or rebuild the artifact for a supported target."
        )
    module = importlib.import_module(f"{__name__}.{backend_id}")
    if not module.is_available():
        raise BackendUnavailableError(
            f"backend {backend_id!r} is not available on this machine; install it: {module.INSTALL_HINT}"
        )
    return module


def load_component(artifact: Artifact, name: str, threads: int | None = None):
    """A session for one component, run by the backend its manifest entry names. `threads`: CPU
    threads for the backends that run on this CPU (default: every core this process may use)."""
    comp = artifact.component(name)
    runtime = os.environ.get(RUNTIME_ENV) or "python"
    if runtime not in RUNTIMES:
        raise BackendUnavailableError(f"{RUNTIME_ENV}={runtime!r} is not one of {list(RUNTIMES)}")
    if runtime == "native" and comp.backend == "opencl":
        native = importlib.import_module(f"{__name__}.native")
        if not native.is_available():
            raise BackendUnavailableError(f"the native runtime is not available: {native.INSTALL_HINT}")
        return native.load(artifact, comp)
    backend = get_backend(comp.backend)
    if comp.backend in CPU_BACKENDS:
        return backend.load(artifact, comp, threads=threads)
    return backend.load(artifact, comp)


def threads_used(sessions) -> int | None:
    """The CPU threads the sessions' calls use (None where none runs on a CPU edgegen sizes)."""
    counts = [s.threads for s in sessions if getattr(s, "threads", None) is not None]
    return max(counts) if counts else None


def load(path: str | Path, verify: bool = True, session_factory=None, threads: int | None = None,
         trusted_keys: list | None = None):
    """Open an artifact folder and return its pipeline object. `session_factory(artifact, name)`,
    when given, makes each component's session (e.g. on a remote device) instead of its backend.
    `threads`: CPU threads for components that run on this CPU (default: every core this process
    may use, from its CPU affinity and cgroup quota; TVM_NUM_THREADS, when set, sizes TVM's pool).
    `trusted_keys`: public keys (.pub paths, PEM or raw bytes); only an artifact signed by one of
    them is loaded, and its signature and every file's hash are checked before any library opens."""
    from .checks import prepare
    from .memory_plan import sessions as planned_sessions

    artifact, pipeline = prepare(path, verify=verify, trusted_keys=trusted_keys)
    make = session_factory or (lambda art, name: load_component(art, name, threads))
    return pipeline(artifact, planned_sessions(artifact, make))


def load_module(path: str | Path, verify: bool = True, threads: int | None = None, trusted_keys: list | None = None):
    """Open an artifact built by edgegen.build_module; returns a callable: keyword arrays in (the
    module's forward parameters), a dict of its named outputs out. Arguments as load()."""
    from edgegen.core.errors import ArtifactError

    runner = load(path, verify=verify, threads=threads, trusted_keys=trusted_keys)
    if runner.artifact.pipeline.get("kind") != "module":
        runner.close()
        raise ArtifactError(f"{path}: a {runner.artifact.pipeline.get('kind')} pipeline, not a module artifact; "
                            f"open it with edgegen.runtimes.load.")
    return runner
