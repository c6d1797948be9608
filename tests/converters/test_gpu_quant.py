"""Quantized GPU plans: packed weights stored as 32-bit words and decoded inside the GEMM, direct
convolution and Winograd GEMM kernels that read them, on OpenCL (PoCL here) and WebGPU (lavapipe
here); whole pipelines built with --quant for adreno and webgpu, validated against torch."""

import json

import numpy as np
import pytest

from edgegen.core.metrics import psnr
from edgegen.core.quant import dequantize_weight, parse, quantize_weight

pytestmark = [pytest.mark.tvm, pytest.mark.torch]

LAYERS = ("conv", "pw", "fc1", "fc2")      # the net's quantized layers (first and last stay float32)


def _net():
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first = torch.nn.Conv2d(4, 32, 3, padding=1)
            self.conv = torch.nn.Conv2d(32, 32, 3, padding=1)      # Winograd
            self.pw = torch.nn.Conv2d(32, 32, 1)                   # direct
            self.fc1 = torch.nn.Linear(32, 64)
            self.fc2 = torch.nn.Linear(64, 32)
            self.last = torch.nn.Linear(32, 8)

        def forward(self, x):
            h = self.pw(self.conv(torch.relu(self.first(x)))).flatten(2).transpose(1, 2)
            return self.last(self.fc2(torch.nn.functional.silu(self.fc1(h))))

    torch.manual_seed(0)
    return Net().eval(), torch.randn(1, 4, 8, 8)


def _build_and_run(tmp_path, scheme, target, precision="fp32", net=_net):
    import torch

    from edgegen.converters import gpu, lower, quantize
    from edgegen.core.targets import get_target

    model, x = net()
    lowered = lower.to_relax(torch.export.export(model, (x,)), 1, "net")
    choices = {}
    if scheme is not None:
        _, choices, _ = quantize.choose(lowered, parse(scheme), {"kind": "llvm"})
        choices.update({lay.weight: parse(scheme) for lay in quantize.embedding_layers(lowered) if lay.keep is None})
    tgt = get_target(target)
    built = gpu.lower_to_plan(lowered, ["x"], ["out"], tgt.tvm_target, gpu.limits_of(tgt.profile), tgt.backend,
                              quant=choices, precision=precision, fp16_arithmetic=tgt.profile.fp16_arithmetic)
    files = gpu.write_files(built, tmp_path, "k", tgt.backend)
    session = gpu.open_session(built, tmp_path, files, "k", tgt.backend, {"x": x.numpy()})
    try:
        got = session.run(x=x.numpy())["out"]
    finally:
        session.close()
    return model, x, choices, built, got


def _rounded(model, x, scheme, layers):
    """torch's output with `layers`' weights quantized and dequantized by numpy."""
    import torch

    for name in layers:
        layer = getattr(model, name)
        layer.weight.data = torch.from_numpy(dequantize_weight(quantize_weight(layer.weight.detach().numpy(),
                                                                               parse(scheme))))
    with torch.no_grad():
        return model(x).numpy()


GPU_TARGETS = [pytest.param("adreno", marks=pytest.mark.opencl), pytest.param("webgpu", marks=pytest.mark.webgpu)]


@pytest.mark.parametrize("target", GPU_TARGETS)
@pytest.mark.parametrize("scheme,floor_db", [("fp16", 80.0), ("w8", 45.0), ("w4g32", 25.0), ("pal4", 25.0)])
def test_packed_weights_are_decoded_inside_their_kernels(tmp_path, target, scheme, floor_db):
    import torch

    model, x, choices, built, got = _build_and_run(tmp_path, scheme, target)
    assert sorted(choices) == sorted(f"p_{n}_weight" for n in LAYERS)
    tensors = built.plan["tensors"]
    for weight in choices:
        assert weight not in tensors                               # no float32 copy anywhere
        stored = [t for n, t in tensors.items() if n.startswith(weight + ".")]
        assert stored and all(t["storage"] == "weight" and t["dtype"] == "uint32" for t in stored)
    assert not [n for n in tensors if ".scratch" in n]         # no kernel writes a decoded weight to memory
    decoding = [launch["program"] for launch in built.plan["launches"] if "decode" in launch["program"]]
    assert len(decoding) == len(LAYERS) and all("matmul" in p or "conv2d" in p for p in decoding), decoding
    [conv] = [c for c in built.convolutions if c["weight"] == "p_conv_weight"]
    assert conv["kernel"] == "direct" and f"packed as {scheme}" in conv["reason"]
    with torch.no_grad():
        want = model(x).numpy()
    assert psnr(want, got) >= floor_db
    # the kernels compute what numpy's dequantized weights give, up to float32 rounding
    assert psnr(_rounded(model, x, scheme, LAYERS), got) >= 90.0


