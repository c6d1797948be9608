"""Backend `opencl`: executes a launch plan's OpenCL C kernels with pyopencl.

On a phone or desktop this runs on the vendor's OpenCL driver; on a machine without a GPU,
on PoCL (`apt-get install pocl-opencl-icd`). The plan is static, so every kernel's
arguments are bound once at load; a run writes the inputs into the arena, enqueues the
launches in order and reads the outputs back. `EDGEGEN_OPENCL_DEVICE=<substring>` picks a
device by name.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from edgegen.core.artifact import Artifact, Component
from edgegen.core.errors import BackendUnavailableError
from edgegen.core.launch_plan import ARENA_ALIGNMENT, resolve
from edgegen.core.quiet import warnings_hidden

from .launch_plan import PlanComponent, as_array
from .native_errors import wrapped

INSTALL_HINT = ("pip install pyopencl==2026.1.4, and an OpenCL driver: the GPU vendor's, or PoCL on a CPU "
                "(apt-get install pocl-opencl-icd)")


def _devices():
    import pyopencl as cl

    try:
        return [d for p in cl.get_platforms() for d in p.get_devices()]
    except cl.Error:     # no ICD installed: "platform not found"
        return []


def is_available() -> bool:
    return importlib.util.find_spec("pyopencl") is not None and bool(_devices())


def pick_device():
    devices = _devices()
    if not devices:
        raise BackendUnavailableError(f"no OpenCL device on this machine; {INSTALL_HINT}")
    wanted = os.environ.get("EDGEGEN_OPENCL_DEVICE")
    if wanted:
        match = [d for d in devices if wanted.lower() in d.name.lower()]
        if not match:
            raise BackendUnavailableError(f"no OpenCL device matches EDGEGEN_OPENCL_DEVICE={wanted!r}; "
                                          f"devices here: {[d.name for d in devices]}")
        return match[0]
    import pyopencl as cl

    gpus = [d for d in devices if d.type & cl.device_type.GPU]
    return (gpus or devices)[0]


class Session:
    def __init__(self, artifact: Artifact, component: Component):
        import pyopencl as cl

        self._cl = cl
        self.component = component
        self.device = pick_device()
        fp16 = "cl_khr_fp16" in self.device.extensions.split()
        self.plan_component = pc = PlanComponent(
            artifact, component, None if fp16 else f"{self.device.name} has no cl_khr_fp16")
        plan = pc.plan
        self.device_name = f"OpenCL: {self.device.name} ({self.device.platform.name})"
        if pc.kernels_role != "kernels":
            self.device_name += ", float32-arithmetic kernels (no cl_khr_fp16)"
        if self.device.mem_base_addr_align // 8 > ARENA_ALIGNMENT:
            raise BackendUnavailableError(f"{self.device.name} aligns sub-buffers to "
                                          f"{self.device.mem_base_addr_align // 8} B, more than the plan's "
                                          f"{ARENA_ALIGNMENT} B")
        self.context = cl.Context([self.device])
        self.queue = cl.CommandQueue(self.context)
        mf = cl.mem_flags
        self.arena = cl.Buffer(self.context, mf.READ_WRITE, max(plan["arena_bytes"], ARENA_ALIGNMENT))
        self._weights = {n: cl.Buffer(self.context, mf.READ_ONLY | mf.COPY_HOST_PTR,
                                      hostbuf=np.ascontiguousarray(pc.weights[n]))
                         for n, t in plan["tensors"].items() if t["storage"] == "weight"}
        self._sub: dict[str, object] = {}
        self._kernels_file = artifact.file(component.files[pc.kernels_role])
        programs = {}
        # a program that builds may still log the driver's own warnings (PoCL's on TVM's code): not the user's
        for name in plan["programs"]:
            with wrapped(component.name, f"building OpenCL program {name!r} of", self._kernels_file), \
                    warnings_hidden((cl.CompilerWarning, "Non-empty compiler output")):
                programs[name] = cl.Program(self.context, pc.programs[name]).build()
        self._launches = []
        for i, launch in enumerate(plan["launches"]):
            with wrapped(component.name, f"binding launch {i} ({launch['kernel']}) of", self._kernels_file):
                kernel = cl.Kernel(programs[launch["program"]], launch["kernel"])
                scalars = [np.dtype(s["dtype"]).type(s["value"]) for s in launch["scalars"]]
                kernel.set_args(*[self._buffer(a) for a in launch["args"]], *scalars)
            block = tuple(launch["block"])
            grid = tuple(g * b for g, b in zip(launch["grid"], block))
            self._launches.append((kernel, grid, block))

    def _buffer(self, name: str):
        """The cl.Buffer a kernel argument names: a weight, or a sub-buffer of the arena."""
        base, entry = resolve(self.plan_component.plan, name)
        if entry["storage"] == "weight":
            return self._weights[base]
        if base not in self._sub:
            self._sub[base] = self.arena.get_sub_region(entry["offset"], max(entry["bytes"], 1))
        return self._sub[base]

    def run(self, **inputs) -> dict[str, np.ndarray]:
        inputs = self.plan_component.inputs(inputs)
        with wrapped(self.component.name, "running the kernels of", self._kernels_file):
            return self._run(inputs)

    def _run(self, inputs: list) -> dict[str, np.ndarray]:
        cl = self._cl
        pc = self.plan_component
        for offset, arr in inputs:
            cl.enqueue_copy(self.queue, self.arena, arr, dst_offset=offset)
        for kernel, grid, block in self._launches:
            cl.enqueue_nd_range_kernel(self.queue, kernel, grid, block)
        results = []
        for name, offset, entry in pc.outputs():
            host = np.empty(entry["bytes"], dtype=np.uint8)
            cl.enqueue_copy(self.queue, host, self.arena, src_offset=offset)
            results.append((name, host, entry))
        self.queue.finish()
        return {name: as_array(host.data, entry) for name, host, entry in results}

    def launch_all(self) -> None:
        """Enqueue every launch on the arena as it is and wait: the kernels' time alone (benchmarks)."""
        for kernel, grid, block in self._launches:
            self._cl.enqueue_nd_range_kernel(self.queue, kernel, grid, block)
        self.queue.finish()

    def close(self) -> None:
        self._launches = []
        self._sub = {}
        self._weights = {}
        self.arena = None


def load(artifact: Artifact, component: Component) -> Session:
    return Session(artifact, component)
