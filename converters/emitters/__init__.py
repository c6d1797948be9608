"""One emitter per target, in a registry keyed by the runtime backend id that runs what it writes.

An emitter turns one captured component into the files of its backend: `emit(ctx, name, cap,
calibration) -> Emitted`. The build loop (converters/build.py) looks the emitter up by the target's
backend and never names a target; a new target is one new module here and one line in EMITTERS.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EmitContext:
    """What every emitter of one build shares."""
    writer: object          # edgegen.core.artifact.ArtifactWriter
    target: object          # edgegen.core.targets.Target
    tvm_target: dict        # resolved TVM target dict ({} for targets TVM does not compile)
    stages: object          # build._Stages: run(stage, fn, *args), log(message)
    scheme: object          # edgegen.core.quant scheme, or None
    options: dict = field(default_factory=dict)   # build options (execute, precision, Core ML's, end)


@dataclass
class Emitted:
    files: dict             # key -> path relative to the artifact
    weight_specs: list      # TensorSpec of each weight the runtime feeds (empty where the files embed them)
    info: dict              # the component's manifest info (quant, kernels, arena bytes, ...)
    actual: list | None     # outputs on the example inputs; None where nothing here can run them
    shown: object = None    # the captured module whose inputs/outputs the files expose, when not the original


def calibrated(scheme) -> bool:
    """Whether `scheme` chooses its stored values from calibration (the layers' input statistics)."""
    return scheme.method != "rtn" and scheme.kind in ("linear", "palette", "ternary", "mixed") \
        and not scheme.activations


def _registry() -> dict:
    from . import coreml, gpu_plan, onnx, tvm_cpu

    return {backend: module.emit for module in (tvm_cpu, gpu_plan, onnx, coreml) for backend in module.BACKENDS}


def emitter(backend: str):
    """The emit function for a backend id, or an error naming the ones there are."""
    emitters = _registry()
    if backend not in emitters:
        raise ValueError(f"no emitter for backend {backend!r}; converters/emitters has {sorted(emitters)}")
    return emitters[backend]
