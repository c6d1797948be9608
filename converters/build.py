"""The build: capture each component, lower and compile it, gate its parity, write the artifact.

Which components a model has comes from its family's plan (`FAMILIES`, keyed by
the pipeline class in model_index.json); the loop here is the same for all.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from edgegen.core.artifact import ArtifactWriter, Component, sha256_tree
from edgegen.core.errors import ModelError, ParityError
from edgegen.core.metrics import psnr
from edgegen.core.specs import TensorSpec
from edgegen.core.targets import get_target

from . import capture, dit, lower, sd, source

# A compiled component must reproduce its torch module at least this well (fp32 build).
COMPONENT_PSNR_DB = 40.0
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
FAMILIES = {cls: family for family in (sd, dit) for cls in family.PIPELINE_CLASSES}


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


def toolchain_versions() -> dict:
    versions = {"python": platform.python_version(), "machine": platform.machine()}
    for dist in ("edgegen", "apache-tvm", "apache-tvm-ffi", "torch", "diffusers", "transformers", "numpy",
                 "onnx", "onnxruntime"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _write_component(writer, executable, weights, lib_rel, weights_rel) -> None:
    from edgegen.core import safetensors_io

    executable.export_library(str(writer.path(lib_rel)))
    safetensors_io.save(weights, writer.path(weights_rel))


def _emit_tvm(writer, name: str, cap: capture.Captured, target, tvm_target: dict, stages: _Stages):
    """Compile with TVM; returns (files, weight specs, info, outputs on the example inputs)."""
    exported = stages.run(f"{name}: capture (torch.export)", capture.export, cap)
    lowered = stages.run(f"{name}: import to TVM Relax", lower.to_relax, exported, len(cap.inputs),
                         f"component {name!r}")
    executable = stages.run(f"{name}: compile for {target.name}", lower.compile_module, lowered.module,
                            tvm_target)
    files = {"library": f"{name}/model.so", "weights": f"{name}/weights.safetensors"}
    stages.run(f"{name}: write library and weights", _write_component, writer, executable,
               lowered.weights, files["library"], files["weights"])
    actual = stages.run(f"{name}: parity check", lower.run_library, writer.path(files["library"]),
                        list(cap.inputs.values()), [lowered.weights[s.name] for s in lowered.weight_specs])
    info = {"schedule_rules": lower.SCHEDULE_RULES.get(tvm_target["kind"], []),
            "num_weights": int(sum(int(np.prod(s.shape)) for s in lowered.weight_specs))}
    return files, lowered.weight_specs, info, actual


def _emit_onnx(writer, name: str, cap: capture.Captured, stages: _Stages):
    """Export to ONNX; returns (files, weight specs, info, outputs on the example inputs)."""
    from . import onnx_export

    files = {"model": f"{name}/model.onnx"}
    stages.run(f"{name}: export ONNX (torch.onnx)", onnx_export.export, cap, writer.path(files["model"]))
    sess = onnx_export.session(writer.path(files["model"]))
    actual = stages.run(f"{name}: parity check", sess.run, list(cap.outputs), dict(cap.inputs))
    data = sorted(p.name for p in writer.path(name).iterdir() if p.name != "model.onnx")
    files.update({f"external_data_{i}": f"{name}/{n}" for i, n in enumerate(data)})
    return files, [], {"opset": onnx_export.OPSET}, actual


def _build_component(writer: ArtifactWriter, name: str, cap: capture.Captured, target, tvm_target: dict,
                     stages: _Stages, parity_db: float) -> dict:
    if target.backend == "onnxruntime":
        files, weight_specs, info, actual = _emit_onnx(writer, name, cap, stages)
    else:
        files, weight_specs, info, actual = _emit_tvm(writer, name, cap, target, tvm_target, stages)
    reference = capture.run_torch(cap)
    measured = min(psnr(reference[n], a) for n, a in zip(cap.outputs, actual))
    if measured < parity_db:
        raise ParityError(
            f"component {name!r} compiled for {target.name} reproduces torch at {measured:.2f} dB PSNR, "
            f"under the {parity_db:.1f} dB gate; the artifact was not written.", measured, parity_db)
    writer.add_component(Component(
        name=name, backend=target.backend, family=cap.family, files=files,
        inputs=[TensorSpec.of(n, a) for n, a in cap.inputs.items()],
        outputs=[TensorSpec.of(n, a) for n, a in zip(cap.outputs, actual)],
        weights=weight_specs,
        info={"parity_psnr_db": round(measured, 2), "parity_threshold_db": parity_db, **info}))
    return {"psnr_db": round(measured, 2)}


def build(model_dir: str | Path, out: str | Path, target: str = "cpu", height: int | None = None,
          width: int | None = None, batch: int | None = None, overwrite: bool = False, progress=None,
          parity_db: float = COMPONENT_PSNR_DB) -> BuildReport:
    """Build a diffusers pipeline folder into an artifact at `out`."""
    t_start = time.perf_counter()
    tgt = get_target(target)
    model_dir = Path(model_dir)
    index = source.read_model_index(model_dir)
    family = FAMILIES.get(index.get("_class_name"))
    if family is None:
        raise ModelError(f"{model_dir}: pipeline class {index.get('_class_name')!r} is not supported; "
                         f"edgegen builds {sorted(FAMILIES)}.")
    stages = _Stages(progress)
    with ArtifactWriter(out, overwrite=overwrite) as writer:
        plan = stages.run("load pipeline", family.plan, model_dir, index, height=height, width=width, batch=batch)
        tvm_target = lower.resolve_target(tgt.tvm_target) if tgt.tvm_target else {}
        components = {name: _build_component(writer, name, cap, tgt, tvm_target, stages, parity_db)
                      for name, cap in plan.components.items()}
        with open(writer.path(SCHEDULER_CONFIG), "w") as f:
            json.dump(plan.scheduler_config, f, indent=1)
        pipeline = {**plan.pipeline, "scheduler_config": SCHEDULER_CONFIG, **plan.write_extra(writer)}
        model_hash = stages.run("hash source model", sha256_tree, model_dir)
        dest = writer.commit(
            pipeline=pipeline,
            source={"path": str(model_dir.absolute()), "sha256": model_hash, "class": index.get("_class_name")},
            target={"name": tgt.name, "backend": tgt.backend, "tvm_target": tvm_target,
                    "device_profile": vars(tgt.profile)},
            toolchain=toolchain_versions(),
        )
    size = sum(p.stat().st_size for p in Path(dest).rglob("*") if p.is_file())
    for name in components:
        components[name]["bytes"] = sum(p.stat().st_size for p in (Path(dest) / name).rglob("*"))
    return BuildReport(artifact=str(dest), target=tgt.name, seconds=time.perf_counter() - t_start,
                       bytes=size, components=components, stages=stages.done)
