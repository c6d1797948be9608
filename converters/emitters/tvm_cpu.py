"""The cpu target: a library compiled by TVM's LLVM backend, run by the Relax VM, weights beside it."""

from __future__ import annotations

import numpy as np

from .. import capture, lower, quantize
from . import Emitted, EmitContext, calibrated

BACKENDS = ("tvm_vm",)


def _write_component(writer, executable, weights, lib_rel, weights_rel) -> None:
    from edgegen.core import safetensors_io

    executable.export_library(str(writer.path(lib_rel)))
    safetensors_io.save(weights, writer.path(weights_rel))


def emit(ctx: EmitContext, name: str, cap: capture.Captured, calibration: list | None) -> Emitted:
    """Compile with TVM, quantized with the build's scheme when given (packed weights decoded
    in-kernel); options["end"][name]: (end_output, end target dB) for mixed:<dB>."""
    writer, target, tvm_target, stages, scheme = ctx.writer, ctx.target, ctx.tvm_target, ctx.stages, ctx.scheme
    end = ctx.options.get("end", {}).get(name)
    exported = stages.run(f"{name}: capture (torch.export)", capture.export, cap)
    lowered = stages.run(f"{name}: import to TVM Relax", lower.to_relax, exported, len(cap.inputs),
                         f"component {name!r}")
    fp32_elements = sum(int(np.prod(s.shape)) for s in lowered.weight_specs)
    quant = None
    if scheme is not None:
        stats = None
        if calibrated(scheme):
            from .. import layer_stats

            stats = stages.run(f"{name}: layer input statistics ({len(calibration or [cap.inputs])} calibration "
                               f"inputs)", layer_stats.collect, cap.module, lowered.sources,
                               calibration or [cap.inputs])
        lowered, quant = stages.run(f"{name}: quantize {scheme.name} (packed weights)", quantize.apply, lowered,
                                    scheme, tvm_target, calibration, stages.log, *(end or (None, None)), stats)
    layouts: list = []
    reported = {layer["weight"] for layer in (quant or {}).get("layers", [])}   # stored as the report names them
    winograd = ctx.options.get("winograd", True)
    lowered = stages.run(f"{name}: weight layouts for the CPU kernels", lower.cpu_weight_layouts, lowered, layouts,
                         reported, winograd)
    kernels, attention = [], []
    executable = stages.run(f"{name}: compile for {target.name}", lower.compile_module, lowered.module,
                            tvm_target, kernels, attention=attention)
    files = {"library": f"{name}/model.so", "weights": f"{name}/weights.safetensors"}
    stages.run(f"{name}: write library and weights", _write_component, writer, executable,
               lowered.weights, files["library"], files["weights"])
    actual = stages.run(f"{name}: parity check", lower.run_library, writer.path(files["library"]),
                        list(cap.inputs.values()), [lowered.weights[s.name] for s in lowered.weight_specs])
    info = {"schedule_rules": lower.SCHEDULE_RULES.get(tvm_target["kind"], []), "num_weights": fp32_elements,
            "kernels": kernels, "weight_layouts": layouts, "attention": attention,
            **({"quant": quant} if quant else {}),
            **({} if winograd else {"winograd": "off: the memory plan loads per phase, and a Winograd-transformed "
                                                "3x3 weight holds up to 4 times the bytes"})}
    return Emitted(files, lowered.weight_specs, info, actual)
