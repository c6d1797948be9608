"""A one-component artifact built from any torch module (edgegen.build_module): a callable that
takes the module's inputs by keyword and returns a dict of its named outputs. numpy plus the backend."""

from __future__ import annotations

from edgegen.core.artifact import Artifact
from edgegen.core.errors import ArtifactError

KIND = "module"
COMPONENT = "module"
# what this pipeline calls: the component's inputs and outputs come from the manifest's pipeline entry
COMPONENTS = {}


class ModuleRunner:
    """Call it as the torch module was called: runner(x=array, ...) -> {output name: array}."""

    def __init__(self, artifact: Artifact, sessions: dict):
        cfg = artifact.pipeline
        name = cfg.get("component", COMPONENT)
        if name not in sessions:
            raise ArtifactError(f"{artifact.root}: a module artifact needs component {name!r}, the manifest has "
                                f"{sorted(sessions)}; rebuild it with edgegen.build_module.")
        self.artifact = artifact
        self.sessions = sessions
        self.session = sessions[name]
        self.inputs = list(cfg["inputs"])
        self.outputs = list(cfg["outputs"])

    def __call__(self, **inputs) -> dict:
        got = self.session.run(**inputs)
        return {n: got[n] for n in self.outputs}

    def close(self) -> None:
        for s in self.sessions.values():
            s.close()

    def __enter__(self) -> "ModuleRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check(artifact: Artifact) -> None:
    """The manifest's pipeline names the component's inputs and outputs exactly."""
    cfg = artifact.pipeline
    name = cfg.get("component", COMPONENT)
    if name not in artifact.components:
        raise ArtifactError(f"{artifact.root}: the module pipeline names component {name!r}, the manifest has "
                            f"{sorted(artifact.components)}; rebuild the artifact.")
    comp = artifact.components[name]
    got = ([s.name for s in comp.inputs], [s.name for s in comp.outputs])
    if got != (list(cfg.get("inputs", [])), list(cfg.get("outputs", []))):
        raise ArtifactError(f"{artifact.root}: component {name!r} has inputs {got[0]} and outputs {got[1]}; the "
                            f"pipeline entry names {cfg.get('inputs')} and {cfg.get('outputs')}. Rebuild the artifact.")
