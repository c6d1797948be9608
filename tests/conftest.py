import importlib.util
import json
import subprocess
import sys

import pytest

HAS_TORCH = all(importlib.util.find_spec(m) for m in ("torch", "diffusers", "transformers"))
HAS_TVM = importlib.util.find_spec("tvm") is not None
HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
HAS_OPTIMUM = importlib.util.find_spec("optimum") is not None and importlib.util.find_spec("optimum.onnxruntime") is not None
HAS_COREML = importlib.util.find_spec("coremltools") is not None
HAS_TORNADO = importlib.util.find_spec("tornado") is not None


def _backend(name: str) -> tuple[bool, str]:
    try:
        from edgegen.runtimes import get_backend

        get_backend(name)
        return True, ""
    except Exception as exc:  # noqa: BLE001 - the reason is the skip message
        return False, str(exc)


HAS_OPENCL, NO_OPENCL = _backend("opencl")
HAS_WEBGPU, NO_WEBGPU = _backend("webgpu")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "torch" in item.keywords and not HAS_TORCH:
            item.add_marker(pytest.mark.skip(reason="needs torch, diffusers and transformers: pip install 'edgegen[build]'"))
        if "onnx" in item.keywords and not HAS_ONNX:
            item.add_marker(pytest.mark.skip(reason="needs onnx, onnxscript, onnxruntime: pip install 'edgegen[onnx]'"))
        if "optimum" in item.keywords and not HAS_OPTIMUM:
            item.add_marker(pytest.mark.skip(reason="needs optimum==2.1.0 and optimum-onnx==0.1.0: pip install 'edgegen[onnx]'"))
        if "coreml" in item.keywords and not HAS_COREML:
            item.add_marker(pytest.mark.skip(reason="needs coremltools==9.0: pip install 'edgegen[coreml]'"))
        if "rpc" in item.keywords and not HAS_TORNADO:
            item.add_marker(pytest.mark.skip(reason="TVM's RPC tracker needs tornado: pip install 'edgegen[rpc]'"))
        if "opencl" in item.keywords and not HAS_OPENCL:
            item.add_marker(pytest.mark.skip(reason=f"needs an OpenCL device: {NO_OPENCL}"))
        if "webgpu" in item.keywords and not HAS_WEBGPU:
            item.add_marker(pytest.mark.skip(reason=f"needs a WebGPU adapter: {NO_WEBGPU}"))
        if "tvm" in item.keywords and not HAS_TVM:
            item.add_marker(pytest.mark.skip(reason="needs apache-tvm: pip install 'edgegen[runtime]'"))


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    if not HAS_TORCH:
        pytest.skip("needs torch, diffusers and transformers to write the tiny pipeline")
    from edgegen.testing import make_tiny_sd_pipeline

    return make_tiny_sd_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd")


def edgegen_cli(*args, timeout: float = 900) -> subprocess.CompletedProcess:
    """`edgegen ARGS` in its own process, as a user runs it: (returncode, stdout, stderr)."""
    return subprocess.run([sys.executable, "-m", "edgegen", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def tvm_compiler():
    """TVM with its compiler, imported before any test loads an artifact: a load imports TVM's runtime
    alone (edgegen.runtimes.tvm_import), and a build in the same process would then refuse."""
    if not HAS_TVM:
        pytest.skip("needs apache-tvm to build")
    from edgegen.converters.lower import import_tvm_compiler

    return import_tvm_compiler()


@pytest.fixture(scope="session")
def tiny_build_process(tiny_sd_dir, tmp_path_factory, tvm_compiler):
    """The tiny pipeline built for the CPU by `edgegen build --json` in its own process, once per
    session: (artifact dir, the finished process, whose output the console test reads)."""
    out = tmp_path_factory.mktemp("artifacts") / "tiny-cpu"
    proc = edgegen_cli("build", tiny_sd_dir, "--target", "cpu", "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    return out, proc


@pytest.fixture(scope="session")
def tiny_build(tiny_build_process):
    """The tiny CPU build: (artifact dir, --json summary)."""
    out, proc = tiny_build_process
    return out, json.loads(proc.stdout)


@pytest.fixture(scope="session")
def tiny_artifact(tiny_build):
    return tiny_build[0]


@pytest.fixture(scope="session")
def digits_model_dir():
    from edgegen.digits import example_dir

    path = example_dir() / "pipeline"
    if not (path / "model_index.json").is_file():
        pytest.skip("examples/digits/pipeline is missing: run examples/digits/train.py")
    return path


@pytest.fixture(scope="session")
def digits_artifact(digits_model_dir, tmp_path_factory):
    """The committed digits generator built for the CPU (batch 10), laid out as `edgegen demo` caches it."""
    if not (HAS_TVM and HAS_TORCH):
        pytest.skip("needs apache-tvm and torch to build")
    import edgegen

    cache = tmp_path_factory.mktemp("demo-cache")
    edgegen.build(digits_model_dir, cache / "digits-cpu", target="cpu")
    return cache / "digits-cpu"


@pytest.fixture(scope="session")
def digits_mali_small(digits_model_dir, tmp_path_factory):
    """The digits generator built for the `mali` GPU target with 2 images per call: a launch-plan
    artifact that runs here on PoCL (tests of untrusted artifacts and bad inputs)."""
    if not (HAS_TVM and HAS_TORCH and HAS_OPENCL):
        pytest.skip(f"needs apache-tvm, torch and an OpenCL device to build and run: {NO_OPENCL}")
    import edgegen

    out = tmp_path_factory.mktemp("gpu-artifacts") / "digits-mali"
    edgegen.build(digits_model_dir, out, target="mali", batch=2)
    return out


@pytest.fixture(scope="session")
def tiny_sd_adreno(tiny_sd_dir, tmp_path_factory):
    """The tiny pipeline's plan for `adreno`, kernels generated and guarded but not executed at build
    time (execute=False: PoCL compiles a UNet's kernels slowly); its text encoder runs here."""
    if not (HAS_TVM and HAS_OPENCL):
        pytest.skip(f"needs apache-tvm and an OpenCL device: {NO_OPENCL}")
    import edgegen

    out = tmp_path_factory.mktemp("gpu-artifacts") / "tiny-adreno"
    edgegen.build(tiny_sd_dir, out, target="adreno", execute=False)
    return out


@pytest.fixture(scope="session")
def native_program():
    """name -> a C test program of runtimes/native/tests, built; EDGEGEN_NATIVE_TESTS=DIR takes it from DIR
    (e.g. runtimes/native/build-asan/tests)."""
    import os
    from pathlib import Path

    native = Path(__file__).resolve().parents[1] / "runtimes" / "native"

    def program(name: str) -> Path:
        if os.environ.get("EDGEGEN_NATIVE_TESTS"):
            return Path(os.environ["EDGEGEN_NATIVE_TESTS"]).resolve() / name
        subprocess.run(["make", "-s", "-C", str(native), f"build/tests/{name}"], check=True, timeout=600)
        return native / "build" / "tests" / name

    return program
