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


def check_plan(plan: dict, where: str) -> None:
    """Raise ArtifactError unless `plan` is a launch plan this runtime can execute: the format and
    version, every tensor a launch names declared, arena tensors inside the arena."""
    if plan.get("format") != PLAN_FORMAT:
        raise ArtifactError(f"{where}: not an edgegen launch plan (format {plan.get('format')!r})")
    if plan.get("version") != PLAN_VERSION:
        raise ArtifactError(f"{where}: launch plan version {plan.get('version')} is not {PLAN_VERSION}; "
                            f"rebuild the artifact with this edgegen or upgrade edgegen.")
    tensors = plan["tensors"]
    for name, t in tensors.items():
        if t["storage"] == "arena" and t["offset"] + t["bytes"] > plan["arena_bytes"]:
            raise ArtifactError(f"{where}: tensor {name!r} lies outside the arena")
        if t["storage"] == "view" and t["of"] not in tensors:
            raise ArtifactError(f"{where}: tensor {name!r} is a view of unknown tensor {t['of']!r}")
    for i, launch in enumerate(plan["launches"]):
        missing = [a for a in launch["args"] if a not in tensors]
        if missing:
            raise ArtifactError(f"{where}: launch {i} ({launch['kernel']}) names undeclared tensors {missing}")
        if launch["program"] not in plan["programs"]:
            raise ArtifactError(f"{where}: launch {i} names unknown program {launch['program']!r}")


def resolve(plan: dict, name: str) -> tuple[str, dict]:
    """The tensor whose storage `name` uses (a view's base, followed to the end) and its entry."""
    tensors = plan["tensors"]
    while tensors[name]["storage"] == "view":
        name = tensors[name]["of"]
    return name, tensors[name]
