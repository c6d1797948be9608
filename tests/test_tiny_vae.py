"""AutoencoderTiny (TAESD) as the decoder: a folder whose vae is one, and `edgegen build --vae DIR`."""

import json

import pytest

import edgegen
from edgegen.validation import COMPONENT_PSNR_DB, IMAGE_PSNR_DB

from conftest import edgegen_cli

pytestmark = [pytest.mark.tvm, pytest.mark.torch, pytest.mark.slow]


def _check(art, model, vae_class):
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["pipeline"]["vae"]["class"] == vae_class
    report = edgegen.validate(art, model, prompt="a cat sitting on a table", num_inference_steps=5, seed=2)
    assert report.components["vae_decoder"] >= COMPONENT_PSNR_DB, report.to_json()
    assert report.image_psnr_db >= IMAGE_PSNR_DB, report.to_json()
    report.raise_for_failure()
    return manifest


def test_folder_whose_vae_is_autoencoder_tiny(tmp_path, tvm_compiler):
    from edgegen.testing import make_tiny_sd_pipeline

    model = make_tiny_sd_pipeline(tmp_path / "tiny-sd-taesd", vae="tiny")
    assert json.loads((model / "model_index.json").read_text())["vae"][1] == "AutoencoderTiny"
    art = tmp_path / "art"
    proc = edgegen_cli("build", model, "--target", "cpu", "--out", art)
    assert proc.returncode == 0, proc.stderr
    assert "source" not in _check(art, model, "AutoencoderTiny")["pipeline"]["vae"]


def test_vae_swap(tiny_sd_dir, tiny_artifact, tmp_path):
    from edgegen.testing.tiny import make_tiny_taesd

    taesd = tmp_path / "taesd"
    make_tiny_taesd(taesd, seed=3)
    art = tmp_path / "art"
    proc = edgegen_cli("build", tiny_sd_dir, "--target", "cpu", "--out", art, "--vae", taesd)
    assert proc.returncode == 0, proc.stderr
    manifest = _check(art, tiny_sd_dir, "AutoencoderTiny")
    assert manifest["pipeline"]["vae"]["source"] == str(taesd.absolute())
    # the tiny decoder is a fraction of the pipeline's own
    own = json.loads((tiny_artifact / "manifest.json").read_text())
    size = {m: sum(f["bytes"] for rel, f in m_["files"].items() if rel.startswith("vae_decoder"))
            for m, m_ in (("tiny", manifest), ("own", own))}
    assert 0 < size["tiny"] < size["own"], size


def test_swap_names_a_folder_that_is_no_vae(tiny_sd_dir, tmp_path):
    (tmp_path / "novae").mkdir()
    proc = edgegen_cli("build", tiny_sd_dir, "--target", "cpu", "--out", tmp_path / "art", "--vae",
                       tmp_path / "novae")
    assert proc.returncode != 0 and "no config.json" in proc.stderr, proc.stderr


@pytest.mark.onnx
def test_vae_swap_on_onnx(tiny_sd_dir, tmp_path):
    """optimum exports the folder's own AutoencoderKL, so a swapped-in VAE sends the pipeline through
    torch.onnx; diffusers' notes on the swapped class stay off the console."""
    from edgegen.console import is_edgegen_line
    from edgegen.testing.tiny import make_tiny_taesd

    taesd = tmp_path / "taesd"
    make_tiny_taesd(taesd, seed=3)
    art = tmp_path / "art"
    proc = edgegen_cli("build", tiny_sd_dir, "--target", "onnx", "--out", art, "--vae", taesd)
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip() and not is_edgegen_line(line)] == []
    manifest = _check(art, tiny_sd_dir, "AutoencoderTiny")
    assert manifest["components"]["vae_decoder"]["info"]["exporter"] == "torch.onnx"
