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
from edgegen.core.errors import ModelError, ParityError
from edgegen.core.memory import parse_size
from edgegen.core.metrics import psnr
from edgegen.core.quant import QUANT_FLOOR_DB
from edgegen.core.quant import parse as parse_scheme
from edgegen.core.specs import TensorSpec
from edgegen.core.targets import GPU_BACKENDS, get_target

from . import capture, dit, lower, memory_plan, sd, sdxl, source
from .emitters import EmitContext, calibrated, emitter

# A compiled component must reproduce its torch module at least this well (fp32 build).
COMPONENT_PSNR_DB = 40.0
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
# mixed:<dB> aims this far above its target on the calibration runs: other prompts and seeds vary
MIXED_MARGIN_DB = 1.5
FAMILIES = {cls: family for family in (sd, sdxl, dit) for cls in family.PIPELINE_CLASSES}


@dataclass
class BuildReport:
    artifact: str
    target: str
    seconds: float
    bytes: int
    components: dict = field(default_factory=dict)   # name -> {psnr_db, bytes}
    stages: list = field(default_factory=list)        # (stage, seconds)
    memory_plan: dict | None = None                   # mode, budget_bytes, peak_bytes, chunks
    peak_rss_mib: float | None = None                 # the building process's peak resident memory

    def to_json(self) -> dict:
        return {"artifact": self.artifact, "target": self.target, "seconds": round(self.seconds, 2),
                "bytes": self.bytes, "peak_rss_mib": self.peak_rss_mib, "components": self.components,
                "stages": [{"stage": s, "seconds": round(t, 2)} for s, t in self.stages],
                **({"memory_plan": self.memory_plan} if self.memory_plan else {})}


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


def peak_rss_mib() -> float | None:
    """This process's peak resident memory so far (ru_maxrss: KiB on Linux, bytes on macOS), in MiB;
    None where the platform has no getrusage (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2 ** 20 if platform.system() == "Darwin" else 1024), 1)


def toolchain_versions() -> dict:
    versions = {"python": platform.python_version(), "machine": platform.machine()}
    for dist in ("edgegen", "apache-tvm", "apache-tvm-ffi", "torch", "diffusers", "transformers", "numpy",
                 "onnx", "onnxruntime", "optimum", "optimum-onnx", "coremltools"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _end_output(end_output, component: str):
    """end_output for one component, named by the captured wrapper's parameters ("inner.<name>")."""
    def run(replaced, quick=False):
        return end_output(component, None if replaced is None
                          else {n.removeprefix("inner."): w for n, w in replaced.items()}, quick)
    return run


def _optimum_exports(family, plan) -> bool:
    """Whether optimum exports the pipeline (the layout ORTDiffusionPipeline loads). Its exporter reads
    the folder's own AutoencoderKL: a VAE swapped in by --vae, or an AutoencoderTiny, goes through
    torch.onnx with the other components."""
    vae = plan.pipeline.get("vae", {})
    return bool(getattr(family, "OPTIMUM_TASK", None)) and vae.get("class", "AutoencoderKL") == "AutoencoderKL" \
        and "source" not in vae


def _parity_outputs(name: str, cap: capture.Captured, swift: capture.Captured | None, reference: dict,
                    actual: list) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pairs (reference, actual) in the original component's terms."""
    if swift is None:
        return [(reference[n], a) for n, a in zip(cap.outputs, actual)]
    ref = reference[cap.outputs[0]]
    return [(ref[-1:] if name == "text_encoder" else ref, actual[0])]


def _build_component(writer: ArtifactWriter, name: str, cap: capture.Captured, target, tvm_target: dict,
                     stages: _Stages, parity_db: float, scheme, options: dict, calibration: list | None) -> dict:
    ctx = EmitContext(writer, target, tvm_target, stages, scheme, options)
    emitted = emitter(target.backend)(ctx, name, cap, calibration)
    files, weight_specs, info, actual, swift = (emitted.files, emitted.weight_specs, emitted.info, emitted.actual,
                                                emitted.shown)
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
    return {"psnr_db": measured, **{k: info[k] for k in ("quant", "parity_scope") if k in info},
            "weight_bytes": _weight_bytes(writer, files, info), "arena_bytes": info.get("arena_bytes")}


def _weight_bytes(writer: ArtifactWriter, files: dict, info: dict) -> int:
    """Bytes of the weights a runtime holds for the component: a GPU plan's stored weights, else its
    weights file (the library beside it is mapped code, not counted)."""
    if "weight_bytes" in info:
        return int(info["weight_bytes"])
    return sum(writer.path(rel).stat().st_size for key, rel in files.items() if key.startswith("weights"))


