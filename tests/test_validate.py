"""`edgegen validate`: the artifact against diffusers in torch fp32, from the same latents."""

import json

import pytest

import edgegen
from edgegen.cli import main
from edgegen.validation import COMPONENT_PSNR_DB, IMAGE_PSNR_DB

pytestmark = [pytest.mark.tvm, pytest.mark.torch, pytest.mark.slow]


@pytest.mark.parametrize("scheduler,guidance", [(None, 7.5), ("euler", 1.0)])
def test_matches_diffusers(tiny_artifact, tiny_sd_dir, scheduler, guidance):
    report = edgegen.validate(tiny_artifact, tiny_sd_dir, prompt="a red fox in the snow", num_inference_steps=6,
                              guidance_scale=guidance, seed=5, scheduler=scheduler)
    assert report.tokens_match
    assert report.image_psnr_db >= IMAGE_PSNR_DB, report.to_json()
    assert min(report.components.values()) >= COMPONENT_PSNR_DB
    assert len(report.steps) == 6 and min(report.steps) >= IMAGE_PSNR_DB
    assert report.passed
    report.raise_for_failure()


def test_mismatched_model_fails_with_figures(tiny_artifact, tmp_path, capsys):
    """An artifact checked against a different model (other weights) fails, exit code 1."""
    from edgegen.testing import make_tiny_sd_pipeline

    other = make_tiny_sd_pipeline(tmp_path / "other", seed=1)
    assert main(["validate", str(tiny_artifact), str(other), "--steps", "3", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert not report["passed"]
    assert report["components_psnr_db"]["unet"] < COMPONENT_PSNR_DB
    assert any(f.startswith("unet:") for f in report["failures"])
    with pytest.raises(edgegen.core.ParityError, match="validation failed"):
        edgegen.validate(tiny_artifact, other, num_inference_steps=2).raise_for_failure()
