"""Compile targets and the device profiles behind them, kept as data."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    memory_budget_bytes: int
    max_buffer_bytes: int
    notes: str = ""


@dataclass(frozen=True)
class Target:
    name: str
    backend: str            # runtime backend id that executes what this target builds
    tvm_target: dict        # apache-tvm 0.27 dict syntax; "mcpu": "host" = the build machine's CPU model
    profile: DeviceProfile
    description: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)


_GIB = 1 << 30

TARGETS: dict[str, Target] = {
    "cpu": Target(
        name="cpu",
        backend="tvm_vm",
        tvm_target={"kind": "llvm", "mcpu": "host"},
        profile=DeviceProfile("host-cpu", memory_budget_bytes=8 * _GIB, max_buffer_bytes=2 * _GIB,
                              notes="the build machine's CPU: the library uses its instruction set "
                                    "(e.g. AVX2/AVX-512) and runs on that CPU model or a newer one"),
        description="host CPU through TVM's LLVM backend, run by the Relax VM",
        aliases=("llvm", "host"),
    ),
    "onnx": Target(
        name="onnx",
        backend="onnxruntime",
        tvm_target={},
        profile=DeviceProfile("onnxruntime-cpu", memory_budget_bytes=8 * _GIB, max_buffer_bytes=2 * _GIB,
                              notes="ONNX models for onnxruntime (any host onnxruntime runs on)"),
        description="ONNX per component, in optimum's ORTDiffusionPipeline layout where optimum covers the "
                    "pipeline (torch.onnx opset 18 otherwise), run by onnxruntime",
    ),
    "coreml": Target(
        name="coreml",
        backend="coreml",
        tvm_target={},
        profile=DeviceProfile("apple-ane-gpu", memory_budget_bytes=6 * _GIB, max_buffer_bytes=1 * _GIB,
                              notes="Core ML ML Programs for iOS/macOS (Neural Engine, GPU, CPU); predictions "
                                    "need macOS or iOS"),
        description="Core ML .mlpackage per component (coremltools), in the Resources/ layout of Apple's Swift "
                    "StableDiffusion package",
        aliases=("mlpackage",),
    ),
}


def get_target(name: str) -> Target:
    for target in TARGETS.values():
        if name == target.name or name in target.aliases:
            return target
    raise ValueError(f"unknown target {name!r}; choose one of {sorted(TARGETS)}")


def device_profiles() -> dict[str, dict]:
    """Phone GPU profiles for roofline estimates (peak FLOP/s, bandwidth, cited sources)."""
    data = json.loads((Path(__file__).with_name("device_profiles.json")).read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}


def device_profile(name: str) -> dict:
    profiles = device_profiles()
    if name not in profiles:
        raise ValueError(f"unknown device profile {name!r}; choose one of {sorted(profiles)}")
    return profiles[name]
