"""The GPU targets (OpenCL: adreno, mali, opencl; WebGPU; Metal): kernel sources and a static launch plan."""

from __future__ import annotations

import numpy as np

from .. import capture, lower, quantize
from . import Emitted, EmitContext

BACKENDS = ("opencl", "webgpu", "metal")
# mixed:<dB> measures each layer's sensitivity with the component compiled for the build machine's CPU,
# so a GPU build searches without a GPU
MIXED_SEARCH_TARGET = {"kind": "llvm"}


def emit(ctx: EmitContext, name: str, cap: capture.Captured, calibration: list | None) -> Emitted:
    """Kernel sources and a launch plan for a GPU target, with the weights the build's scheme names
    packed and decoded inside the kernels that read them (mixed:<dB> searched on the CPU); the build
    runs them on this machine's OpenCL or WebGPU device where there is one (PoCL, lavapipe) for the
    parity gate; outputs are None where nothing here can run them."""
    from edgegen.core.errors import BackendUnavailableError
    from edgegen.core.launch_plan import LANGUAGES

    from .. import gpu

    writer, target, tvm_target, stages, scheme = ctx.writer, ctx.target, ctx.tvm_target, ctx.stages, ctx.scheme
    end = ctx.options.get("end", {}).get(name)
    execute, precision = ctx.options.get("execute", True), ctx.options.get("precision", "fp32")

    exported = stages.run(f"{name}: capture (torch.export)", capture.export, cap)
    lowered = stages.run(f"{name}: import to TVM Relax", lower.to_relax, exported, len(cap.inputs),
                         f"component {name!r}")
    choices, quant = None, None
    if scheme is not None:
        layers, choices, quant = stages.run(f"{name}: choose the weights to pack ({scheme.name})", quantize.choose,
                                            lowered, scheme, MIXED_SEARCH_TARGET, calibration, stages.log,
                                            *(end or (None, None)))
        if scheme.kind != "mixed":    # lookup tables too: the gather decodes the rows it reads
            tables = quantize.embedding_layers(lowered)
            layers += tables
            choices.update({lay.weight: scheme for lay in tables if lay.keep is None})
    built = stages.run(f"{name}: compile kernels for {target.name} + launch plan", gpu.lower_to_plan, lowered,
                       list(cap.inputs), cap.outputs, tvm_target, gpu.limits_of(target.profile), target.backend,
                       quant=choices, precision=precision, roofline=target.profile.roofline,
                       fp16_arithmetic=target.profile.fp16_arithmetic)
    gpu.check_memory(built.plan, target.profile, f"component {name!r}")
    files = gpu.write_files(built, writer.tmp, name, target.backend)
    plan = built.plan
    elements = sum(int(np.prod(s.shape)) for s in lowered.weight_specs)
    stored = {**built.weights, **built.constants}
    info = {"language": LANGUAGES[target.backend], "programs": len(plan["programs"]), "launches": len(plan["launches"]),
            "arena_bytes": plan["arena_bytes"], "arena_bytes_without_reuse": plan["arena_bytes_without_reuse"],
            "weight_bytes": int(sum(a.nbytes for a in stored.values())),
            "bits_per_weight": round(8 * sum(a.nbytes for a in built.weights.values()) / max(elements, 1), 3),
            "precision": gpu.precision_record(precision, scheme.name if scheme is not None else None,
                                              target.profile, plan, target.backend),
            "edgegen_kernels": gpu.edgegen_kernels(plan), "attention": built.attention,
            "convolutions": built.convolutions, "feed_forward": built.feed_forward, "compile_guard": built.guard,
            "num_weights": elements, "kernels": built.kernels}
    if quant is not None:
        sizes = {lay.weight: lay.elements for lay in layers}
        report = {w: {**e, "bits_per_weight": round(8 * e["bytes"] / sizes[w], 3)} for w, e in built.quant.items()}
        info["quant"] = quantize.summarize(quant, layers, lowered.weight_specs, built.weights, report,
                                           "norms and biases (not matmul, conv or lookup-table weights), and the "
                                           "layers marked fp32")
    from edgegen import runtimes

    try:
        runtimes.get_backend(target.backend)
        if not execute:
            raise BackendUnavailableError("the build was asked not to execute them (execute=False)")
    except BackendUnavailableError as exc:     # no such device here: the kernels are guarded, not executed
        info["parity_scope"] = f"kernels generated and guarded, not executed: {exc}"
        return Emitted(files, gpu.weight_specs(built), info, None)
    session = stages.run(f"{name}: load on this machine's {target.backend} device", gpu.open_session, built,
                         writer.tmp, files, name, target.backend, cap.inputs, cap.family)
    try:
        result = stages.run(f"{name}: parity check", session.run, **cap.inputs)
    finally:
        session.close()
    info["parity_device"] = getattr(session, "device_name", target.backend)
    return Emitted(files, gpu.weight_specs(built), info, [result[o] for o in cap.outputs])
