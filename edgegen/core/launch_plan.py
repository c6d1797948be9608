"""The launch plan of a GPU artifact: kernel sources, the ordered kernel launches with their
argument tensors and grid/block sizes, and a statically planned memory arena.

A plan is JSON (format in README.md, "Launch plans") so that a native runtime (Kotlin,
Swift, C++) can execute the same file as edgegen's Python runtimes. Tensors live in one of
three places: the arena (inputs, outputs and intermediates, at a byte offset), a weight
(uploaded once from the component's weights file), or a view of another tensor (a reshape:
same bytes, other shape).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ArtifactError

PLAN_FORMAT = "edgegen-launch-plan"
PLAN_VERSION = 1
# Offsets of tensors in the arena: a multiple of this, which covers OpenCL's sub-buffer base
# alignment (CL_DEVICE_MEM_BASE_ADDR_ALIGN, at most 1024 bits on the devices we target) and
# WebGPU's minStorageBufferOffsetAlignment (256).
ARENA_ALIGNMENT = 256
LANGUAGES = {"opencl": "opencl-c", "webgpu": "wgsl", "metal": "metal"}
# a component's files role: a plan whose kernels compute in float16 ("arithmetic": "fp16") may carry the
# same programs computing in float32, for a device without fp16 arithmetic (OpenCL without cl_khr_fp16)
FALLBACK_KERNELS = "kernels_fp32_arithmetic"


def dtype_bytes(dtype: str) -> int:
    return np.dtype(dtype).itemsize


def align(n: int, to: int = ARENA_ALIGNMENT) -> int:
    return (n + to - 1) // to * to


@dataclass
class Interval:
    """A tensor that must hold its bytes from launch `first` to launch `last` (inclusive)."""

    name: str
    nbytes: int
    first: int
    last: int


def plan_arena(intervals: list[Interval], alignment: int = ARENA_ALIGNMENT) -> tuple[dict[str, int], int]:
    """Offsets for tensors whose lifetimes may overlap: greedy by size (largest first, each at the
    lowest aligned offset that no overlapping-in-time tensor occupies), as TFLite's arena planner.
    Returns ({name: offset}, arena bytes)."""
    placed: list[tuple[int, int, Interval]] = []     # (offset, end, interval)
    offsets: dict[str, int] = {}
    for item in sorted(intervals, key=lambda i: (-i.nbytes, i.first, i.name)):
        size = align(max(item.nbytes, 1), alignment)
        busy = sorted((o, e) for o, e, other in placed if other.first <= item.last and item.first <= other.last)
        offset = 0
        for start, end in busy:
            if offset + size <= start:
                break
            offset = max(offset, align(end, alignment))
        offsets[item.name] = offset
        placed.append((offset, offset + size, item))
    total = max((e for _, e, _ in placed), default=0)
    return offsets, total


# Work items of one launch: a sanity bound far above any plan edgegen writes, so that an edited
# grid cannot keep a device busy for hours
MAX_INVOCATIONS = 1 << 32


def check_plan(plan, where: str) -> None:
    """Raise ArtifactError unless `plan` is a launch plan this runtime can execute: the declared
    schema (edgegen/core/schema/launch_plan.schema.json), then the cross-references: each tensor's
    bytes match its shape, arena tensors lie inside the arena, views resolve (no cycle) to a tensor
    at least as large, every tensor a launch names is declared, every kernel is in its program."""
    from .manifest_check import check_schema

    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise ArtifactError(f"{where}: not an edgegen launch plan (format "
                            f"{plan.get('format') if isinstance(plan, dict) else None!r}); rebuild the artifact.")
    if plan.get("version") != PLAN_VERSION:
        raise ArtifactError(f"{where}: launch plan version {plan.get('version')!r} is not {PLAN_VERSION}; "
                            f"rebuild the artifact with this edgegen or upgrade edgegen.")
    check_schema(plan, "launch_plan", where)
    tensors = plan["tensors"]
    for name, t in tensors.items():
        need = int(np.prod(t["shape"], dtype=object)) * dtype_bytes(t["dtype"])
        if t["bytes"] != need:
            raise ArtifactError(f"{where}: tensors/{name}: bytes {t['bytes']}, its shape {t['shape']} of "
                                f"{t['dtype']} needs {need}; rebuild the artifact.")
        if t["storage"] == "arena" and t["offset"] + t["bytes"] > plan["arena_bytes"]:
            raise ArtifactError(f"{where}: tensors/{name} lies outside the arena; rebuild the artifact.")
        if t["storage"] == "view":
            seen, base = {name}, t
            while base["storage"] == "view":
                if base["of"] not in tensors:
                    raise ArtifactError(f"{where}: tensors/{name} is a view of unknown tensor {base['of']!r}; "
                                        f"rebuild the artifact.")
                if base["of"] in seen:
                    raise ArtifactError(f"{where}: tensors/{name}: its views form a cycle; rebuild the artifact.")
                seen.add(base["of"])
                base = tensors[base["of"]]
            if base["bytes"] < t["bytes"]:
                raise ArtifactError(f"{where}: tensors/{name} is a view larger than the tensor it views; "
                                    f"rebuild the artifact.")
    for role in ("inputs", "outputs"):
        for key, name in plan[role].items():
            if name not in tensors or resolve(plan, name)[1]["storage"] != "arena":
                raise ArtifactError(f"{where}: {role}/{key} names {name!r}, not a tensor in the arena; "
                                    f"rebuild the artifact.")
    for i, launch in enumerate(plan["launches"]):
        missing = [a for a in launch["args"] if a not in tensors]
        if missing:
            raise ArtifactError(f"{where}: launch {i} ({launch['kernel']}) names undeclared tensors {missing[:3]}; "
                                f"rebuild the artifact.")
        program = plan["programs"].get(launch["program"])
        if program is None:
            raise ArtifactError(f"{where}: launch {i} names unknown program {launch['program']!r}; "
                                f"rebuild the artifact.")
        if launch["kernel"] not in program["kernels"]:
            raise ArtifactError(f"{where}: launch {i}: kernel {launch['kernel']!r} is not in program "
                                f"{launch['program']!r}; rebuild the artifact.")
        for scalar in launch["scalars"]:
            kind = np.dtype(scalar["dtype"])
            value = scalar["value"]
            if kind.kind in "iu" and not (float(value).is_integer() and
                                          np.iinfo(kind).min <= value <= np.iinfo(kind).max):
                raise ArtifactError(f"{where}: launch {i}: scalar {value!r} is not a {kind}; rebuild the artifact.")
        work = int(np.prod(launch["grid"], dtype=object)) * int(np.prod(launch["block"], dtype=object))
        if work > MAX_INVOCATIONS:
            raise ArtifactError(f"{where}: launch {i}: grid {launch['grid']} x block {launch['block']} is "
                                f"{work} work items, over {MAX_INVOCATIONS}; rebuild the artifact.")


def resolve(plan: dict, name: str) -> tuple[str, dict]:
    """The tensor whose storage `name` uses (a view's base, followed to the end) and its entry."""
    tensors = plan["tensors"]
    while tensors[name]["storage"] == "view":
        name = tensors[name]["of"]
    return name, tensors[name]
