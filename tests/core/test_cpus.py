"""The cores this process may use: CPU affinity capped by a cgroup quota, read from real files."""

import os
import subprocess
import sys

import pytest

from edgegen.core.cpus import available_cores, cgroup_cpu_quota

AFFINITY = len(os.sched_getaffinity(0))


def _cgroup(tmp_path, own: str, files: dict) -> tuple:
    """A fake /sys/fs/cgroup holding `files` (relative path -> text) and a /proc/self/cgroup naming `own`."""
    for rel, text in files.items():
        (tmp_path / "fs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "fs" / rel).write_text(text)
    (tmp_path / "proc").write_text(own)
    return tmp_path / "fs", tmp_path / "proc"


@pytest.mark.parametrize("own,files,quota", [
    ("0::/\n", {"cpu.max": "max 100000\n"}, None),
    ("0::/\n", {"cpu.max": "150000 100000\n"}, 2),                       # 1.5 CPUs: 2 threads
    ("0::/job/step\n", {"job/step/cpu.max": "max 100000", "job/cpu.max": "100000 100000"}, 1),   # parent's limit
    ("4:cpu,cpuacct:/pod\n0::/\n", {"cpu,cpuacct/pod/cpu.cfs_quota_us": "300000",
                                    "cpu,cpuacct/pod/cpu.cfs_period_us": "100000"}, 3),       # cgroup v1
    ("1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
    ("0::/\n", {}, None),                                                 # nothing readable
])
def test_cgroup_quota(tmp_path, own, files, quota):
    assert cgroup_cpu_quota(*_cgroup(tmp_path, own, files)) == quota


def test_available_cores_is_affinity_capped_by_quota(tmp_path):
    assert available_cores(*_cgroup(tmp_path, "0::/\n", {"cpu.max": "max 100000"})) == AFFINITY
    assert available_cores(*_cgroup(tmp_path, "0::/\n", {"cpu.max": "100000 100000"})) == 1
    assert available_cores(*_cgroup(tmp_path, "0::/\n", {"cpu.max": f"{100000 * (AFFINITY + 8)} 100000"})) == AFFINITY


def test_available_cores_follows_affinity():
    code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); " \
           "from edgegen.core.cpus import available_cores; print(available_cores())"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "1\n"
