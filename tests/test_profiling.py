"""profile (per-category kernel time), estimate (roofline from the build's kernel table),
kernel traces for NaN/Inf and float16 overflow, and the validation report."""

import json

import numpy as np
import pytest

from edgegen.core import Artifact
from edgegen.core.targets import device_profile, device_profiles
from edgegen.profiling import CATEGORIES, category, estimate, profile

pytestmark = [pytest.mark.tvm, pytest.mark.torch, pytest.mark.slow]


def test_categories():
    assert category("fused_conv2d_add_silu") == "convolution"
    assert category("fused_matmul1_add") == "linear/matmul"
    assert category("matmul3", [(2, 8, 256, 4), (2, 8, 4, 256)]) == "attention"
    assert category("softmax") == "attention"
    assert category("fused_group_norm_tir_sigmoid_multiply") == "normalization"
    assert category("fused_tir_sigmoid_multiply3") == "elementwise"
    assert category("transpose4") == "other"


def test_kernel_table_in_manifest(tiny_artifact):
    unet = Artifact.open(tiny_artifact).component("unet")
    table = unet.info["kernels"]
    assert any("conv2d" in k["kernel"] for k in table)
    conv = next(k for k in table if k["kernel"].startswith("fused_conv2d") and k["flops"] > 0)
    assert conv["calls"] >= 1 and conv["bytes"] > 0
    # the UNet's 3x3 convolutions hold a large share of its FLOPs, Winograd's included (its kernels are
    # named as the convolution's: kernels/cpu_winograd.py), though Winograd does 2.25-4x fewer of them
    assert any("winograd" in k["kernel"] for k in table)
    assert sum(k["flops"] * k["calls"] for k in table if "conv2d" in k["kernel"]) > \
        0.1 * sum(k["flops"] * k["calls"] for k in table)


def test_profile_sums_to_the_run(tiny_artifact):
    result = profile(tiny_artifact, runs=2, steps=10)
    unet = result["components"]["unet"]
    kernel_ms = sum(unet["categories_ms"].values())
    assert 0.5 * unet["instrumented_ms"] < kernel_ms <= unet["instrumented_ms"] * 1.01
    assert unet["categories_ms"]["convolution"] > 0 and unet["categories_ms"]["attention"] > 0
    assert abs(sum(result["per_image"]["share"].values()) - 1) < 1e-3
    assert set(result["per_image"]["ms"]) == set(CATEGORIES)


def test_estimate_is_a_roofline(tiny_artifact):
    art = Artifact.open(tiny_artifact)
    tables = {n: c.info["kernels"] for n, c in art.components.items()}
    assert {"adreno-740", "mali-g715", "a17-pro"} <= set(device_profiles())
    for name, dev in device_profiles().items():
        assert dev["source"].startswith("http") or "http" in dev["source"], name
    dev = device_profile("adreno-740")
    fp16 = estimate(tables, art.pipeline, dev, steps=20, precision="fp16")
    fp32 = estimate(tables, art.pipeline, dev, steps=20, precision="fp32")
    unet = fp16["components"]["unet"]
    assert unet["seconds"] >= max(unet["compute_bound_s"], unet["memory_bound_s"]) * 0.999
    assert fp16["image_s"] < fp32["image_s"]
    per_image = 20 * unet["seconds"] + fp16["components"]["text_encoder"]["seconds"] \
        + fp16["components"]["vae_decoder"]["seconds"]
    assert fp16["image_s"] == pytest.approx(per_image)
    with pytest.raises(ValueError, match="unknown device profile"):
        device_profile("adreno-999")
    # fp16 in memory with float32 arithmetic (fp16 storage) computes at the fp32 peak
    storage = estimate(tables, art.pipeline, dev, steps=20, precision="fp16", arithmetic={"unet": "fp32"})
    assert storage["components"]["unet"]["arithmetic"] == "fp32"
    assert storage["components"]["unet"]["compute_bound_s"] == pytest.approx(fp32["components"]["unet"]["compute_bound_s"])
    assert storage["components"]["unet"]["memory_bound_s"] == pytest.approx(unet["memory_bound_s"])
    assert storage["components"]["vae_decoder"] == fp16["components"]["vae_decoder"]


