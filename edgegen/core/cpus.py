"""How many CPU cores this process may use: its CPU affinity, capped by its cgroup's CPU quota
(a container limited to 2 CPUs on a 64-core host may use 2)."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def available_cores(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    return max(1, min(cores, quota) if quota is not None else cores)


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> int | None:
    """The tightest CPU quota, in whole cores (rounded up), on this process's cgroup and its
    ancestors: cgroup v2's cpu.max ("QUOTA PERIOD" or "max PERIOD"), or v1's cpu.cfs_quota_us
    and cpu.cfs_period_us (quota -1: none). None where no quota is set or none can be read."""
    limits = []
    for folder in _cgroup_folders(Path(cgroup_root), Path(proc_cgroup)):
        fraction = _v2_quota(folder / "cpu.max") or _v1_quota(folder / "cpu.cfs_quota_us", folder / "cpu.cfs_period_us")
        if fraction:
            limits.append(fraction)
    return max(1, math.ceil(min(limits) - 1e-9)) if limits else None


def _cgroup_folders(root: Path, proc_cgroup: Path) -> list[Path]:
    """The folders that may hold this process's CPU limits: its own cgroup and each ancestor up to
    the root, in the v2 hierarchy (at root) and under v1's cpu controller (root/cpu, root/cpu,cpuacct)."""
    v2 = v1 = ""
    try:
        for line in proc_cgroup.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                v2 = path
            elif "cpu" in controllers.split(","):
                v1 = path
    except (OSError, ValueError):
        pass
    return [*_self_and_ancestors(root, v2), *_self_and_ancestors(root / "cpu", v1),
            *_self_and_ancestors(root / "cpu,cpuacct", v1)]


def _self_and_ancestors(base: Path, cgroup: str) -> list[Path]:
    parts = Path(cgroup.lstrip("/")).parts
    return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _v2_quota(path: Path) -> float | None:
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_quota(quota_path: Path, period_path: Path) -> float | None:
    try:
        quota, period = int(quota_path.read_text()), int(period_path.read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period
