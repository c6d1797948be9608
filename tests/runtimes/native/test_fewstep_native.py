"""The C runtime on a distilled (--guidance none) tiny SD with the LCM sampler: batch-1 UNet calls and
the step noise drawn from the seed, against the Python OpenCL runtime."""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.opencl, pytest.mark.tvm, pytest.mark.torch]

RUN = Path(__file__).resolve().parents[3] / "runtimes" / "native" / "build" / "edgegen-run"


def test_lcm_image_equals_the_python_opencl_runtime(tmp_path):
    """PoCL compiles the tiny UNet's and VAE's kernels for minutes, once for pyopencl and once for the
    C runtime, so this runs when EDGEGEN_NATIVE_SD=1 (as the native tiny-SD test does)."""
    if os.environ.get("EDGEGEN_NATIVE_SD") != "1":
        pytest.skip("set EDGEGEN_NATIVE_SD=1: compiles the tiny UNet and VAE on PoCL twice (about 7 minutes here)")
    from PIL import Image

    import edgegen
    from edgegen.converters.lower import import_tvm_compiler
    from edgegen.core.metrics import psnr
    from edgegen.testing import make_tiny_sd_pipeline

    import_tvm_compiler()
    subprocess.run(["make", "-s", "-C", str(RUN.parents[1])], check=True, timeout=600)
    model = make_tiny_sd_pipeline(tmp_path / "tiny-lcm", scheduler="lcm")
    art = tmp_path / "art"
    edgegen.build(model, art, target="adreno", execute=False)
    env = dict(os.environ, EDGEGEN_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("EDGEGEN_RUNTIME", None)
    out = tmp_path / "lcm.png"
    proc = subprocess.run([str(RUN), str(art), "--prompt", "a photo of a cat", "--seed", "3", "--out", str(out),
                           "--quiet"], capture_output=True, text=True, timeout=1200, env=env)
    assert proc.returncode == 0, proc.stderr
    refused = subprocess.run([str(RUN), str(art), "--prompt", "a cat", "--guidance", "3", "--out",
                              str(tmp_path / "no.png"), "--quiet"], capture_output=True, text=True, env=env)
    assert refused.returncode != 0 and "without classifier-free guidance" in refused.stderr
    pipe = edgegen.load(art)
    try:
        ref = pipe("a photo of a cat", seed=3, output_type="np").images[0]
    finally:
        pipe.close()
    got = np.asarray(Image.open(out))
    assert got.shape == ref.shape
    assert psnr(ref / 255.0, got / 255.0, peak=1.0) >= 60
