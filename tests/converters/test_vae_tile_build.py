"""`edgegen build --vae-tile N`: the VAE decoder compiled for NxN latent tiles, the tiling in the
manifest, and the Python runtime decoding whole latents in blended tiles."""

import json

import numpy as np
import pytest

from tests.conftest import edgegen_cli

pytestmark = [pytest.mark.tvm, pytest.mark.torch, pytest.mark.slow]

COMPILED_DB = 40.0   # the compiled tile decoder against torch's, through the same tiling


@pytest.fixture(scope="module")
def tiled_artifact(tiny_sd_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("vae-tile") / "tiny-cpu-tiled"
    proc = edgegen_cli("build", tiny_sd_dir, "--out", out, "--target", "cpu", "--vae-tile", 12, "--json")
    assert proc.returncode == 0, proc.stderr
    return out


def test_a_tile_as_large_as_the_latent_is_refused(tiny_sd_dir, tmp_path):
    out = tmp_path / "art"
    proc = edgegen_cli("build", tiny_sd_dir, "--out", out, "--target", "cpu", "--vae-tile", 16)
    assert proc.returncode != 0
    assert "--vae-tile 16" in proc.stderr and "smaller than the 16x16 latent" in proc.stderr, proc.stderr
    assert not out.exists()


def test_manifest_records_the_tiling_and_the_decoder_takes_tiles(tiled_artifact):
    manifest = json.loads((tiled_artifact / "manifest.json").read_text())
    tiling = manifest["pipeline"]["vae_tiling"]
    assert (tiling["tile"], tiling["overlap"], tiling["factor"]) == ([12, 12], 3, 2)
    assert "--vae-tile 12" in tiling["reason"]
    decoder = manifest["components"]["vae_decoder"]
    assert decoder["inputs"][0]["shape"] == [1, 4, 12, 12]
    assert decoder["outputs"][0]["shape"] == [1, 3, 24, 24]
    assert manifest["pipeline"]["latent_shape"] == [1, 4, 16, 16]


def test_runtime_decodes_whole_latents_in_tiles(tiled_artifact, tiny_sd_dir):
    """The pipeline's decode equals torch's decoder run through the same tiles; a full text-to-image
    call gives an image of the artifact's size."""
    import torch
    from diffusers import AutoencoderKL

    from edgegen import runtimes
    from edgegen.core.metrics import psnr
    from edgegen.runtimes.vae_tiles import decode_tiled

    vae = AutoencoderKL.from_pretrained(tiny_sd_dir / "vae").eval()
    latents = np.random.default_rng(5).standard_normal((1, 4, 16, 16), dtype=np.float32)
    pipe = runtimes.load(tiled_artifact)
    try:
        got = pipe.decode(latents)
        image = pipe("a cat", num_inference_steps=2, seed=1, output_type="np").images
    finally:
        pipe.close()

    def decode(t):
        with torch.no_grad():
            return vae.decode(torch.from_numpy(t)).sample.numpy()

    expected = decode_tiled(decode, latents / np.float32(vae.config.scaling_factor), (12, 12), 3, 2)
    assert got.shape == (1, 3, 32, 32)
    assert psnr(expected, got) >= COMPILED_DB
    assert image.shape == (1, 32, 32, 3)


def test_native_runtime_refuses_a_tiled_decoder(tiled_artifact, tmp_path):
    """runtimes/native decodes whole latents only: a tiled artifact is an error that says so, not a wrong image."""
    import shutil
    import subprocess
    from pathlib import Path

    if not shutil.which("make") or not shutil.which("cc"):
        pytest.skip("needs make and a C compiler (apt-get install gcc make)")
    native = Path(__file__).resolve().parents[2] / "runtimes" / "native"
    subprocess.run(["make", "-s", "-C", str(native)], check=True, timeout=600)
    proc = subprocess.run([str(native / "build" / "edgegen-run"), str(tiled_artifact), "--prompt", "a cat", "--steps",
                           "1", "--out", str(tmp_path / "x.png"), "--quiet"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and "built for latent tiles (--vae-tile)" in proc.stderr, proc.stderr
    assert not (tmp_path / "x.png").exists()
