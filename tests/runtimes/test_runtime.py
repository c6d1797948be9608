"""Running a built artifact: the pipeline API, bad inputs, no torch in the process."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import edgegen
from edgegen.core import BackendUnavailableError, InputError

pytestmark = [pytest.mark.tvm, pytest.mark.slow]


def test_pipeline_call_is_deterministic(tiny_artifact):
    pipe = edgegen.runtimes.load(tiny_artifact)
    a = pipe("a red fox", num_inference_steps=4, guidance_scale=7.5, seed=3, output_type="np")
    b = pipe("a red fox", num_inference_steps=4, guidance_scale=7.5, seed=3, output_type="np")
    c = pipe("a red fox", num_inference_steps=4, guidance_scale=7.5, seed=4, output_type="np")
    assert a.images.shape == (1, 32, 32, 3) and a.images.dtype == np.uint8
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.latents, c.latents)
    pil = pipe("a red fox", num_inference_steps=2, seed=3).images[0]
    assert pil.size == (32, 32)
    pipe.close()


def test_wrong_inputs_are_named(tiny_artifact):
    pipe = edgegen.runtimes.load(tiny_artifact)
    unet = pipe.sessions["unet"]
    good = {"sample": np.zeros((2, 4, 16, 16), np.float32), "timestep": np.zeros(2, np.float32),
            "encoder_hidden_states": np.zeros((2, 77, 32), np.float32)}
    assert unet.run(**good)["out_sample"].shape == (2, 4, 16, 16)
    with pytest.raises(InputError, match=r"'sample' must be float32 with shape \[2, 4, 16, 16\]"):
        unet.run(**{**good, "sample": np.zeros((2, 4, 8, 8), np.float32)})
    with pytest.raises(InputError, match="'timestep' must be float32"):
        unet.run(**{**good, "timestep": np.zeros(2, np.int64)})
    with pytest.raises(InputError, match=r"missing \['encoder_hidden_states'\]"):
        unet.run(sample=good["sample"], timestep=good["timestep"])
    with pytest.raises(InputError, match="latents must have shape"):
        pipe("x", latents=np.zeros((1, 4, 8, 8), np.float32))
    with pytest.raises(InputError, match="one string"):
        pipe(["a", "b"])


def test_unknown_backend(tiny_artifact, tmp_path):
    import shutil

    from edgegen.core.artifact import MANIFEST

    copy = shutil.copytree(tiny_artifact, tmp_path / "copy")
    m = json.loads((copy / MANIFEST).read_text())
    m["components"]["unet"]["backend"] = "qnn_htp"
    (copy / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BackendUnavailableError, match="'qnn_htp' is unknown"):
        edgegen.runtimes.load(copy)


def test_run_without_torch(tiny_artifact, tmp_path):
    """`edgegen run` in a process where torch cannot be imported at all, and which never
    imports diffusers or transformers."""
    blocker = tmp_path / "blocker"
    for name in ("torch", "diffusers", "transformers"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked in this test')\n")
    script = textwrap.dedent(f"""
        import sys
        from edgegen.cli import main
        rc = main(["run", {str(tiny_artifact)!r}, "--prompt", "a cat", "--steps", "3",
                   "--out", {str(tmp_path / "cat.png")!r}, "--json"])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "diffusers", "transformers"))
        print("HEAVY", heavy)
        import tvm.base
        print("RUNTIME_ONLY", tvm.base._RUNTIME_ONLY)
        sys.exit(rc)
    """)
    env = dict(os.environ, PYTHONPATH=f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
    assert "RUNTIME_ONLY True" in proc.stdout
    assert (tmp_path / "cat.png").stat().st_size > 0