def test_a_gather_counts_the_rows_it_reads_not_its_table(tiny_artifact):
    """The token embedding is a gather: one call reads one row per id, not the whole table."""
    text = Artifact.open(tiny_artifact).component("text_encoder").info["kernels"]
    take = next(k for k in text if k["kernel"].startswith("take"))
    (rows, width), (ids,) = take["arg_shapes"]
    assert rows > ids
    itemsize = 4
    out_and_ids = ids * width * itemsize + take["packed_bytes"]
    assert take["bytes"] == ids * width * itemsize + out_and_ids


def test_trace_names_the_first_kernel_with_nan(tiny_artifact):
    from edgegen.bench import example_inputs
    from edgegen.runtimes import load_component

    art = Artifact.open(tiny_artifact)
    session = load_component(art, "unet")
    feed = example_inputs(art.component("unet"))
    clean = session.trace(**feed)
    assert clean["first_nonfinite"] is None and clean["kernels_checked"] > 50
    feed["encoder_hidden_states"][0, 3, 5] = np.nan      # only the cross-attention sees it
    bad = session.trace(**feed)
    first = bad["first_nonfinite"]
    assert first is not None
    order = [k["kernel"] for k in art.component("unet").info["kernels"]]
    assert order.index(first) > 0                                     # not the first kernel: the text path
    big = session.trace(limit=1.0, **example_inputs(art.component("unet")))
    assert big["first_over_limit"]["max_abs"] > 1.0


def test_validate_report(tiny_artifact, tiny_sd_dir, tmp_path):
    import edgegen
    from edgegen.validation import write_report

    report = edgegen.validate(tiny_artifact, tiny_sd_dir, num_inference_steps=3, trace=True)
    assert set(report.kernel_traces) == {"text_encoder", "unet", "vae_decoder"}
    assert all(t["first_nonfinite"] is None for t in report.kernel_traces.values())
    md = write_report(report, tmp_path / "rep").read_text()
    assert "**PASS**" in md and "| unet |" in md and "steps.png" in md and "images.png" in md
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["passed"] is True
    from PIL import Image

    assert Image.open(tmp_path / "rep" / "images.png").size == (64, 32)   # reference | artifact


def test_bisect_tvm_kernels_against_the_reference_lowering(tiny_artifact, tiny_sd_dir):
    """Each fused kernel of the artifact against TVM's plain lowering of the same graph: all far
    above the gate; with a gate above float32 rounding the first kernel under it is reported."""
    from edgegen.bench import example_inputs
    from edgegen.bisect import bisect

    inputs = example_inputs(Artifact.open(tiny_artifact).component("unet"))
    result = bisect(tiny_artifact, tiny_sd_dir, "unet", inputs, threshold_db=40)
    assert result["supported"] and result["first_divergent"] is None
    assert result["layers_compared"] > 0.9 * result["kernel_calls"] > 100
    worst = result["worst"][0]["psnr_db"]
    strict = bisect(tiny_artifact, tiny_sd_dir, "unet", inputs, threshold_db=worst + 0.5)
    assert strict["first_divergent"]["psnr_db"] < worst + 0.5
    assert strict["first_divergent"]["call"] <= result["worst"][0]["call"]


@pytest.mark.onnx
@pytest.mark.optimum
def test_bisect_says_why_not(tiny_sd_dir, tmp_path):
    import edgegen
    from edgegen.bisect import bisect

    report = edgegen.build(tiny_sd_dir, tmp_path / "onnx", target="onnx")
    result = bisect(report.artifact, tiny_sd_dir, "text_encoder", {})
    assert not result["supported"] and "module-scoped" in result["reason"]


def test_estimate_reads_a_gpu_artifact_at_its_own_precision(tiny_sd_adreno):
    """adreno builds fp16 with fp16 arithmetic: the CLI counts it so unless --precision asks otherwise."""
    from conftest import edgegen_cli

    own = json.loads(edgegen_cli("estimate", tiny_sd_adreno, "--device-profile", "adreno-740", "--json").stdout)
    assert own["precision"] == "fp16"
    assert {c["arithmetic"] for c in own["components"].values()} == {"fp16"}
    asked = json.loads(edgegen_cli("estimate", tiny_sd_adreno, "--device-profile", "adreno-740", "--json",
                                   "--precision", "fp32").stdout)
    assert asked["precision"] == "fp32" and asked["image_s"] > own["image_s"]
