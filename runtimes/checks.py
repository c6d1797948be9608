"""Everything about an artifact that can be checked before a backend opens a native library:
the manifest (schema, checksums, signature), the pipeline kind and the components it calls, the
scheduler config, the tokenizer files and each launch plan."""

from __future__ import annotations

from pathlib import Path

from edgegen.core.artifact import Artifact
from edgegen.core.errors import ArtifactError


def pipelines() -> dict:
    """Pipeline kind -> (pipeline class, {component: (input names, output names)})."""
    from . import class_conditional, module, stable_diffusion, stable_diffusion_xl

    return {stable_diffusion.KIND: (stable_diffusion.StableDiffusionPipeline, stable_diffusion.COMPONENTS),
            stable_diffusion_xl.KIND: (stable_diffusion_xl.StableDiffusionXLPipeline, stable_diffusion_xl.COMPONENTS),
            class_conditional.KIND: (class_conditional.ClassConditionalPipeline, class_conditional.COMPONENTS),
            module.KIND: (module.ModuleRunner, module.COMPONENTS)}


def check_components(artifact: Artifact, needed: dict) -> None:
    """The components a pipeline calls are in the artifact, with the inputs and outputs it passes
    and reads (Core ML packages keep the Swift package's names and map them in their session)."""
    from .memory_plan import chunk_io

    for name, (inputs, outputs) in needed.items():
        chunked = chunk_io(artifact, name)
        if chunked is not None:     # cut into chunks by the memory plan: the chunks together take and give them
            if chunked != (set(inputs), set(outputs)):
                raise ArtifactError(f"{artifact.root}: the chunks of {name!r} take {sorted(chunked[0])} and give "
                                    f"{sorted(chunked[1])}; the pipeline passes {list(inputs)} and reads "
                                    f"{list(outputs)}. Rebuild the artifact.")
            continue
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


def prepare(path: str | Path, verify: bool = True, trusted_keys: list | None = None):
    """Open and check the artifact at `path`; returns (artifact, its pipeline class)."""
    from .elf_check import check_elf
    from .launch_plan import PlanComponent
    from .schedulers import read_scheduler_config
    from .tokenizer import read_merges, read_vocab

    artifact = Artifact.open(path, verify=verify, trusted_keys=trusted_keys)
    kind = artifact.pipeline.get("kind")
    known = pipelines()
    if kind not in known:
        raise ArtifactError(f"{path}: pipeline kind {kind!r} is unknown to this edgegen; upgrade edgegen.")
    pipeline, needed = known[kind]
    check_components(artifact, needed)
    if kind == "module":      # one component, no scheduler (edgegen.build_module)
        from .module import check

        check(artifact)
    else:
        read_scheduler_config(artifact)
    for key in ("tokenizer", "tokenizer_2"):
        if key in artifact.pipeline:
            read_vocab(artifact.file(artifact.pipeline[key]["vocab"]))
            read_merges(artifact.file(artifact.pipeline[key]["merges"]))
    for comp in artifact.components.values():
        if "plan" in comp.files:
            PlanComponent(artifact, comp)
        if "library" in comp.files:
            check_elf(artifact.file(comp.files["library"]), comp.name)
    return artifact, pipeline
