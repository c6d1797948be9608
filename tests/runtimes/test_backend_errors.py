"""A backend's native failures (a library that does not load or lacks its function, an OpenCL or
WGSL program that does not build) end as an ArtifactError naming the component and the file, and
the CLI prints it on one line; the checksums are rewritten to match, as by whoever edited them."""

import hashlib
import json
import shutil
import subprocess
import sys

import pytest

from edgegen.core import ArtifactError

pytestmark = [pytest.mark.tvm, pytest.mark.torch, pytest.mark.slow]


def _replace(art, rel, data: bytes):
    (art / rel).write_bytes(data)
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (art / "manifest.json").write_text(json.dumps(manifest))


def _cli_run(art, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgegen", "run", str(art), "--label", "3", "--steps", "2",
                           "--out", str(tmp_path / "x.png")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    # one edgegen message, last; an OpenCL compiler may print its own diagnostic to stderr before it
    assert [i for i, ln in enumerate(lines) if "error" in ln and "edgegen" in ln] == [len(lines) - 1], proc.stderr
    assert len(lines) <= 2, proc.stderr
    return lines[-1]


def test_library_without_the_vm_function(digits_artifact, tmp_path):
    import ctypes.util
    from pathlib import Path

    from edgegen.runtimes import load

    name = ctypes.util.find_library("z")
    other = next(p for p in (Path("/lib/x86_64-linux-gnu") / name, Path("/usr/lib") / name) if p.is_file())
    art = shutil.copytree(digits_artifact, tmp_path / "art")
    _replace(art, "transformer/model.so", other.read_bytes())
    with pytest.raises(ArtifactError, match=r"component 'transformer': loading the library .*transformer/model\.so "
                                            r"failed"):
        load(art)
    assert "loading the library" in _cli_run(art, tmp_path)


def test_library_that_is_not_a_library(digits_artifact, tmp_path):
    art = shutil.copytree(digits_artifact, tmp_path / "art")
    _replace(art, "transformer/model.so", b"\x7fELF" + bytes(60))
    line = _cli_run(art, tmp_path)
    assert "transformer/model.so" in line and "damaged ELF header" in line


def test_truncated_library_is_refused_before_it_is_mapped(digits_artifact, tmp_path):
    art = shutil.copytree(digits_artifact, tmp_path / "art")
    data = (art / "transformer" / "model.so").read_bytes()
    _replace(art, "transformer/model.so", data[:len(data) // 10])
    line = _cli_run(art, tmp_path)
    assert "transformer/model.so" in line and "past the file's" in line


@pytest.mark.opencl
def test_opencl_program_that_does_not_build(digits_mali_small, tmp_path):
    from edgegen.runtimes import load

    art = shutil.copytree(digits_mali_small, tmp_path / "art")
    # the kernels PoCL runs: mali computes in float16, and PoCL, without cl_khr_fp16, runs the float32 twins
    rel = "transformer/kernels_fp32_arithmetic.cl"
    source = (art / rel).read_text()
    _replace(art, rel, source.replace("__kernel void", "__kernel void @@", 1).encode())
    with pytest.raises(ArtifactError, match=r"component 'transformer': building OpenCL program '\w+' of "
                                            r".*transformer/kernels_fp32_arithmetic\.cl failed"):
        load(art)
    assert "building OpenCL program" in _cli_run(art, tmp_path)


@pytest.mark.webgpu
def test_wgsl_kernel_that_does_not_compile(digits_model_dir, tmp_path):
    import edgegen
    from edgegen.runtimes import load

    art = tmp_path / "webgpu"
    edgegen.build(digits_model_dir, art, target="webgpu", batch=2, execute=False)
    source = (art / "transformer" / "kernels.wgsl").read_text()
    _replace(art, "transformer/kernels.wgsl", source.replace("fn ", "fn @@", 1).encode())
    with pytest.raises(ArtifactError, match=r"component 'transformer': compiling WGSL kernel '\w+' of "
                                            r".*transformer/kernels\.wgsl failed"):
        load(art)