def build(model_dir: str | Path, out: str | Path, target: str = "cpu", height: int | None = None,
          width: int | None = None, batch: int | None = None, overwrite: bool = False, progress=None,
          parity_db: float = COMPONENT_PSNR_DB, quant: str | None = None, attention: str = "original",
          minimum_ios: int = 16, chunk_mb: float | None = 1000.0, execute: bool = True,
          precision: str | None = None, guidance: str | None = None, img2img: bool = False,
          vae: str | Path | None = None, memory_budget: str | int | None = None,
          vae_tile: int | None = None) -> BuildReport:
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
    AutoencoderKL, built in place of the pipeline's own VAE.
    memory_budget: cpu and GPU targets: the bytes a run may hold ("600MB", "1.5GB", or an int; default:
    the device profile's budget); the build plans which components are resident in each phase and
    cuts a component that alone exceeds it into chunks, and fails before compiling when no plan fits
    (converters/memory_plan.py).
    vae_tile: text-to-image families compile the VAE decoder for latent tiles of this many pixels and
    decode in blended tiles (converters/sd.py)."""
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
    budget = _budget(tgt, memory_budget)
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
             **({} if vae is None else {"vae": vae}), **({} if vae_tile is None else {"vae_tile": vae_tile})}
    for option in extra:
        if option not in inspect.signature(family.plan).parameters:
            raise ValueError(f"--{option.replace('_', '-')} applies to text-to-image pipelines; "
                             f"{index.get('_class_name')} has no such choice at build time.")
    stages = _Stages(progress)
    with ArtifactWriter(out, overwrite=overwrite) as writer:
        plan = stages.run("load pipeline", family.plan, model_dir, index, height=height, width=width, batch=batch,
                          **extra)
        if tgt.backend == "onnxruntime" and _optimum_exports(family, plan):
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
        memory, units = None, dict(plan.components)
        if budget is not None:
            memory, units = _plan_memory(plan.components, scheme, budget, stages,
                                         "--memory-budget" if memory_budget is not None else
                                         f"the {tgt.profile.name} device profile")
            options["winograd"] = memory["mode"] == "resident"
            calibration = memory_plan.chunk_calibration(units, calibration)
        components = {}
        for name, cap in units.items():
            components[name] = _build_component(writer, name, cap, tgt, tvm_target, stages, parity_db, scheme,
                                                options, calibration.get(name))
            cap.release()     # one component's torch weights at a time
        for cap in plan.components.values():     # the components cut into chunks
            cap.release()
        if memory is not None:
            memory = memory_plan.restate(memory, {name: (c["weight_bytes"], c["arena_bytes"])
                                                  for name, c in components.items()})
            memory_plan.check_built(memory)
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
            **({"memory_plan": memory} if memory is not None else {}),
        )
    size = sum(p.stat().st_size for p in Path(dest).rglob("*") if p.is_file())
    manifest = json.loads((Path(dest) / "manifest.json").read_text())
    for name in components:
        components[name]["bytes"] = sum(manifest["files"][rel]["bytes"]
                                        for rel in manifest["components"][name]["files"].values())
        components[name].pop("arena_bytes")
    return BuildReport(artifact=str(dest), target=tgt.name, seconds=time.perf_counter() - t_start,
                       bytes=size, components=components, stages=stages.done,
                       memory_plan=_plan_summary(memory), peak_rss_mib=peak_rss_mib())


def _budget(tgt, memory_budget) -> int | None:
    """The build's memory budget in bytes: the one asked for, else the device profile's; None for the
    targets whose runtimes manage their own memory (onnx, coreml)."""
    if tgt.backend != "tvm_vm" and tgt.backend not in GPU_BACKENDS:
        if memory_budget is not None:
            raise ValueError(f"--memory-budget applies to the cpu and GPU targets; {tgt.name}'s runtime "
                             f"({tgt.backend}) plans its own memory (coreml chunks with --chunk-mb).")
        return None
    return parse_size(memory_budget) if memory_budget is not None else tgt.profile.memory_budget_bytes


def _plan_memory(components: dict, scheme, budget: int, stages: _Stages, source: str) -> tuple[dict, dict]:
    """The memory plan for `budget` (BudgetError before anything compiles when none fits), and the
    components to build: the plan's chunks in place of a component it cuts."""
    measured = stages.run("memory plan: activations and weights of the exported graphs", memory_plan.measure,
                          components, scheme)
    plan, cuts = memory_plan.make(measured, budget, source)
    units = {}
    for name, cap in components.items():
        if name in cuts:
            units.update(stages.run(f"{name}: cut into {len(cuts[name]) + 1} chunks", memory_plan.chunked, name,
                                    cap, cuts[name], scheme))
        else:
            units[name] = cap
    return plan, units


def _plan_summary(memory: dict | None) -> dict | None:
    """The build summary's view of the plan: mode, budget, planned peak, chunks."""
    if memory is None:
        return None
    return {"mode": memory["mode"], "budget_bytes": memory["budget_bytes"], "peak_bytes": memory["peak_bytes"],
            "chunks": {n: c["chunks"] for n, c in memory["components"].items() if c.get("chunks")}}
