"""Backend `webgpu`: executes a launch plan's WGSL kernels with the `wgpu` package.

In a browser the same plan runs through navigator.gpu; here wgpu-native runs it on any
Vulkan/Metal/D3D12 GPU, or on Mesa's lavapipe where there is none
(`apt-get install mesa-vulkan-drivers`). Pipelines and bind groups are made once at load
(the plan is static); a run writes the inputs into the arena, records every launch in one
compute pass and reads the outputs back.

Kernel convention (TVM's WGSL code generator): buffer arguments are bindings 0..n-1 of
group 0 in the kernel's parameter order; a uniform struct at binding n holds the scalar
arguments and `packGridDimX`, the index of the last workgroup along x. A grid wider than
the device's 65535 workgroups per dimension is folded into z.
"""

from __future__ import annotations

import importlib.util
import os
import re
import tempfile

import numpy as np

from edgegen.core.artifact import Artifact, Component
from edgegen.core.errors import ArtifactError, BackendUnavailableError
from edgegen.core.launch_plan import resolve

from .launch_plan import PlanComponent, as_array
from .native_errors import wrapped

INSTALL_HINT = ("pip install wgpu==0.32.0, and a GPU driver with Vulkan, Metal or D3D12 (on a machine "
                "without a GPU: apt-get install mesa-vulkan-drivers for lavapipe)")
_BINDING = re.compile(r"@group\(0\) @binding\((\d+)\) var<(storage, read_write|storage, read|uniform)>")
_FUNCTION = re.compile(r"^//-+\n// Function: (\w+)\n//-+\n", re.M)
MAX_GROUPS = 65535


