"""The build: capture each component, lower and compile it, gate its parity, write the artifact.

Which components a model has comes from its family's plan (`FAMILIES`, keyed by
the pipeline class in model_index.json); the loop here is the same for all.
"""

from __future__ import annotations

import inspect
import json
import math
import platform
import shutil
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from edgegen.core.artifact import ArtifactWriter, Component, sha256_tree
from edgegen.core.errors import BackendUnavailableError, ModelError, ParityError
from edgegen.core.metrics import psnr
from edgegen.core.quant import QUANT_FLOOR_DB
from edgegen.core.quant import parse as parse_scheme
from edgegen.core.specs import TensorSpec
from edgegen.core.targets import GPU_BACKENDS, get_target

from . import capture, dit, lower, quantize, sd, sdxl, source

# A compiled component must reproduce its torch module at least this well (fp32 build).
COMPONENT_PSNR_DB = 40.0
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
# mixed:<dB> aims this far above its target on the calibration runs: other prompts and seeds vary
MIXED_MARGIN_DB = 1.5
# mixed:<dB> measures each layer's sensitivity with the component compiled for the build machine's CPU,
# so a GPU build searches without a GPU
MIXED_SEARCH_TARGET = {"kind": "llvm"}
FAMILIES = {cls: family for family in (sd, sdxl, dit) for cls in family.PIPELINE_CLASSES}


@dataclass
class BuildReport:
    artifact: str
    target: str
    seconds: float
    bytes: int
    components: dict = field(default_factory=dict)   # name -> {psnr_db, bytes}
    stages: list = field(default_factory=list)        # (stage, seconds)

    def to_json(self) -> dict:
        return {"artifact": self.artifact, "target": self.target, "seconds": round(self.seconds, 2),
                "bytes": self.bytes, "components": self.components,
                "stages": [{"stage": s, "seconds": round(t, 2)} for s, t in self.stages]}


class _Stages:
    """Times each stage and tells the caller's progress callback when one starts and ends."""

    def __init__(self, progress):
        self.progress = progress or (lambda event, stage, seconds: None)
        self.done: list = []

    def run(self, stage: str, fn, *args, **kwargs):
        self.progress("start", stage, 0.0)
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        seconds = time.perf_counter() - t0
        self.done.append((stage, seconds))
        self.progress("end", stage, seconds)
        return result

    def log(self, message: str) -> None:
        """A line of detail within the running stage."""
        self.progress("log", message, 0.0)


