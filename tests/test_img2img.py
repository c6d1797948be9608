"""img2img on tiny SD: the VAE encoder built as a component, against diffusers' StableDiffusionImg2ImgPipeline."""

import json

import numpy as np
import pytest

import edgegen
from edgegen.core.errors import InputError
from edgegen.validation import COMPONENT_PSNR_DB, IMAGE_PSNR_DB

from conftest import edgegen_cli

pytestmark = [pytest.mark.tvm, pytest.mark.torch, pytest.mark.slow]


@pytest.fixture(scope="module")
def img2img_build(tiny_sd_dir, tmp_path_factory, tvm_compiler, tiny_artifact):
    out = tmp_path_factory.mktemp("img2img") / "art"
    proc = edgegen_cli("build", tiny_sd_dir, "--target", "cpu", "--out", out, "--img2img", "--json")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    """A smooth 32x32 picture (gradients and a disc) with some texture, as a PNG."""
    from PIL import Image

    y, x = np.mgrid[0:32, 0:32] / 31.0
    disc = ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.08).astype(float)
    rgb = np.stack([x, y, 0.5 * disc + 0.3 * np.sin(8 * x * y)], axis=-1)
    rgb += np.random.default_rng(0).normal(0, 0.03, rgb.shape)
    path = tmp_path_factory.mktemp("pictures") / "in.png"
    Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("scheduler", [None, "euler_a"])
def test_matches_diffusers_img2img_at_strength_0_6(img2img_build, tiny_sd_dir, picture, scheduler):
    from PIL import Image

    report = edgegen.validate(img2img_build, tiny_sd_dir, prompt="a red fox in the snow", num_inference_steps=10,
                              guidance_scale=6.0, seed=4, scheduler=scheduler, image=Image.open(picture),
                              strength=0.6)
    assert len(report.steps) == 6, report.to_json()          # strength 0.6 keeps 6 of 10 steps
    assert report.components["vae_encoder"] >= COMPONENT_PSNR_DB
    assert report.image_psnr_db >= IMAGE_PSNR_DB and min(report.steps) >= IMAGE_PSNR_DB, report.to_json()
    report.raise_for_failure()


@pytest.mark.onnx
def test_img2img_on_onnx(tiny_sd_dir, picture, tmp_path):
    """optimum's VAE encoder gives other outputs than the component's `moments`: that one goes through
    torch.onnx, and the rest keeps optimum's layout."""
    from PIL import Image

    art = tmp_path / "onnx"
    proc = edgegen_cli("build", tiny_sd_dir, "--target", "onnx", "--out", art, "--img2img")
    assert proc.returncode == 0, proc.stderr
    components = json.loads((art / "manifest.json").read_text())["components"]
    assert components["vae_encoder"]["info"]["exporter"] == "torch.onnx"
    assert components["unet"]["info"]["exporter"] == "optimum"
    report = edgegen.validate(art, tiny_sd_dir, prompt="a red fox in the snow", num_inference_steps=5,
                              seed=4, image=Image.open(picture), strength=0.6)
    assert report.components["vae_encoder"] >= COMPONENT_PSNR_DB
    assert report.image_psnr_db >= IMAGE_PSNR_DB, report.to_json()


def test_cli_run_with_image(img2img_build, picture, tmp_path):
    out = tmp_path / "out.png"
    proc = edgegen_cli("run", img2img_build, "--prompt", "a fox", "--image", picture, "--strength", "0.6",
                       "--steps", "5", "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["vae_encoder_s"] > 0
    from PIL import Image

    assert Image.open(out).size == (32, 32)


def test_image_inputs_are_checked(img2img_build, tiny_artifact, picture):
    from PIL import Image

    pipe = edgegen.load(img2img_build)
    try:
        with pytest.raises(InputError, match="32x32"):
            pipe("a fox", image=Image.open(picture).resize((40, 40)), strength=0.5)
        with pytest.raises(InputError, match="keeps no step"):
            pipe("a fox", image=Image.open(picture), strength=0.05, num_inference_steps=10)
        with pytest.raises(InputError, match="pass an image"):
            pipe("a fox", strength=0.5)
    finally:
        pipe.close()
    plain = edgegen.load(tiny_artifact)
    try:
        with pytest.raises(InputError, match="--img2img"):
            plain("a fox", image=Image.open(picture))
    finally:
        plain.close()
