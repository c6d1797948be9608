"""--target onnx: optimum's pipeline layout, loaded by ORTDiffusionPipeline and by edgegen's
onnxruntime backend; quantization presets mapped onto onnxruntime's tools."""

import json

import numpy as np
import pytest

import edgegen
from edgegen.core import Artifact, quant
from edgegen.core.metrics import psnr
from edgegen.validation import IMAGE_PSNR_DB

pytestmark = [pytest.mark.onnx, pytest.mark.optimum, pytest.mark.torch, pytest.mark.slow]


@pytest.fixture(scope="module")
def onnx_artifact(tiny_sd_dir, tmp_path_factory):
    return edgegen.build(tiny_sd_dir, tmp_path_factory.mktemp("onnx") / "art", target="onnx")


def test_optimum_layout_and_manifest(onnx_artifact):
    art = Artifact.open(onnx_artifact.artifact)
    root = art.root
    assert art.manifest["target"]["backend"] == "onnxruntime"
    assert {c.files["model"] for c in art.components.values()} == {
        "text_encoder/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx"}
    for rel in ("model_index.json", "unet/config.json", "vae_decoder/config.json", "text_encoder/config.json",
                "tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json"):
        assert (root / rel).is_file() and rel in art.manifest["files"], rel
    assert json.loads((root / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"
    assert all(c.info["exporter"] == "optimum" for c in art.components.values())


def test_ort_diffusion_pipeline_loads_it_and_matches_torch(onnx_artifact, tiny_sd_dir):
    import torch
    from diffusers import StableDiffusionPipeline
    from optimum.onnxruntime import ORTDiffusionPipeline

    latents = np.random.default_rng(3).standard_normal((1, 4, 16, 16), dtype=np.float32)
    kw = {"num_inference_steps": 5, "guidance_scale": 7.5, "output_type": "np"}
    ours = ORTDiffusionPipeline.from_pretrained(onnx_artifact.artifact)
    ref = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, safety_checker=None)
    a = ours("a red fox in the snow", latents=torch.from_numpy(latents), **kw).images
    b = ref("a red fox in the snow", latents=torch.from_numpy(latents), **kw).images
    assert psnr(np.asarray(b), np.asarray(a)) >= IMAGE_PSNR_DB


def test_edgegen_backend_runs_it(onnx_artifact, tiny_sd_dir):
    pipe = edgegen.runtimes.load(onnx_artifact.artifact)
    assert pipe("a red fox", num_inference_steps=2, seed=0).images[0].size == (32, 32)
    result = edgegen.validate(onnx_artifact.artifact, tiny_sd_dir, num_inference_steps=5, seed=1)
    assert result.passed and result.image_psnr_db >= IMAGE_PSNR_DB, result.to_json()


@pytest.mark.parametrize("scheme,applied", [("fp16", "fp16"), ("w8", "w8"), ("w4g32", "w4g32"),
                                            ("pal4", "w4g32"), ("w8a8", "w8a8")])
def test_quantized_variants(tiny_sd_dir, tmp_path, onnx_artifact, scheme, applied):
    report = edgegen.build(tiny_sd_dir, tmp_path / scheme, target="onnx", quant=scheme)
    art = Artifact.open(report.artifact)
    assert art.manifest["target"]["quant"] == scheme
    fp32 = onnx_artifact.components
    for name, info in report.components.items():
        q = info["quant"]
        assert q["scheme"] == scheme and q["applied"] == applied
        assert (q["fallback_reason"] is not None) == (scheme != applied)
        assert q["weight_bytes"] < q["fp32_weight_bytes"]
        assert 0 < q["quantized_weight_fraction"] <= 1
        assert 10 <= info["psnr_db"] < fp32[name]["psnr_db"]   # measured, and lossy
    # whole files, graph included: the tiny text encoder's QDQ nodes can outweigh what int8 saves
    assert report.components["unet"]["bytes"] < fp32["unet"]["bytes"] and report.bytes < onnx_artifact.bytes
    if scheme == "fp16":
        assert all(i["quant"]["bits_per_weight"] == 16 for i in report.components.values())
    # the quantized artifact still runs end to end through edgegen's backend
    out = edgegen.runtimes.load(report.artifact)("a cat", num_inference_steps=2, seed=0, output_type="np")
    assert np.isfinite(out.latents).all()


def test_scheme_registry():
    assert quant.parse("w4g64").group == 64
    assert quant.parse("mixed:30").target_db == 30.0
    with pytest.raises(ValueError, match="unknown quantization scheme"):
        quant.parse("int3")


def test_bisect_finds_the_first_quantized_layer(tiny_sd_dir, tmp_path, onnx_artifact):
    from edgegen.bisect import bisect_unet

    rng = np.random.default_rng(0)
    inputs = {"sample": rng.standard_normal((2, 4, 16, 16), dtype=np.float32),
              "timestep": np.array([500.0, 500.0], np.float32),
              "encoder_hidden_states": rng.standard_normal((2, 77, 32), dtype=np.float32)}
    clean = bisect_unet(onnx_artifact.artifact, tiny_sd_dir, inputs)
    assert clean["supported"] and clean["layers_compared"] > 50 and clean["first_divergent"] is None
    assert min(w["psnr_db"] for w in clean["worst"]) > 100
    report = edgegen.build(tiny_sd_dir, tmp_path / "ternary", target="onnx", quant="ternary")
    broken = bisect_unet(report.artifact, tiny_sd_dir, inputs)
    first = broken["first_divergent"]
    assert first is not None and first["module"] == "Linear" and first["psnr_db"] < 40   # MatMulNBits layers
    # a quantized artifact is gated at the quantization floor, not float32's 40 dB: no bisection unless asked
    result = edgegen.validate(report.artifact, tiny_sd_dir, num_inference_steps=3)
    assert result.thresholds["component_db"] == quant.QUANT_FLOOR_DB and result.bisect is None
    assert result.passed and result.components["unet"] < 40
    asked = edgegen.validate(report.artifact, tiny_sd_dir, num_inference_steps=3, bisect=True)
    assert asked.bisect["component"] == "unet" and asked.bisect["layers_compared"] > 50
