"""--target onnx: the tiny pipeline exported per component, run by the onnxruntime backend."""

import pytest

import edgegen
from edgegen.core import Artifact
from edgegen.validation import IMAGE_PSNR_DB

pytestmark = [pytest.mark.onnx, pytest.mark.torch, pytest.mark.slow]


def test_onnx_artifact_matches_diffusers(tiny_sd_dir, tmp_path):
    report = edgegen.build(tiny_sd_dir, tmp_path / "art", target="onnx")
    art = Artifact.open(report.artifact)
    assert art.manifest["target"]["backend"] == "onnxruntime"
    assert {c.files["model"] for c in art.components.values()} == {
        "text_encoder/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx"}
    pipe = edgegen.runtimes.load(report.artifact)
    assert pipe("a red fox", num_inference_steps=2, seed=0).images[0].size == (32, 32)
    result = edgegen.validate(report.artifact, tiny_sd_dir, num_inference_steps=5, seed=1)
    assert result.passed and result.image_psnr_db >= IMAGE_PSNR_DB, result.to_json()
