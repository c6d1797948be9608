"""Building the tiny pipeline for the CPU, and the ways a build refuses."""

import json

import numpy as np
import pytest

import edgegen
from edgegen.core import Artifact, ModelError, ParityError, UnsupportedOpError
from edgegen.converters.build import COMPONENT_PSNR_DB

pytestmark = [pytest.mark.tvm, pytest.mark.torch, pytest.mark.slow]


def test_build_summary_and_manifest(tiny_build):
    art_dir, summary = tiny_build
    assert set(summary["components"]) == {"text_encoder", "unet", "vae_decoder"}
    for info in summary["components"].values():
        assert info["psnr_db"] >= COMPONENT_PSNR_DB
    assert any(s["stage"] == "unet: compile for cpu" for s in summary["stages"])
    assert 100 < summary["peak_rss_mib"] < 6 * 1024    # the build process's peak, in MiB
    art = Artifact.open(art_dir)
    m = art.manifest
    assert m["target"]["name"] == "cpu" and m["target"]["tvm_target"]["kind"] == "llvm"
    assert m["target"]["tvm_target"]["mcpu"] not in ("", "host")  # resolved to the build machine's CPU
    assert len(m["source"]["sha256"]) == 64
    assert m["toolchain"]["apache-tvm"].startswith("0.27")
    unet = art.component("unet")
    assert [s.name for s in unet.inputs] == ["sample", "timestep", "encoder_hidden_states"]
    assert unet.info["parity_psnr_db"] >= COMPONENT_PSNR_DB
    sites = unet.info["attention"]      # each attention call: the kernel chosen (kernels/cpu_attention.py) and why
    assert sites and all(s["kernel"] in ("flash", "gemm-softmax-gemm") and s["reason"] for s in sites)
    assert summary["bytes"] == sum(f["bytes"] for f in m["files"].values()) + (art_dir / "manifest.json").stat().st_size


def test_component_matches_torch(tiny_artifact, tiny_sd_dir):
    """The loaded UNet session against the diffusers UNet on fresh inputs."""
    import torch
    from diffusers import UNet2DConditionModel

    ref = UNet2DConditionModel.from_pretrained(tiny_sd_dir / "unet").eval()
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 4, 16, 16), dtype=np.float32)
    t = np.array([900.0, 900.0], np.float32)
    e = rng.standard_normal((2, 77, 32), dtype=np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x), torch.from_numpy(t), encoder_hidden_states=torch.from_numpy(e)).sample
    session = edgegen.runtimes.load_component(Artifact.open(tiny_artifact), "unet")
    got = session.run(sample=x, timestep=t, encoder_hidden_states=e)["out_sample"]
    assert edgegen.core.psnr(expected.numpy(), got) >= COMPONENT_PSNR_DB


def test_parity_gate_fails_and_leaves_nothing(tiny_sd_dir, tmp_path):
    out = tmp_path / "art"
    with pytest.raises(ParityError, match=r"reproduces torch at \d+\.\d+ dB PSNR, under the 250.0 dB gate") as err:
        edgegen.build(tiny_sd_dir, out, target="cpu", parity_db=250.0)
    assert err.value.measured_db < 250.0
    assert list(tmp_path.iterdir()) == []


def test_missing_component(tiny_sd_dir, tmp_path):
    import shutil

    broken = shutil.copytree(tiny_sd_dir, tmp_path / "broken")
    shutil.rmtree(broken / "vae")
    with pytest.raises(ModelError, match=r"component 'vae' \(AutoencoderKL or AutoencoderTiny\) is missing"):
        edgegen.build(broken, tmp_path / "art")
    index = json.loads((broken / "model_index.json").read_text())
    del index["vae"]
    (broken / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelError, match="names no 'vae' component"):
        edgegen.build(broken, tmp_path / "art")
    (broken / "model_index.json").write_text(json.dumps({**index, "_class_name": "FluxPipeline"}))
    with pytest.raises(ModelError, match="pipeline class 'FluxPipeline' is not supported"):
        edgegen.build(broken, tmp_path / "art")
    with pytest.raises(ModelError, match="no model_index.json"):
        edgegen.build(broken / "unet", tmp_path / "art")
    assert not (tmp_path / "art").exists()


def test_unknown_target(tiny_sd_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown target 'tpu'"):
        edgegen.build(tiny_sd_dir, tmp_path / "art", target="tpu")


def test_unsupported_op_is_named():
    import torch

    from edgegen.converters import capture, lower

    class Bessel(torch.nn.Module):
        def forward(self, x):
            return torch.special.i0(x) + 1

    cap = capture.Captured("Bessel", Bessel(), {"x": np.ones((2, 3), np.float32)}, ["y"])
    with pytest.raises(UnsupportedOpError, match=r"operators \['i0.default'\] cannot be lowered"):
        lower.to_relax(capture.export(cap), 1, "component 'bessel'")
