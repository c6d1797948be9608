"""--quant on the cpu target: packed weights in the artifact, per-layer records in the manifest,
the final output against float32, and mixed:<dB> meeting its target from real calibration runs."""

import contextlib
import io
import json

import numpy as np
import pytest

import edgegen
from edgegen.converters.quantize import MIXED_LADDER
from edgegen.core import Artifact

pytestmark = [pytest.mark.tvm, pytest.mark.torch, pytest.mark.slow]
PACKED = {"int8", "uint8", "float16"}


def _build_cli(model_dir, out, scheme, *extra):
    from edgegen.cli import main

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["build", str(model_dir), "--target", "cpu", "--quant", scheme, "--out", str(out), "--json",
                     "--quiet", *extra])
    return code, json.loads(stdout.getvalue())


def _check_manifest(art: Artifact, scheme: str) -> dict:
    """Every matmul/conv weight is either packed in `scheme`'s form or kept float32 with a reason."""
    q = art.manifest["target"]["quant_result"]
    for comp in art.components.values():
        info = comp.info["quant"]
        dtypes = {s.name: s.dtype for s in comp.weights}
        for layer in info["layers"]:
            if layer["scheme"] == "fp32":
                assert layer["reason"] and dtypes[layer["weight"]] == "float32"
            else:
                assert layer["weight"] not in dtypes   # no float32 copy: only its packed arrays
                stored = {n: d for n, d in dtypes.items() if n.startswith(layer["weight"] + ".")}
                assert stored and set(stored.values()) <= PACKED
                assert layer["bits_per_weight"] < 16 or layer["scheme"] == "fp16"
        assert 0 < info["quantized_share"] <= 1
    return q


def test_w8_tiny_sd_final_output_and_size(tiny_sd_dir, tiny_artifact, tmp_path):
    code, summary = _build_cli(tiny_sd_dir, tmp_path / "w8", "w8")
    assert code == 0
    art = Artifact.open(tmp_path / "w8")
    result = _check_manifest(art, "w8")
    assert result["final_output_psnr_db"] >= 35, result     # the gate for w8
    assert summary["quant_result"] == result
    fp32 = Artifact.open(tiny_artifact)
    for name in ("unet", "vae_decoder"):
        info = art.components[name].info["quant"]
        assert 8 <= info["bits_per_weight_quantized"] < 8.6
        assert art.components[name].info["parity_psnr_db"] >= 40
        size = art.manifest["files"][art.components[name].files["weights"]]["bytes"]
        size_fp32 = fp32.manifest["files"][fp32.components[name].files["weights"]]["bytes"]
        assert size < 0.3 * size_fp32, (name, size, size_fp32)   # 8-bit codes + scales, a few float32 layers
    # the runtime holds the packed form
    pipe = edgegen.runtimes.load(tmp_path / "w8")
    try:
        held = {str(p.dtype) for p in pipe.sessions["unet"]._params}
        assert "int8" in held
        out = pipe("a red fox", num_inference_steps=2, output_type="np", seed=0)
        assert np.all(np.isfinite(out.latents))
    finally:
        pipe.close()


def test_w4g32_and_pal4_on_digits(digits_model_dir, tmp_path):
    for scheme, floor in (("w4g32", 20), ("pal4", 20)):
        code, _ = _build_cli(digits_model_dir, tmp_path / scheme, scheme)
        assert code == 0
        result = _check_manifest(Artifact.open(tmp_path / scheme), scheme)
        info = Artifact.open(tmp_path / scheme).components["transformer"].info["quant"]
        assert info["bits_per_weight_quantized"] < 5, info
        assert result["final_output_psnr_db"] >= floor, (scheme, result)


def test_w8_digits_final_output(digits_model_dir, tmp_path):
    code, _ = _build_cli(digits_model_dir, tmp_path / "w8", "w8")
    assert code == 0
    assert _check_manifest(Artifact.open(tmp_path / "w8"), "w8")["final_output_psnr_db"] >= 35


@pytest.mark.parametrize("model", ["digits", "tiny_sd"])
def test_mixed_meets_its_target_under_4_5_bits(model, digits_model_dir, tiny_sd_dir, tmp_path):
    model_dir = digits_model_dir if model == "digits" else tiny_sd_dir
    code, summary = _build_cli(model_dir, tmp_path / "m30", "mixed:30")
    art = Artifact.open(tmp_path / "m30")
    result = _check_manifest(art, "mixed:30")
    assert code == 0 and result["final_output_psnr_db"] >= 30, result
    stored = chosen = 0
    for comp in art.components.values():
        info = comp.info["quant"]
        assert info["calibration_samples"] >= 2 and info["end_output_psnr_db"] >= info["end_target_db"]
        search = {r["weight"]: r for r in info["search"]}
        for layer in info["layers"]:
            if layer["scheme"] != "fp32":
                assert search[layer["weight"]]["scheme"] == layer["scheme"]
                assert set(search[layer["weight"]]["sensitivity_db"]) == set(MIXED_LADDER)
                stored += layer["bytes"] * 8
                chosen += int(np.prod(layer["shape"]))
        assert len({lay["scheme"] for lay in info["layers"]}) >= 2   # a mix, not one width everywhere
    assert stored / chosen < 4.5, stored / chosen


def test_unknown_scheme_leaves_nothing(tiny_sd_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown quantization scheme"):
        edgegen.build(tiny_sd_dir, tmp_path / "x", target="cpu", quant="int3")
    assert not (tmp_path / "x").exists()
