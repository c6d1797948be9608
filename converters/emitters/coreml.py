"""The coreml target: a Core ML package per component, in the layout of Apple's Swift StableDiffusion package."""

from __future__ import annotations

from .. import capture
from . import Emitted, EmitContext

BACKENDS = ("coreml",)


def emit(ctx: EmitContext, name: str, cap: capture.Captured, calibration: list | None) -> Emitted:
    """Convert to a Core ML package with the Swift package's names; `shown` is the module whose
    inputs and outputs the package has (the outputs are checked against the original component)."""
    from .. import coreml_export as cm

    writer, stages, scheme, options = ctx.writer, ctx.stages, ctx.scheme, ctx.options
    swift = cm.swift_component(name, cap)
    swift_name = cm.SWIFT_NAMES.get(name, name)
    info = {"swift_name": swift_name, "minimum_ios": options["minimum_ios"], "attention": "original"}
    if options["attention"] == "split-einsum":
        swift, rewritten = cm.with_split_einsum(swift)
        info.update(attention="split-einsum", attention_layers_rewritten=rewritten)
    model = stages.run(f"{name}: convert to Core ML (coremltools)", cm.convert, swift, options["minimum_ios"])
    elements = cm.float_weight_elements(model)
    if scheme is not None:
        model, applied, reason = stages.run(f"{name}: compress {scheme.name} (coremltools)", cm.compress, model,
                                            scheme, options["minimum_ios"])
        info["quant"] = {"scheme": scheme.name, "applied": applied, "fallback_reason": reason}
    folder = writer.path(options["folder"])
    package = folder / f"{swift_name}.mlpackage"
    stages.run(f"{name}: write {package.name}", model.save, str(package))
    nbytes = cm.weight_bytes(package)
    info["weight_bytes"] = nbytes
    if "quant" in info:
        info["quant"]["bits_per_weight"] = round(8 * nbytes / max(elements, 1), 3)
    packages = [package]
    if name == "unet" and options["chunk_mb"] is not None and nbytes > options["chunk_mb"] * 1e6:
        packages = [folder / f"{swift_name}Chunk1.mlpackage", folder / f"{swift_name}Chunk2.mlpackage"]
        stages.run(f"{name}: bisect into two chunks", cm.bisect, package, *packages)
        info["chunks"] = [{"package": p.name, "weight_bytes": cm.weight_bytes(p)} for p in packages]
    files = {}
    for i, p in enumerate(packages):
        files.update({(f"chunk{i + 1}_{k}" if len(packages) > 1 else k): v
                      for k, v in cm.package_files(p, writer.tmp).items()})
    # Core ML predictions need macOS: here the converted graph's torch side is what is checked.
    actual = list(capture.run_torch(swift).values())
    info["parity_scope"] = ("torch module with the Swift package's inputs/outputs"
                            + (" and split-einsum attention" if info["attention"] == "split-einsum" else "")
                            + " vs the original component; Core ML predictions need macOS")
    return Emitted(files, [], info, actual, swift)
