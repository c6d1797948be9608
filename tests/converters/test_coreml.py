"""--target coreml: the tiny pipeline as ML Program packages in the Resources/ layout of Apple's
Swift StableDiffusion package. Predictions need macOS; here the names, shapes, files, chunking
and compression are checked, and the torch side of every rewrite against the original."""

import json
import sys

import numpy as np
import pytest

import edgegen
from edgegen.core import Artifact, BackendUnavailableError

pytestmark = [pytest.mark.coreml, pytest.mark.torch, pytest.mark.slow]


def _io(package):
    import coremltools as ct

    spec = ct.utils.load_spec(str(package))
    shape = lambda f: list(f.type.multiArrayType.shape)  # noqa: E731
    return ({f.name: shape(f) for f in spec.description.input}, {f.name: shape(f) for f in spec.description.output})


@pytest.fixture(scope="module")
def coreml_artifact(tiny_sd_dir, tmp_path_factory):
    # a chunk limit under the tiny UNet's weights makes the build cut it in two, as it does SD 1.5's at 1000 MB
    return edgegen.build(tiny_sd_dir, tmp_path_factory.mktemp("coreml") / "art", target="coreml",
                         attention="split-einsum", chunk_mb=1.0)


def test_resources_match_the_swift_package(coreml_artifact, tiny_sd_dir):
    res = Artifact.open(coreml_artifact.artifact).root / "Resources"
    assert sorted(p.name for p in res.iterdir()) == [
        "TextEncoder.mlpackage", "UnetChunk1.mlpackage", "UnetChunk2.mlpackage", "VAEDecoder.mlpackage",
        "merges.txt", "vocab.json"]
    vocab = json.loads((tiny_sd_dir / "tokenizer" / "vocab.json").read_text())
    assert json.loads((res / "vocab.json").read_text()) == vocab
    hidden = json.loads((tiny_sd_dir / "text_encoder" / "config.json").read_text())["hidden_size"]

    ins, outs = _io(res / "TextEncoder.mlpackage")
    assert ins == {"input_ids": [1, 77]} and outs == {"last_hidden_state": [1, 77, hidden]}
    ins, outs = _io(res / "VAEDecoder.mlpackage")
    assert ins == {"z": [1, 4, 16, 16]} and outs == {"image": [1, 3, 32, 32]}
    # chunk 1 takes the Swift UNet inputs; chunk 2 takes what chunk 1 returns plus those inputs and
    # ends in the noise prediction, as Unet.swift's manual pipeline feeds them
    unet_inputs = {"sample": [2, 4, 16, 16], "timestep": [2], "encoder_hidden_states": [2, hidden, 1, 77]}
    ins1, outs1 = _io(res / "UnetChunk1.mlpackage")
    ins2, outs2 = _io(res / "UnetChunk2.mlpackage")
    assert set(ins1) <= set(unet_inputs) and all(ins1[n] == unet_inputs[n] for n in ins1)
    assert set(ins2) <= set(unet_inputs) | set(outs1)
    assert outs2 == {"noise_pred": [2, 4, 16, 16]}


def _attention_layers(tiny_sd_dir) -> int:
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import Attention

    unet = UNet2DConditionModel.from_pretrained(tiny_sd_dir / "unet")
    return sum(isinstance(m, Attention) for m in unet.modules())


def test_chunks_halve_the_unet_and_the_manifest_records_them(coreml_artifact, tiny_sd_dir):
    art = Artifact.open(coreml_artifact.artifact)
    unet = art.component("unet")
    sizes = [c["weight_bytes"] for c in unet.info["chunks"]]
    assert sum(sizes) >= 0.95 * unet.info["weight_bytes"] and min(sizes) > 0.25 * sum(sizes)
    assert unet.info["attention"] == "split-einsum" and unet.info["attention_layers_rewritten"] == _attention_layers(tiny_sd_dir)
    assert unet.info["parity_psnr_db"] >= 40          # split-einsum torch module vs the original UNet
    assert art.manifest["target"]["coreml"]["minimum_ios"] == 16


def test_split_einsum_changes_the_graph_not_the_math(tiny_sd_dir, coreml_artifact, tmp_path):
    """One softmax per head in the split layout, one per attention layer in the original."""
    from edgegen.converters.coreml_export import op_counts

    plain = edgegen.build(tiny_sd_dir, tmp_path / "plain", target="coreml", chunk_mb=None)
    split_res = Artifact.open(coreml_artifact.artifact).root / "Resources"
    split = {}
    for chunk in ("UnetChunk1", "UnetChunk2"):
        for op, n in op_counts(split_res / f"{chunk}.mlpackage").items():
            split[op] = split.get(op, 0) + n
    original = op_counts(Artifact.open(plain.artifact).root / "Resources" / "Unet.mlpackage")
    heads = json.loads((tiny_sd_dir / "unet" / "config.json").read_text())["attention_head_dim"]  # = heads in SD
    layers = _attention_layers(tiny_sd_dir)
    assert original["softmax"] == layers and split["softmax"] == layers * heads
    assert "einsum" not in original and split.get("einsum", 0) + split.get("matmul", 0) >= 2 * layers * heads


@pytest.mark.parametrize("scheme,min_ios,ratio", [("w8", 16, 0.56), ("pal4", 16, 0.33), ("pal6", 18, 0.45),
                                                  ("w4g32", 18, 0.4)])
def test_compression_sizes(tiny_sd_dir, tmp_path, coreml_artifact, scheme, min_ios, ratio):
    """UNet weights against the float16 package: int8 about half, 4-bit about a quarter (plus scales/LUTs)."""
    report = edgegen.build(tiny_sd_dir, tmp_path / scheme, target="coreml", quant=scheme, minimum_ios=min_ios,
                           chunk_mb=None)
    unet = Artifact.open(report.artifact).component("unet")
    fp16 = Artifact.open(coreml_artifact.artifact).component("unet").info["weight_bytes"]
    assert unet.info["quant"]["applied"] == scheme
    assert unet.info["weight_bytes"] < ratio * fp16
    assert unet.info["quant"]["bits_per_weight"] < 16 * ratio + 0.5


def test_schemes_without_a_core_ml_form(tiny_sd_dir, tmp_path):
    with pytest.raises(ValueError, match="needs iOS 18"):
        edgegen.build(tiny_sd_dir, tmp_path / "w4", target="coreml", quant="w4g32", minimum_ios=16)
    assert not (tmp_path / "w4").exists()
    report = edgegen.build(tiny_sd_dir, tmp_path / "w8a8", target="coreml", quant="w8a8", chunk_mb=None)
    q = report.components["unet"]["quant"]
    assert q["applied"] == "w8" and "macOS" in q["fallback_reason"]


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the refusal that non-macOS hosts give")
def test_runtime_says_predictions_need_macos(coreml_artifact):
    with pytest.raises(BackendUnavailableError, match="macOS"):
        edgegen.runtimes.load(coreml_artifact.artifact)


def test_swift_adapters_keep_the_component_math(tiny_sd_dir):
    """The Swift-facing wrappers (float ids, (B, C, 1, S) embeddings, renamed I/O) reproduce the
    original components exactly in torch."""
    from edgegen.converters import capture, coreml_export, sd, source

    plan = sd.plan(tiny_sd_dir, source.read_model_index(tiny_sd_dir))
    for name, cap in plan.components.items():
        swift = coreml_export.swift_component(name, cap)
        ref = capture.run_torch(cap)[cap.outputs[0]]
        got = capture.run_torch(swift)[swift.outputs[0]]
        np.testing.assert_array_equal(got, ref[-1:] if name == "text_encoder" else ref)
