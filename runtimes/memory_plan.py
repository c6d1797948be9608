"""Sessions that follow an artifact's memory plan (edgegen/core/memory.py): in a phased plan each
component is loaded on its first call and freed when its phase ends; a component cut into chunks
loads, runs and frees its chunks one by one on every call (their weights memory-mapped from the
artifact, so a freed chunk leaves nothing resident)."""

from __future__ import annotations

from edgegen.core.artifact import Artifact, Component
from edgegen.core.errors import ArtifactError
from edgegen.core.memory import chunks_of, phases_of


class LazySession:
    """A component loaded on its first call and freed by release(); the next call loads it again."""

    def __init__(self, make, name: str):
        self._make, self.name, self._session = make, name, None
        self.loads = 0
        self.threads = None     # the CPU threads its calls used, once loaded

    def _loaded(self):
        if self._session is None:
            self._session = self._make()
            self.loads += 1
            self.threads = getattr(self._session, "threads", None)
        return self._session

    def run(self, **inputs) -> dict:
        return self._loaded().run(**inputs)

    def release(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def close(self) -> None:
        self.release()

    def __getattr__(self, attr):     # trace, kernel_outputs, set_instrument: the loaded session's
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self._loaded(), attr)


class ChunkedSession:
    """A component cut into chunks: each call runs the chunks in order, each loaded, run and freed, the
    values that cross a cut passed from one to the next by name."""

    threads = None

    def __init__(self, artifact: Artifact, name: str, chunks: list[str], make):
        self.name, self._make, self._artifact = name, make, artifact
        self._chunks = [artifact.component(c) for c in chunks]
        self.outputs = [s.name for s in self._chunks[-1].outputs]
        made, inputs = set(), {}
        for comp in self._chunks:
            inputs.update({s.name: s for s in comp.inputs if s.name not in made and s.name not in inputs})
            made |= {s.name for s in comp.outputs}
        # what the chunks take from outside and give back, as one component's specs (bench feeds them)
        self.component = Component(name=name, backend=self._chunks[0].backend, family=self._chunks[0].family,
                                   files={}, inputs=list(inputs.values()), outputs=list(self._chunks[-1].outputs))

    def run(self, **inputs) -> dict:
        values = dict(inputs)
        for comp in self._chunks:
            session = self._make(self._artifact, comp.name)
            try:
                values.update(session.run(**{s.name: values[s.name] for s in comp.inputs}))
            finally:
                session.close()
        return {o: values[o] for o in self.outputs}

    def release(self) -> None:
        """Nothing stays loaded between calls."""

    def close(self) -> None:
        """Nothing stays loaded between calls."""


def chunk_io(artifact: Artifact, name: str) -> tuple[set, set] | None:
    """(inputs from outside, outputs of the last chunk) of a component the plan cut into chunks, or None."""
    chunks = chunks_of(artifact.manifest.get("memory_plan"), name)
    if not chunks:
        return None
    missing = [c for c in chunks if c not in artifact.components]
    if missing:
        raise ArtifactError(f"{artifact.root}: the memory plan cuts {name!r} into {chunks}, but the manifest lacks "
                            f"{missing}; rebuild the artifact.")
    made, needed = set(), set()
    for c in chunks:
        comp = artifact.components[c]
        needed |= {s.name for s in comp.inputs} - made
        made |= {s.name for s in comp.outputs}
    return needed, {s.name for s in artifact.components[chunks[-1]].outputs}


def sessions(artifact: Artifact, make) -> dict:
    """A session per component the pipeline calls: made now in a resident plan (or with no plan), made
    on first call in a phased one, chunked where the plan cuts a component. `make(artifact, name)`
    opens one component."""
    plan = artifact.manifest.get("memory_plan")
    if plan is None:
        return {name: make(artifact, name) for name in artifact.components}
    chunk_names = {c for name in plan["components"] for c in chunks_of(plan, name)}
    out = {}
    for name in list(plan["components"]) + [n for n in artifact.components if n not in plan["components"]]:
        if name in chunk_names:
            continue
        chunks = chunks_of(plan, name)
        if chunks:
            out[name] = ChunkedSession(artifact, name, chunks, make)
        elif plan["mode"] == "phased":
            out[name] = LazySession(lambda name=name: make(artifact, name), name)
        else:
            out[name] = make(artifact, name)
    return out


def end_phase(artifact: Artifact, sessions: dict, phase: str) -> None:
    """Free what a phased plan loaded for `phase` (its components); a resident plan keeps everything."""
    plan = artifact.manifest.get("memory_plan")
    if plan is None or plan["mode"] != "phased":
        return
    for name, members in phases_of(plan["components"]):
        if name == phase:
            for member in members:
                release = getattr(sessions.get(member), "release", None)
                if release is not None:
                    release()
