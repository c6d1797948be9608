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
    # what one GPU kernel may use (the compile guard checks each generated kernel against these)
    max_workgroup_size: int = 0
    max_workgroup_dims: tuple = (0, 0, 0)
    local_memory_bytes: int = 0
    max_kernel_args: int = 0          # buffers + scalars (WebGPU: storage buffers per shader stage)
    max_program_bytes: int = 0        # kernel source size a driver compiles without trouble
    preferred_vector_width: int = 0   # float lanes the device's ALUs prefer
    # float16: whether the device's kernels can compute in it (OpenCL cl_khr_fp16, WebGPU shader-f16, Apple
    # GPUs), and the precision GPU builds take by default (fp16: float16 in memory, see converters/half_storage)
    fp16_arithmetic: bool = False
    default_precision: str = "fp32"
    # the device_profiles.json entry (peak FLOP/s, bandwidth) whose roofline picks per-layer kernels
    roofline: str = ""


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

_MIB = 1 << 20


# Mobile GPUs. Limits are the devices' OpenCL/Metal/WebGPU reported or specified values
# (Adreno 7xx: CL_DEVICE_MAX_WORK_GROUP_SIZE 1024, 32 KiB local memory; Mali Valhall: 1024 and
# 32 KiB; WebGPU: the spec's default limits, which every browser grants: 256 invocations,
# 16 KiB workgroup storage, 8 storage buffers per stage; Apple GPUs: 1024 threads, 32 KiB
# threadgroup memory, 31 buffer arguments). Schedules aim at 256 threads, as TVM's own tags do.
TARGETS.update({
    "opencl": Target("opencl", "opencl", {"kind": "opencl", "max_num_threads": 256, "max_threads_per_block": 256,
                                        "max_shared_memory_per_block": 16384, "thread_warp_size": 1},
                   DeviceProfile("opencl-generic", 4 * _GIB, 512 * _MIB, "any OpenCL 1.2 GPU (or PoCL on a CPU)",
                                 256, (256, 256, 256), 16384, 128, 4 * _MIB, 4),
                   "generic OpenCL C kernels + launch plan, run by the opencl runtime (pyopencl)"),
    "adreno": Target("adreno", "opencl", {"kind": "opencl", "device": "adreno", "keys": ["adreno", "opencl", "gpu"],
                                        "max_num_threads": 256, "max_threads_per_block": 256,
                                        "max_shared_memory_per_block": 16384, "thread_warp_size": 1},
                   DeviceProfile("adreno-7xx", 6 * _GIB, 1 * _GIB, "Qualcomm Adreno 6xx/7xx (Snapdragon), OpenCL 3.0",
                                 1024, (1024, 1024, 1024), 32768, 128, 4 * _MIB, 4, fp16_arithmetic=True,
                                 default_precision="fp16", roofline="adreno-740"),
                   "Qualcomm Adreno through OpenCL (TVM's Adreno TIR pipeline)", ("qcom",)),
    "mali": Target("mali", "opencl", {"kind": "opencl", "device": "mali", "keys": ["mali", "opencl", "gpu"],
                                    "max_num_threads": 256, "max_threads_per_block": 256,
                                    "max_shared_memory_per_block": 16384, "thread_warp_size": 1},
                 DeviceProfile("mali-valhall", 6 * _GIB, 1 * _GIB, "Arm Mali/Immortalis Valhall (G710, G715), OpenCL 3.0",
                               1024, (1024, 1024, 1024), 32768, 128, 4 * _MIB, 4, fp16_arithmetic=True,
                               default_precision="fp16", roofline="mali-g715"),
                 "Arm Mali through OpenCL"),
    "metal": Target("metal", "metal", {"kind": "metal", "max_num_threads": 256, "max_threads_per_block": 256,
                                     "max_shared_memory_per_block": 32768, "thread_warp_size": 32},
                  DeviceProfile("apple-gpu", 6 * _GIB, 1 * _GIB, "Apple GPU (A14 and later, M1 and later); kernels "
                                "run on macOS/iOS only", 1024, (1024, 1024, 1024), 32768, 31, 4 * _MIB, 4,
                                fp16_arithmetic=True, default_precision="fp16", roofline="a17-pro"),
                  "Metal Shading Language kernels + launch plan (executing them needs macOS or iOS)"),
    "webgpu": Target("webgpu", "webgpu", {"kind": "webgpu", "max_num_threads": 256,
                                        "max_shared_memory_per_block": 16384, "thread_warp_size": 1},
                   DeviceProfile("webgpu-default-limits", 2 * _GIB, 128 * _MIB, "any WebGPU implementation at the "
                                 "spec's default limits (browsers, wgpu, Dawn)", 256, (256, 256, 64), 16384, 8,
                                 # float16 in WGSL needs shader-f16, which brings f16 arithmetic with it
                                 4 * _MIB, 4, fp16_arithmetic=True),
                   "WGSL kernels + launch plan, run by the webgpu runtime (wgpu)", ("wgsl",)),
})
GPU_BACKENDS = ("opencl", "webgpu", "metal")


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
