"""Few-step samplers and distilled (no-CFG) builds of tiny SD, end to end against diffusers."""

import json

import numpy as np
import pytest

import edgegen
from edgegen.core.errors import InputError
from edgegen.validation import COMPONENT_PSNR_DB, IMAGE_PSNR_DB

from conftest import edgegen_cli

pytestmark = [pytest.mark.tvm, pytest.mark.torch, pytest.mark.slow]


@pytest.mark.parametrize("scheduler,steps", [("euler_a", 5), ("dpm", 6)])
def test_cfg_artifact_with_new_samplers(tiny_artifact, tiny_sd_dir, scheduler, steps):
    """Euler ancestral (its noise drawn from the seed on both sides) and DPM-Solver++ 2M on the CFG build."""
    report = edgegen.validate(tiny_artifact, tiny_sd_dir, prompt="a cat on a table", num_inference_steps=steps,
                              guidance_scale=5.0, seed=11, scheduler=scheduler)
    assert len(report.steps) == steps and min(report.steps) >= IMAGE_PSNR_DB, report.to_json()
    assert report.image_psnr_db >= IMAGE_PSNR_DB
    report.raise_for_failure()


@pytest.fixture(scope="module")
def lcm_build(tmp_path_factory, tvm_compiler):
    from edgegen.testing import make_tiny_sd_pipeline

    root = tmp_path_factory.mktemp("lcm")
    model = make_tiny_sd_pipeline(root / "tiny-lcm", scheduler="lcm")
    out = root / "art"
    proc = edgegen_cli("build", model, "--target", "cpu", "--out", out, "--json")   # no CFG: the folder's default
    assert proc.returncode == 0, proc.stderr
    return model, out


def test_lcm_folder_builds_a_batch1_unet(lcm_build):
    _, art = lcm_build
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["pipeline"]["guidance"] == "none"
    assert manifest["pipeline"]["sampling"] == {"guidance_scale": 1.0, "steps": 4}
    sample = next(s for s in manifest["components"]["unet"]["inputs"] if s["name"] == "sample")
    assert sample["shape"][0] == 1
    ids = next(s for s in manifest["components"]["text_encoder"]["inputs"] if s["name"] == "input_ids")
    assert ids["shape"][0] == 1


def test_lcm_four_steps_match_diffusers(lcm_build):
    model, art = lcm_build
    report = edgegen.validate(art, model, prompt="a red fox in the snow", num_inference_steps=4, seed=3)
    assert len(report.steps) == 4 and min(report.steps) >= IMAGE_PSNR_DB, report.to_json()
    assert min(report.components.values()) >= COMPONENT_PSNR_DB
    report.raise_for_failure()


def test_lcm_runtime_defaults_and_refusals(lcm_build):
    _, art = lcm_build
    pipe = edgegen.load(art)
    try:
        calls = []
        unet = pipe.sessions["unet"]
        run = unet.run
        unet.run = lambda **kw: calls.append(kw["sample"].shape) or run(**kw)
        a = pipe("a red fox", seed=7, output_type="np")
        assert calls == [(1, 4, 16, 16)] * 4          # four steps by default, one batch-1 UNet call each
        b = pipe("a red fox", seed=7, output_type="np")
        c = pipe("a red fox", seed=8, output_type="np")
        assert np.array_equal(a.latents, b.latents) and not np.array_equal(a.latents, c.latents)
        with pytest.raises(InputError, match="guidance"):
            pipe("a red fox", guidance_scale=3.0)
        with pytest.raises(InputError, match="negative_prompt"):
            pipe("a red fox", negative_prompt="blurry")
    finally:
        pipe.close()
