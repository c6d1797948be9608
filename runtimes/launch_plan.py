"""What every launch-plan runtime (opencl, webgpu) shares: reading the plan, its programs and
weights, checking inputs, and where each tensor's bytes are."""

from __future__ import annotations

import numpy as np

from edgegen.core import safetensors_io
from edgegen.core.artifact import Artifact, Component
from edgegen.core.errors import ArtifactError, BackendUnavailableError
from edgegen.core.launch_plan import FALLBACK_KERNELS, check_plan, resolve
from edgegen.core.manifest_check import read_json
from edgegen.core.specs import check_inputs

PROGRAM_MARK = "// edgegen-program: "


def split_programs(text: str) -> dict[str, str]:
    """The kernel source file, one entry per `// edgegen-program: <name>` section."""
    programs: dict[str, str] = {}
    name = None
    lines: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.startswith(PROGRAM_MARK):
            if name is not None:
                programs[name] = "".join(lines)
            name, lines = line[len(PROGRAM_MARK):].strip(), []
        else:
            lines.append(line)
    if name is not None:
        programs[name] = "".join(lines)
    return programs


class PlanComponent:
    """A component's plan, program sources and host-side weights, checked."""

    def __init__(self, artifact: Artifact, component: Component, fp16_arithmetic: str | None = None):
        """fp16_arithmetic: None when the device computes in float16, else the reason it cannot (a plan
        whose kernels compute in float16 then runs its float32-arithmetic kernels, if it has them)."""
        self.component = component
        where = f"component {component.name!r}"
        for role in ("plan", "kernels", "weights"):
            if role not in component.files:
                raise ArtifactError(f"{where}: the manifest names no {role} file (files/{role}); rebuild the artifact.")
        plan_file = artifact.file(component.files["plan"])
        self.plan = read_json(plan_file)
        check_plan(self.plan, str(plan_file))
        self.arithmetic = self.plan.get("arithmetic", "fp32")
        self.kernels_role = "kernels"
        if self.arithmetic == "fp16" and fp16_arithmetic is not None:
            if FALLBACK_KERNELS not in component.files:
                raise BackendUnavailableError(f"{where}: its kernels compute in float16, and {fp16_arithmetic}; "
                                              f"rebuild it with --precision fp32, or run it on a device that "
                                              f"computes in float16.")
            self.arithmetic, self.kernels_role = "fp32", FALLBACK_KERNELS
        kernels_file = artifact.file(component.files[self.kernels_role])
        try:
            self.programs = split_programs(kernels_file.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ArtifactError(f"{kernels_file}: kernel source is not UTF-8 text ({exc.reason}); "
                                f"rebuild the artifact.") from exc
        missing = [p for p in self.plan["programs"] if p not in self.programs]
        if missing:
            raise ArtifactError(f"{kernels_file}: kernel source lacks programs {missing[:3]}; rebuild the artifact.")
        weights_file = artifact.file(component.files["weights"])
        self.weights = safetensors_io.load(weights_file)
        for n, t in self.plan["tensors"].items():
            if t["storage"] != "weight":
                continue
            w = self.weights.get(n)
            if w is None or str(w.dtype) != t["dtype"] or list(w.shape) != t["shape"]:
                got = "absent" if w is None else f"{w.dtype}{list(w.shape)}"
                raise ArtifactError(f"{weights_file}: weight {n!r} is {got}, the plan says "
                                    f"{t['dtype']}{t['shape']}; rebuild the artifact.")
        for role, specs in (("inputs", component.inputs), ("outputs", component.outputs)):
            for spec in specs:
                name = self.plan[role].get(spec.name)
                t = self.plan["tensors"].get(name) if name is not None else None
                # a plan may store a float tensor in another float type than the host sees (fp16 plans)
                same = t is not None and (t["dtype"] == spec.dtype or
                                          {np.dtype(t["dtype"]).kind, np.dtype(spec.dtype).kind} == {"f"})
                if not same or tuple(t["shape"]) != spec.shape:
                    raise ArtifactError(f"{plan_file}: {role}/{spec.name} does not match the manifest's "
                                        f"{spec.dtype}{list(spec.shape)}; rebuild the artifact.")

    def arena_tensor(self, name: str) -> tuple[int, dict]:
        """(byte offset in the arena, the tensor's entry) of an arena tensor or a view of one."""
        _, entry = resolve(self.plan, name)
        if entry["storage"] != "arena":
            raise ArtifactError(f"tensor {name!r} is not in the arena")
        return entry["offset"], self.plan["tensors"][name]

    def inputs(self, inputs: dict) -> list[tuple[int, np.ndarray]]:
        """(arena offset, contiguous array) for each input, checked against the component's specs."""
        arrays = check_inputs(self.component.inputs, inputs, f"component {self.component.name!r}")
        out = []
        for spec, arr in zip(self.component.inputs, arrays):
            offset, entry = self.arena_tensor(self.plan["inputs"][spec.name])
            out.append((offset, np.ascontiguousarray(arr, dtype=entry["dtype"])))
        return out

    def outputs(self) -> list[tuple[str, int, dict]]:
        """(name, arena offset, entry) per output; the entry's `host_dtype` is the component's (a plan
        stored in float16 returns float32, as its specs say)."""
        found = []
        for spec in self.component.outputs:
            offset, entry = self.arena_tensor(self.plan["outputs"][spec.name])
            found.append((spec.name, offset, {**entry, "host_dtype": spec.dtype}))
        return found


def as_array(raw: bytes | memoryview, entry: dict) -> np.ndarray:
    """An arena tensor's bytes as an array of its shape, in its `host_dtype` where one is given."""
    arr = np.frombuffer(bytes(raw), dtype=entry["dtype"], count=int(np.prod(entry["shape"], dtype=np.int64)))
    return arr.reshape(entry["shape"]).astype(entry.get("host_dtype", entry["dtype"]))