def toolchain_versions() -> dict:
    versions = {"python": platform.python_version(), "machine": platform.machine()}
    for dist in ("edgegen", "apache-tvm", "apache-tvm-ffi", "torch", "diffusers", "transformers", "numpy",
                 "onnx", "onnxruntime", "optimum", "optimum-onnx", "coremltools"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _write_component(writer, executable, weights, lib_rel, weights_rel) -> None:
    from edgegen.core import safetensors_io

    executable.export_library(str(writer.path(lib_rel)))
    safetensors_io.save(weights, writer.path(weights_rel))


def _emit_tvm(writer, name: str, cap: capture.Captured, target, tvm_target: dict, stages: _Stages, scheme,
              calibration: list | None, end: tuple | None):
    """Compile with TVM, quantized with `scheme` when given (packed weights decoded in-kernel);
    `end`: (end_output, end target dB) for mixed:<dB>. Returns (files, weight specs, info, outputs
    on the example inputs)."""
    exported = stages.run(f"{name}: capture (torch.export)", capture.export, cap)
    lowered = stages.run(f"{name}: import to TVM Relax", lower.to_relax, exported, len(cap.inputs),
                         f"component {name!r}")
    fp32_elements = sum(int(np.prod(s.shape)) for s in lowered.weight_specs)
    quant = None
    if scheme is not None:
        stats = None
        if calibrated(scheme):
            from . import layer_stats

            stats = stages.run(f"{name}: layer input statistics ({len(calibration or [cap.inputs])} calibration "
                               f"inputs)", layer_stats.collect, cap.module, lowered.sources,
                               calibration or [cap.inputs])
        lowered, quant = stages.run(f"{name}: quantize {scheme.name} (packed weights)", quantize.apply, lowered,
                                    scheme, tvm_target, calibration, stages.log, *(end or (None, None)), stats)
    layouts: list = []
    reported = {layer["weight"] for layer in (quant or {}).get("layers", [])}   # stored as the report names them
    lowered = stages.run(f"{name}: weight layouts for the CPU kernels", lower.cpu_weight_layouts, lowered, layouts,
                         reported)
    kernels: list = []
    executable = stages.run(f"{name}: compile for {target.name}", lower.compile_module, lowered.module,
                            tvm_target, kernels)
    files = {"library": f"{name}/model.so", "weights": f"{name}/weights.safetensors"}
    stages.run(f"{name}: write library and weights", _write_component, writer, executable,
               lowered.weights, files["library"], files["weights"])
    actual = stages.run(f"{name}: parity check", lower.run_library, writer.path(files["library"]),
                        list(cap.inputs.values()), [lowered.weights[s.name] for s in lowered.weight_specs])
    info = {"schedule_rules": lower.SCHEDULE_RULES.get(tvm_target["kind"], []), "num_weights": fp32_elements,
            "kernels": kernels, "weight_layouts": layouts, **({"quant": quant} if quant else {})}
    return files, lowered.weight_specs, info, actual


def calibrated(scheme) -> bool:
    """Whether `scheme` chooses its stored values from calibration (the layers' input statistics)."""
    return scheme.method != "rtn" and scheme.kind in ("linear", "palette", "ternary", "mixed") \
        and not scheme.activations


def _end_output(end_output, component: str):
    """end_output for one component, named by the captured wrapper's parameters ("inner.<name>")."""
    def run(replaced, quick=False):
        return end_output(component, None if replaced is None
                          else {n.removeprefix("inner."): w for n, w in replaced.items()}, quick)
    return run


def _emit_gpu(writer, name: str, cap: capture.Captured, target, tvm_target: dict, stages: _Stages, scheme,
              calibration: list | None, end: tuple | None, execute: bool = True, precision: str = "fp32"):
    """Kernel sources and a launch plan for a GPU target, with the weights `scheme` names packed and
    decoded inside the kernels that read them (mixed:<dB> searched on the CPU); the build runs them
    on this machine's OpenCL or WebGPU device where there is one (PoCL, lavapipe) for the parity
    gate. Returns (files, weight specs, info, outputs on the example inputs or None where nothing
    can run them)."""
    from edgegen.core.launch_plan import LANGUAGES

    from . import gpu

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
        return files, gpu.weight_specs(built), info, None
    session = stages.run(f"{name}: load on this machine's {target.backend} device", gpu.open_session, built,
                         writer.tmp, files, name, target.backend, cap.inputs, cap.family)
    try:
        result = stages.run(f"{name}: parity check", session.run, **cap.inputs)
    finally:
        session.close()
    info["parity_device"] = getattr(session, "device_name", target.backend)
    return files, gpu.weight_specs(built), info, [result[o] for o in cap.outputs]


def _emit_onnx(writer, name: str, cap: capture.Captured, stages: _Stages, scheme, calibration: list | None):
    """Export to ONNX (unless optimum already wrote the component), quantize if asked;
    returns (files, weight specs, info, outputs on the example inputs)."""
    from edgegen.runtimes.onnxruntime import adapt_feed

    from . import onnx_export

    model = writer.path(f"{name}/model.onnx")
    info = {"opset": onnx_export.OPSET, "exporter": "optimum" if model.is_file() else "torch.onnx"}
    if not model.is_file():
        stages.run(f"{name}: export ONNX (torch.onnx)", onnx_export.export, cap, model)
    if scheme is not None:
        # activation scales (w8a8) come from real runs of the pipeline; weight-only schemes need none
        feeds = None
        if scheme.activations:
            sess = onnx_export.session(model)
            feeds = [adapt_feed(sess, inputs) for inputs in (calibration or [cap.inputs])]
        info["quant"] = stages.run(f"{name}: quantize {scheme.name} (onnxruntime)", onnx_export.quantize, model,
                                   scheme, feeds)
    sess = onnx_export.session(model)
    actual = stages.run(f"{name}: parity check", sess.run, list(cap.outputs), adapt_feed(sess, cap.inputs))
    files = {"model": f"{name}/model.onnx"}
    files.update({f"external_data_{i}": f"{name}/{n}" for i, n in enumerate(onnx_export.external_data_files(model))})
    return files, [], info, actual


def _emit_coreml(writer, name: str, cap: capture.Captured, stages: _Stages, scheme, options: dict):
    """Convert to a Core ML package with the Swift package's names; returns (files, weight specs,
    info, outputs to check, the module those outputs must match)."""
    from . import coreml_export as cm

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
    return files, [], info, actual, swift


def _parity_outputs(name: str, cap: capture.Captured, swift: capture.Captured | None, reference: dict,
                    actual: list) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs (reference, actual) in the original component's terms."""
    if swift is None:
        return [(reference[n], a) for n, a in zip(cap.outputs, actual)]
    ref = reference[cap.outputs[0]]
    return [(ref[-1:] if name == "text_encoder" else ref, actual[0])]


def _build_component(writer: ArtifactWriter, name: str, cap: capture.Captured, target, tvm_target: dict,
                     stages: _Stages, parity_db: float, scheme, options: dict, calibration: list | None) -> dict:
    swift = None
    if target.backend == "onnxruntime":
        files, weight_specs, info, actual = _emit_onnx(writer, name, cap, stages, scheme, calibration)
    elif target.backend == "coreml":
        files, weight_specs, info, actual, swift = _emit_coreml(writer, name, cap, stages, scheme, options)
    elif target.backend in GPU_BACKENDS:
        files, weight_specs, info, actual = _emit_gpu(writer, name, cap, target, tvm_target, stages, scheme,
                                                      calibration, options.get("end", {}).get(name),
                                                      options["execute"], options["precision"])
    else:
        files, weight_specs, info, actual = _emit_tvm(writer, name, cap, target, tvm_target, stages, scheme,
                                                      calibration, options.get("end", {}).get(name))
    reference = capture.run_torch(cap)
    measured = None     # kernels for a device this machine lacks (Metal) are not executed here
    if actual is None:
        actual = [reference[o] for o in cap.outputs]    # for the output specs
    else:
        measured = round(min(psnr(r, a) for r, a in _parity_outputs(name, cap, swift, reference, actual)), 2)
    gate = parity_db if scheme is None else QUANT_FLOOR_DB
    if measured is not None and measured < gate:
        what = "quantized with " + scheme.name if scheme is not None else "compiled"
        raise ParityError(
            f"component {name!r} {what} for {target.name} reproduces torch at {measured:.2f} dB PSNR, "
            f"under the {gate:.1f} dB gate; the artifact was not written.", measured, gate)
    shown = swift or cap
    writer.add_component(Component(
        name=name, backend=target.backend, family=cap.family, files=files,
        inputs=[TensorSpec.of(n, a, shown.ranges.get(n)) for n, a in shown.inputs.items()],
        outputs=[TensorSpec.of(n, a) for n, a in zip(shown.outputs, actual)],
        weights=weight_specs,
        info={"parity_psnr_db": measured, "parity_threshold_db": gate, **info}))
    return {"psnr_db": measured, **{k: info[k] for k in ("quant", "parity_scope") if k in info}}


def build(model_dir: str | Path, out: str | Path, target: str = "cpu", height: int | None = None,
          width: int | None = None, batch: int | None = None, overwrite: bool = False, progress=None,
          parity_db: float = COMPONENT_PSNR_DB, quant: str | None = None, attention: str = "original",
          minimum_ios: int = 16, chunk_mb: float | None = 1000.0, execute: bool = True,
          precision: str | None = None, guidance: str | None = None, img2img: bool = False,
          vae: str | Path | None = None) -> BuildReport:
    """Build a diffusers pipeline folder into an artifact at `out`.

    quant: a scheme of edgegen.core.quant (onnx and coreml targets map it onto their tools).
    attention, minimum_ios, chunk_mb: Core ML only: "split-einsum" rewrites attention for the
    Neural Engine; the deployment target; the UNet is cut in two when its weights exceed chunk_mb
    (None: never).
    precision: GPU targets only, "fp16" (float16 in memory; float16 arithmetic where the device profile
    has it, accumulators in float32) or "fp32"; None takes the device profile's default (fp16 on adreno,
    mali and metal).
    execute=False: GPU kernels are generated and guarded but not run on this machine's device
    (benchmarks of shapes too big for PoCL); their parity is then recorded as not measured.
    guidance: text-to-image families: "cfg" or "none" (batch-1 UNet for distilled models); None takes
    the folder's default (see converters/sd.py guidance_mode). img2img: text-to-image families also
    build the VAE encoder, for image-to-image runs. vae: a folder with an AutoencoderTiny (TAESD) or
    AutoencoderKL, built in place of the pipeline's own VAE."""
    t_start = time.perf_counter()
    tgt = get_target(target)
    scheme = parse_scheme(quant) if quant else None
    if scheme is not None and scheme.activations and tgt.backend in GPU_BACKENDS:
        raise ValueError(f"--quant {scheme.name} on the {tgt.name} target: the GPU plans decode packed weights "
                         f"into float kernels and have no int8-activation kernels (int8 dot products); use w8, "
                         f"which stores the same int8 weights.")
    if precision is not None and tgt.backend not in GPU_BACKENDS:
        raise ValueError(f"--precision applies to the GPU targets; {tgt.name} builds float32 kernels (--quant fp16 "
                         f"stores float16 weights there).")
    if precision not in (None, "fp16", "fp32"):
        raise ValueError(f"precision must be fp16 or fp32, got {precision!r}")
    if attention not in ("original", "split-einsum"):
        raise ValueError(f"attention must be 'original' or 'split-einsum', got {attention!r}")
    if tgt.backend == "coreml":
        from .coreml_export import check_options

        check_options(scheme, minimum_ios)
    model_dir = Path(model_dir)
    index = source.read_model_index(model_dir)
    source.import_diffusers()
    family = FAMILIES.get(index.get("_class_name"))
    if family is None:
        raise ModelError(f"{model_dir}: pipeline class {index.get('_class_name')!r} is not supported; "
                         f"edgegen builds {sorted(FAMILIES)}.")
    options = {"attention": attention, "minimum_ios": minimum_ios, "chunk_mb": chunk_mb, "execute": execute,
               "precision": precision or tgt.profile.default_precision,
               "folder": "Resources" if family is sd else "coreml"}
    extra = {**({} if guidance is None else {"guidance": guidance}), **({"img2img": True} if img2img else {}),
             **({} if vae is None else {"vae": vae})}
    for option in extra:
        if option not in inspect.signature(family.plan).parameters:
            raise ValueError(f"--{option} applies to text-to-image pipelines; {index.get('_class_name')} has no "
                             f"such choice at build time.")
    stages = _Stages(progress)
    with ArtifactWriter(out, overwrite=overwrite) as writer:
        plan = stages.run("load pipeline", family.plan, model_dir, index, height=height, width=width, batch=batch,
                          **extra)
        if tgt.backend == "onnxruntime" and getattr(family, "OPTIMUM_TASK", None):
            from . import onnx_export

            stages.run("export pipeline to ONNX (optimum)", onnx_export.export_pipeline, model_dir, writer.tmp,
                       family.OPTIMUM_TASK)
        tvm_target = lower.resolve_target(tgt.tvm_target) if tgt.tvm_target else {}
        calibration = {}
        # calibration where it is used: w8a8 on onnx and cpu, mixed:<dB> on cpu and the GPU targets, the
        # calibrated weight methods (w4g32, pal4, ...; not <scheme>-rtn) on cpu (coreml maps w8a8 and
        # mixed to weight-only)
        tvm = tgt.backend == "tvm_vm" or tgt.backend in GPU_BACKENDS
        if scheme is not None and plan.calibrate is not None and (
                (scheme.activations and tgt.backend != "coreml") or (scheme.kind == "mixed" and tvm)
                or (calibrated(scheme) and tgt.backend == "tvm_vm")):
            calibration = stages.run("calibrate: real runs of the source pipeline", plan.calibrate)
        if scheme is not None and scheme.kind == "mixed" and tvm and plan.end_output is not None:
            # each component's share of the final output's error budget: together they meet the target
            share = scheme.target_db + MIXED_MARGIN_DB + 10 * math.log10(len(plan.components))
            options["end"] = {name: (_end_output(plan.end_output, name), share) for name in plan.components}
        components = {name: _build_component(writer, name, cap, tgt, tvm_target, stages, parity_db, scheme, options,
                                             calibration.get(name))
                      for name, cap in plan.components.items()}
        with open(writer.path(SCHEDULER_CONFIG), "w") as f:
            json.dump(plan.scheduler_config, f, indent=1)
        pipeline = {**plan.pipeline, "scheduler_config": SCHEDULER_CONFIG, **plan.write_extra(writer)}
        if tgt.backend == "coreml" and "tokenizer" in pipeline:
            for key in ("vocab", "merges"):   # the Swift package reads them beside the models
                shutil.copy(writer.path(pipeline["tokenizer"][key]), writer.path(options["folder"]))
        model_hash = stages.run("hash source model", sha256_tree, model_dir)
        dest = writer.commit(
            pipeline=pipeline,
            source={"path": str(model_dir.absolute()), "sha256": model_hash, "class": index.get("_class_name")},
            target={"name": tgt.name, "backend": tgt.backend, "tvm_target": tvm_target,
                    "device_profile": vars(tgt.profile), **({"quant": scheme.name} if scheme else {}),
                    **({"coreml": {k: options[k] for k in ("attention", "minimum_ios", "chunk_mb")}}
                       if tgt.backend == "coreml" else {})},
            toolchain=toolchain_versions(),
        )
    size = sum(p.stat().st_size for p in Path(dest).rglob("*") if p.is_file())
    manifest = json.loads((Path(dest) / "manifest.json").read_text())
    for name in components:
        components[name]["bytes"] = sum(manifest["files"][rel]["bytes"]
                                        for rel in manifest["components"][name]["files"].values())
    return BuildReport(artifact=str(dest), target=tgt.name, seconds=time.perf_counter() - t_start,
                       bytes=size, components=components, stages=stages.done)
