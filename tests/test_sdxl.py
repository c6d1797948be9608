"""SDXL-shaped tiny pipelines (two text encoders, pooled embeddings, add_time_ids) built for the CPU."""

import json

import pytest

import edgegen
from edgegen.validation import COMPONENT_PSNR_DB, IMAGE_PSNR_DB

from conftest import edgegen_cli

pytestmark = [pytest.mark.tvm, pytest.mark.torch, pytest.mark.slow]


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory):
    from edgegen.testing.tiny import make_tiny_sdxl_pipeline

    return make_tiny_sdxl_pipeline(tmp_path_factory.mktemp("sdxl") / "tiny-sdxl")


@pytest.fixture(scope="module")
def sdxl_art(sdxl_dir, tmp_path_factory, tvm_compiler):
    art = tmp_path_factory.mktemp("sdxl-art") / "art"
    proc = edgegen_cli("build", sdxl_dir, "--target", "cpu", "--out", art)
    assert proc.returncode == 0, proc.stderr
    return art


def test_sdxl_matches_diffusers(sdxl_dir, sdxl_art):
    art = sdxl_art
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["pipeline"]["kind"] == "stable-diffusion-xl"
    assert sorted(manifest["components"]) == ["text_encoder", "text_encoder_2", "unet", "vae_decoder"]
    report = edgegen.validate(art, sdxl_dir, prompt="a red fox in the snow", num_inference_steps=5,
                              guidance_scale=5.0, seed=1)
    assert report.tokens_match
    assert min(report.components.values()) >= COMPONENT_PSNR_DB, report.to_json()
    assert len(report.steps) == 5 and report.image_psnr_db >= IMAGE_PSNR_DB, report.to_json()
    report.raise_for_failure()


def test_sdxl_with_autoencoder_tiny_at_another_size(sdxl_dir, tmp_path, tvm_compiler):
    """--vae swaps in a TAESD-shaped decoder; --height/--width set the latents and the time ids."""
    from edgegen.testing.tiny import make_tiny_taesd

    taesd = tmp_path / "taesd"
    make_tiny_taesd(taesd, seed=5)
    art = tmp_path / "art"
    proc = edgegen_cli("build", sdxl_dir, "--target", "cpu", "--out", art, "--vae", taesd, "--height", "48",
                       "--width", "40")
    assert proc.returncode == 0, proc.stderr
    pipe = edgegen.load(art)
    try:
        assert list(pipe.time_ids) == [48, 40, 0, 0, 48, 40] and pipe.latent_shape == (1, 4, 24, 20)
        assert pipe("a cat", num_inference_steps=2, seed=0, output_type="np").images.shape == (1, 48, 40, 3)
    finally:
        pipe.close()
    report = edgegen.validate(art, sdxl_dir, prompt="a cat on a table", num_inference_steps=4, seed=2,
                              scheduler="dpm")
    assert report.components["vae_decoder"] >= COMPONENT_PSNR_DB
    assert report.image_psnr_db >= IMAGE_PSNR_DB, report.to_json()
    report.raise_for_failure()


def test_no_negative_prompt_gives_zero_embeddings_as_diffusers(sdxl_dir, sdxl_art):
    """negative_prompt=None with force_zeros_for_empty_prompt: diffusers' SDXL default, same latents."""
    import numpy as np
    import torch

    from edgegen.core.metrics import psnr
    from edgegen.reference import sd_pipeline

    pipe = edgegen.load(sdxl_art)
    try:
        latents = np.random.default_rng(0).standard_normal(pipe.latent_shape, dtype=np.float32)
        ours = pipe("a cat", num_inference_steps=3, guidance_scale=4.0, latents=latents, output_type="np").latents
    finally:
        pipe.close()
    ref, _ = sd_pipeline(sdxl_dir)
    want = ref("a cat", num_inference_steps=3, guidance_scale=4.0, latents=torch.from_numpy(latents), height=32,
               width=32, output_type="latent").images.numpy()
    assert psnr(want, ours) >= IMAGE_PSNR_DB


@pytest.mark.onnx
def test_sdxl_on_onnx_matches_diffusers_on_a_quiet_console(sdxl_dir, tmp_path):
    """Each SDXL component through torch.onnx (no optimum layout for SDXL): the exporter's own notes
    (torchvision ops it skips, deprecated tree specs) stay off the console."""
    from edgegen.console import is_edgegen_line

    art = tmp_path / "onnx"
    proc = edgegen_cli("build", sdxl_dir, "--target", "onnx", "--out", art)
    assert proc.returncode == 0, proc.stderr
    lines = (proc.stderr + proc.stdout).splitlines()
    assert [line for line in lines if line.strip() and not is_edgegen_line(line)] == []
    report = edgegen.validate(art, sdxl_dir, prompt="a red fox in the snow", num_inference_steps=3,
                              guidance_scale=5.0, seed=1)
    assert min(report.components.values()) >= COMPONENT_PSNR_DB, report.to_json()
    assert report.image_psnr_db >= IMAGE_PSNR_DB, report.to_json()
