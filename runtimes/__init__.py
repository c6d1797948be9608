"""Layer 1: load an artifact and run it, with no torch, diffusers, converters or kernels.

Each backend is a module `runtimes/<id>.py` with `is_available()`, `INSTALL_HINT`
and `load(artifact, component)` returning a session with `run(**inputs) -> dict`
and `close()`. The id is the one the manifest names.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from edgegen.core.artifact import Artifact
from edgegen.core.errors import ArtifactError, BackendUnavailableError

BACKENDS = ("tvm_vm", "onnxruntime", "coreml", "opencl", "webgpu", "metal")


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


def load_component(artifact: Artifact, name: str):
    """A session for one component, run by the backend its manifest entry names."""
    comp = artifact.component(name)
    return get_backend(comp.backend).load(artifact, comp)


def check_components(artifact: Artifact, needed: dict) -> None:
    """The components a pipeline calls are in the artifact, with the inputs and outputs it passes
    and reads (Core ML packages keep the Swift package's names and map them in their session)."""
    for name, (inputs, outputs) in needed.items():
        if name not in artifact.components:
            raise ArtifactError(f"{artifact.root}: a {artifact.pipeline['kind']} pipeline needs component {name!r}, "
                                f"the manifest has {sorted(artifact.components)}; rebuild the artifact.")
        comp = artifact.components[name]
        if comp.backend == "coreml":
            continue
        got = ({s.name for s in comp.inputs}, {s.name for s in comp.outputs})
        if got != (set(inputs), set(outputs)):
            raise ArtifactError(f"{artifact.root}: component {name!r} has inputs {sorted(got[0])} and outputs "
                                f"{sorted(got[1])}; the pipeline passes {list(inputs)} and reads {list(outputs)}. "
                                f"Rebuild the artifact.")


def load(path: str | Path, verify: bool = True, session_factory=None):
    """Open an artifact folder and return its pipeline object. `session_factory(artifact, name)`,
    when given, makes each component's session (e.g. on a remote device) instead of its backend."""
    from . import class_conditional, stable_diffusion

    artifact = Artifact.open(path, verify=verify)
    pipelines = {stable_diffusion.KIND: stable_diffusion.StableDiffusionPipeline,
                 class_conditional.KIND: class_conditional.ClassConditionalPipeline}
    kind = artifact.pipeline.get("kind")
    if kind not in pipelines:
        raise ArtifactError(f"{path}: pipeline kind {kind!r} is unknown to this edgegen; upgrade edgegen.")
    check_components(artifact, {stable_diffusion.KIND: stable_diffusion.COMPONENTS,
                                class_conditional.KIND: class_conditional.COMPONENTS}[kind])
    make = session_factory or load_component
    sessions = {name: make(artifact, name) for name in artifact.components}
    return pipelines[kind](artifact, sessions)
