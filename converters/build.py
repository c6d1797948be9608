"""The build: capture each component, lower and compile it, gate its parity, write the artifact."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from edgegen.core.artifact import ArtifactWriter, Component, sha256_tree
from edgegen.core.errors import ParityError
from edgegen.core.metrics import psnr
from edgegen.core.specs import TensorSpec
from edgegen.core.targets import get_target

from . import capture, lower, source

# A compiled component must reproduce its torch module at least this well (fp32 build).
COMPONENT_PSNR_DB = 40.0
CALIBRATION_PROMPT = "a photo of an astronaut riding a horse on the moon"


@dataclass
class BuildReport:
    artifact: str
    target: str
    seconds: float
    bytes: int
    components: dict = field(default_factory=dict)   # name -> {psnr_db, seconds, bytes}
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
    for dist in ("edgegen", "apache-tvm", "apache-tvm-ffi", "torch", "diffusers", "transformers", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _example_inputs(src: source.SDSource, height: int, width: int) -> dict[str, capture.Captured]:
    """Each component's capture, with realistic example inputs: a tokenized prompt,
    its embeddings, and seeded latents of the artifact's shape."""
    import torch

    rng = np.random.default_rng(0)
    tok = src.tokenizer
    ids = tok(["", CALIBRATION_PROMPT], padding="max_length", max_length=tok.model_max_length,
              truncation=True, return_tensors="np").input_ids
    te = capture.clip_text_encoder(src.text_encoder, ids)
    with torch.no_grad():
        emb = src.text_encoder(torch.from_numpy(ids.astype(np.int64)), return_dict=False)[0].numpy()
    factor = 2 ** (len(src.vae.config.block_out_channels) - 1)
    latent = (1, src.unet.config.in_channels, height // factor, width // factor)
    x = rng.standard_normal((2, *latent[1:]), dtype=np.float32)
    unet = capture.unet2d_condition(src.unet, x, np.array([500.0, 500.0], np.float32), emb)
    vae = capture.vae_decoder(src.vae, rng.standard_normal(latent, dtype=np.float32))
    return {"text_encoder": te, "unet": unet, "vae_decoder": vae}


def _build_component(writer: ArtifactWriter, name: str, cap: capture.Captured, target, stages: _Stages,
                     parity_db: float) -> dict:
    exported = stages.run(f"{name}: capture (torch.export)", capture.export, cap)
    lowered = stages.run(f"{name}: import to TVM Relax", lower.to_relax, exported, len(cap.inputs),
                         f"component {name!r}")
    executable = stages.run(f"{name}: compile for {target.name}", lower.compile_module, lowered.module,
                            target.tvm_target)
    lib_rel, weights_rel = f"{name}/model.so", f"{name}/weights.safetensors"
    stages.run(f"{name}: write library and weights", _write_component, writer, executable,
               lowered.weights, lib_rel, weights_rel)
    reference = capture.run_torch(cap)
    actual = stages.run(f"{name}: parity check", lower.run_library, writer.path(lib_rel),
                        list(cap.inputs.values()), [lowered.weights[s.name] for s in lowered.weight_specs])
    measured = min(psnr(reference[n], a) for n, a in zip(cap.outputs, actual))
    if measured < parity_db:
        raise ParityError(
            f"component {name!r} compiled for {target.name} reproduces torch at {measured:.2f} dB PSNR, "
            f"under the {parity_db:.1f} dB gate; the artifact was not written.", measured, parity_db)
    outputs = [TensorSpec.of(n, a) for n, a in zip(cap.outputs, actual)]
    writer.add_component(Component(
        name=name, backend=target.backend, family=cap.family,
        files={"library": lib_rel, "weights": weights_rel},
        inputs=[TensorSpec.of(n, a) for n, a in cap.inputs.items()], outputs=outputs,
        weights=lowered.weight_specs,
        info={"parity_psnr_db": round(measured, 2), "parity_threshold_db": parity_db,
              "schedule_rules": lower.SCHEDULE_RULES.get(target.tvm_target["kind"], []),
              "num_weights": int(sum(int(np.prod(s.shape)) for s in lowered.weight_specs))}))
    return {"psnr_db": round(measured, 2)}


def _write_component(writer, executable, weights, lib_rel, weights_rel) -> None:
    from edgegen.core import safetensors_io

    executable.export_library(str(writer.path(lib_rel)))
    safetensors_io.save(weights, writer.path(weights_rel))


def _write_tokenizer(writer: ArtifactWriter, src: source.SDSource) -> dict:
    tok = src.tokenizer
    with open(writer.path("tokenizer/vocab.json"), "w", encoding="utf-8") as f:
        json.dump(tok.encoder, f, ensure_ascii=False)
    with open(writer.path("tokenizer/merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in sorted(tok.bpe_ranks, key=tok.bpe_ranks.get):
            f.write(f"{a} {b}\n")
    return {"vocab": "tokenizer/vocab.json", "merges": "tokenizer/merges.txt",
            "max_length": int(tok.model_max_length), "bos_token": str(tok.bos_token),
            "eos_token": str(tok.eos_token), "pad_token": str(tok.pad_token), "unk_token": str(tok.unk_token)}


def build_sd(model_dir: str | Path, out: str | Path, target: str = "cpu", height: int | None = None,
             width: int | None = None, overwrite: bool = False, progress=None,
             parity_db: float = COMPONENT_PSNR_DB) -> BuildReport:
    """Build a Stable-Diffusion-shaped diffusers pipeline folder into an artifact."""
    t_start = time.perf_counter()
    tgt = get_target(target)
    stages = _Stages(progress)
    with ArtifactWriter(out, overwrite=overwrite) as writer:
        src = stages.run("load pipeline", source.load_sd, model_dir)
        factor = 2 ** (len(src.vae.config.block_out_channels) - 1)
        height = height or src.unet.config.sample_size * factor
        width = width or src.unet.config.sample_size * factor
        if height % (factor * 4) or width % (factor * 4):
            raise ValueError(f"height and width must be multiples of {factor * 4} for this model, "
                             f"got {height}x{width}")
        caps = _example_inputs(src, height, width)
        components = {name: _build_component(writer, name, cap, tgt, stages, parity_db)
                      for name, cap in caps.items()}
        tokenizer = _write_tokenizer(writer, src)
        with open(writer.path("scheduler/scheduler_config.json"), "w") as f:
            json.dump(src.scheduler_config, f, indent=1)
        model_hash = stages.run("hash source model", sha256_tree, model_dir)
        pipeline = {
            "kind": "stable-diffusion", "height": height, "width": width,
            "latent_shape": list(caps["vae_decoder"].inputs["latent_sample"].shape),
            "vae_scaling_factor": float(src.vae.config.scaling_factor),
            "tokenizer": tokenizer, "scheduler_config": "scheduler/scheduler_config.json",
        }
        dest = writer.commit(
            pipeline=pipeline,
            source={"path": str(Path(model_dir).absolute()), "sha256": model_hash,
                    "class": src.model_index.get("_class_name")},
            target={"name": tgt.name, "backend": tgt.backend, "tvm_target": tgt.tvm_target,
                    "device_profile": vars(tgt.profile)},
            toolchain=toolchain_versions(),
        )
    size = sum(p.stat().st_size for p in Path(dest).rglob("*") if p.is_file())
    for name in components:
        components[name]["bytes"] = sum(p.stat().st_size for p in (Path(dest) / name).rglob("*"))
    return BuildReport(artifact=str(dest), target=tgt.name, seconds=time.perf_counter() - t_start,
                       bytes=size, components=components, stages=stages.done)