def _embedding_net():
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Embedding(50, 64)
            self.proj = torch.nn.Linear(64, 64)
            self.last = torch.nn.Linear(64, 8)

        def forward(self, ids):
            return self.last(torch.nn.functional.silu(self.proj(self.table(ids))))

    torch.manual_seed(0)
    return Net().eval(), torch.tensor([[3, 49, 0, 17, 3]], dtype=torch.int64)


@pytest.mark.opencl
def test_lookup_table_is_packed_and_decoded_row_by_row_in_the_gather(tmp_path):
    model, ids, choices, built, got = _build_and_run(tmp_path, "w4g32", "opencl", net=_embedding_net)
    assert "p_table_weight" in choices
    assert built.plan["tensors"]["p_table_weight.codes"]["dtype"] == "uint32"
    assert "p_table_weight" not in built.plan["tensors"]
    assert not [n for n in built.plan["tensors"] if ".scratch" in n]
    # one kernel decodes and gathers: no decoded table in the arena
    assert not [t for t in built.plan["tensors"].values() if t["storage"] == "arena" and t["shape"] == [50, 64]]
    assert any("decode" in launch["program"] and "take" in launch["program"] for launch in built.plan["launches"])
    assert psnr(_rounded(model, ids, "w4g32", ("table", "proj")), got) >= 90.0


@pytest.mark.parametrize("target", GPU_TARGETS)
@pytest.mark.parametrize("scheme", [None, "w4g32"])
def test_fp16_halves_the_arena_and_keeps_the_answer(tmp_path, target, scheme):
    _, _, _, full, want = _build_and_run(tmp_path / "fp32", scheme, target)
    model, x, _, half, got = _build_and_run(tmp_path / "fp16", scheme, target, "fp16")
    floats = [t for t in half.plan["tensors"].values() if t["dtype"].startswith("float")]
    assert floats and all(t["dtype"] == "float16" for t in floats)
    assert half.plan["arena_bytes"] <= full.plan["arena_bytes"] / 2 + 256 * len(half.plan["tensors"])
    assert got.dtype == np.float32                               # the component's interface stays float32
    assert psnr(want, got) >= 55.0
    assert half.plan["arithmetic"] == "fp16"      # adreno and webgpu compute in float16 (PoCL: the fallback)
    if target == "adreno":   # the fallback's storage-only kernels compile without cl_khr_fp16: no #error
        assert "vload_half" in half.fallback_source and "cl_khr_fp16 : enable\n#endif" in half.fallback_source


def test_w8a8_is_refused_on_gpu_targets_before_anything_is_built(tmp_path):
    import edgegen

    with pytest.raises(ValueError, match="int8-activation"):
        edgegen.build(tmp_path / "no-model", tmp_path / "out", target="adreno", quant="w8a8")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.opencl
def test_tiny_sd_w8_on_adreno_holds_the_gate_and_shrinks_the_weights(tiny_sd_dir, tmp_path):
    import edgegen
    from edgegen.validation import validate

    report = edgegen.build(tiny_sd_dir, tmp_path / "w8", target="adreno", quant="w8")
    manifest = json.loads((tmp_path / "w8" / "manifest.json").read_text())
    unet = manifest["components"]["unet"]["info"]
    assert unet["precision"]["weights"] == "w8" and unet["precision"]["activations"] == "fp16"
    # adreno computes in float16; PoCL, without cl_khr_fp16, ran the plan's float32-arithmetic kernels
    assert unet["precision"]["arithmetic"] == "fp16" and unet["precision"]["fallback"]["file"] in \
        manifest["components"]["unet"]["files"]
    assert unet["quant"]["applied"] == "w8"
    assert unet["bits_per_weight"] < 16 and unet["weight_bytes"] < 4 * unet["num_weights"] / 2
    assert all(c["psnr_db"] >= 30 for c in report.components.values()), report.components
    result = validate(tmp_path / "w8", tiny_sd_dir, num_inference_steps=10)
    assert result.image_psnr_db >= 30.0, result.image_psnr_db