def _runtime_dir() -> None:
    """Give Vulkan's window-system probe a private XDG_RUNTIME_DIR where the session has none (a
    headless server, a container, root over ssh): without it libwayland prints an error line for every
    adapter request, though compute needs no display."""
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    path = os.path.join(tempfile.gettempdir(), f"edgegen-runtime-{os.getuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = path


def _adapter():
    import wgpu

    _runtime_dir()
    try:
        return wgpu.gpu.request_adapter_sync(power_preference="high-performance")
    except Exception:  # noqa: BLE001 - wgpu raises its own types for "no adapter"
        return None


def is_available() -> bool:
    return importlib.util.find_spec("wgpu") is not None and _adapter() is not None


def kernel_sources(program: str) -> dict[str, str]:
    """TVM writes each kernel of a function as its own WGSL module after a `// Function:` header."""
    parts = _FUNCTION.split(program)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


class Session:
    def __init__(self, artifact: Artifact, component: Component):
        import wgpu

        self._wgpu = wgpu
        self.component = component
        self.plan_component = pc = PlanComponent(artifact, component)
        plan = pc.plan
        adapter = _adapter()
        if adapter is None:
            raise BackendUnavailableError(f"no WebGPU adapter on this machine; {INSTALL_HINT}")
        self.device_name = f"WebGPU: {adapter.info['device']} ({adapter.info['backend_type']})"
        limits = adapter.limits
        wanted = {k: limits[k] for k in ("max-storage-buffers-per-shader-stage", "max-storage-buffer-binding-size",
                                         "max-buffer-size", "max-compute-workgroup-storage-size",
                                         "max-compute-invocations-per-workgroup", "max-compute-workgroup-size-x",
                                         "max-compute-workgroup-size-y", "max-compute-workgroup-size-z")}
        features = []
        if any(t["dtype"] == "float16" for t in plan["tensors"].values()):     # a plan built with --precision fp16
            if "shader-f16" not in adapter.features:
                raise BackendUnavailableError(
                    f"component {component.name!r} stores float16 tensors, and this WebGPU adapter "
                    f"({adapter.info['device']}) lacks the shader-f16 feature; rebuild with --precision fp32")
            features.append("shader-f16")
        self.device = adapter.request_device_sync(required_limits=wanted, required_features=features)
        usage = wgpu.BufferUsage
        self.arena = self.device.create_buffer(size=_pad(max(plan["arena_bytes"], 256)),
                                               usage=usage.STORAGE | usage.COPY_SRC | usage.COPY_DST)
        self._weights = {}
        for n, t in plan["tensors"].items():
            if t["storage"] == "weight":
                data = np.ascontiguousarray(pc.weights[n]).tobytes()
                self._weights[n] = self.device.create_buffer_with_data(
                    data=data + b"\0" * (_pad(len(data)) - len(data)), usage=usage.STORAGE)
        pipelines = {}
        self._launches = []
        self._kernels_file = kernels_file = artifact.file(component.files["kernels"])
        for launch in plan["launches"]:
            key = (launch["program"], launch["kernel"])
            if key not in pipelines:
                source = kernel_sources(pc.programs[launch["program"]]).get(launch["kernel"])
                if source is None:
                    raise ArtifactError(f"{kernels_file}: program {launch['program']!r} has no kernel "
                                        f"{launch['kernel']!r}; rebuild the artifact.")
                with wrapped(component.name, f"compiling WGSL kernel {launch['kernel']!r} of", kernels_file):
                    layout = self._layout(source)
                    pipelines[key] = (self.device.create_compute_pipeline(
                        layout=self.device.create_pipeline_layout(bind_group_layouts=[layout]),
                        compute={"module": self.device.create_shader_module(code=source),
                                 "entry_point": launch["kernel"]}), layout)
            pipeline, layout = pipelines[key]
            gx, gy, gz = launch["grid"]
            if gx > MAX_GROUPS and gz > 1:
                raise ArtifactError(f"launch of {launch['kernel']}: a grid of {gx} x {gy} x {gz} cannot fold x into z")
            dispatch = (gx, gy, gz) if gx <= MAX_GROUPS else (MAX_GROUPS, gy, -(-gx // MAX_GROUPS))
            pod = b"".join(np.dtype(s["dtype"]).type(s["value"]).tobytes() for s in launch["scalars"]) \
                + np.uint32(gx - 1).tobytes()
            uniform = self.device.create_buffer_with_data(data=pod + b"\0" * (_pad(len(pod), 16) - len(pod)),
                                                          usage=usage.UNIFORM)
            entries = [{"binding": i, "resource": self._binding(a)} for i, a in enumerate(launch["args"])]
            entries.append({"binding": len(launch["args"]), "resource": {"buffer": uniform, "offset": 0,
                                                                          "size": uniform.size}})
            with wrapped(component.name, f"binding launch {launch['kernel']!r} of", kernels_file):
                group = self.device.create_bind_group(layout=layout, entries=entries)
            self._launches.append((pipeline, group, dispatch, uniform))

    def _layout(self, source: str):
        wgpu = self._wgpu
        kinds = {"storage, read_write": wgpu.BufferBindingType.storage,
                 "storage, read": wgpu.BufferBindingType.read_only_storage,
                 "uniform": wgpu.BufferBindingType.uniform}
        entries = [{"binding": int(b), "visibility": wgpu.ShaderStage.COMPUTE, "buffer": {"type": kinds[kind]}}
                   for b, kind in _BINDING.findall(source)]
        return self.device.create_bind_group_layout(entries=entries)

    def _binding(self, name: str) -> dict:
        base, entry = resolve(self.plan_component.plan, name)
        if entry["storage"] == "weight":
            buffer = self._weights[base]
            return {"buffer": buffer, "offset": 0, "size": buffer.size}
        return {"buffer": self.arena, "offset": entry["offset"], "size": _pad(max(entry["bytes"], 4))}

    def run(self, **inputs) -> dict[str, np.ndarray]:
        inputs = self.plan_component.inputs(inputs)
        with wrapped(self.component.name, "running the kernels of", self._kernels_file):
            return self._run(inputs)

    def _run(self, inputs: list) -> dict[str, np.ndarray]:
        pc = self.plan_component
        queue = self.device.queue
        for offset, arr in inputs:
            data = arr.tobytes()
            queue.write_buffer(self.arena, offset, data + b"\0" * (_pad(len(data)) - len(data)))
        encoder = self.device.create_command_encoder()
        compute = encoder.begin_compute_pass()
        for pipeline, group, dispatch, _ in self._launches:
            compute.set_pipeline(pipeline)
            compute.set_bind_group(0, group)
            compute.dispatch_workgroups(*dispatch)
        compute.end()
        queue.submit([encoder.finish()])
        return {name: as_array(queue.read_buffer(self.arena, offset, _pad(entry["bytes"]))[:entry["bytes"]], entry)
                for name, offset, entry in pc.outputs()}

    def close(self) -> None:
        self._launches = []
        self._weights = {}
        self.arena = None
        self.device = None


def _pad(n: int, to: int = 4) -> int:
    return (n + to - 1) // to * to


def load(artifact: Artifact, component: Component) -> Session:
    return Session(artifact, component)
