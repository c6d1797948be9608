"""edgegen.build_module: any torch module through capture -> quantize -> compile -> parity, into a
one-component artifact that edgegen.runtimes.load_module runs (keyword arrays in, named outputs out);
the CLI's `edgegen build-module FILE.py:FACTORY`; and the errors for what it cannot build."""

import json

import numpy as np
import pytest

import edgegen
from edgegen.core import Artifact
from edgegen.core.errors import InputError, ModelError, ParityError

pytestmark = [pytest.mark.tvm, pytest.mark.torch]


def _decoder():
    """TAESD's decoder pattern (Upsample -> bias-free conv -> residual Block) with two inputs and a dict of
    two outputs."""
    import torch

    from edgegen.testing.zoo import upsample_bias_free

    body, _ = upsample_bias_free()

    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = body

        def forward(self, latents, scale):
            image = self.body(latents) * scale
            return {"image": image, "mean": image.mean(dim=(2, 3))}

    rng = np.random.default_rng(0)
    return Decoder().eval(), {"latents": rng.standard_normal((1, 4, 4, 4)).astype(np.float32),
                              "scale": np.full((1,), 0.5, np.float32)}


def _torch_outputs(module, **inputs):
    import torch

    with torch.no_grad():
        out = module(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in out.items()}


@pytest.mark.parametrize("quant", [None, "w4g32"])
def test_module_builds_loads_and_matches_torch(quant, tmp_path):
    module, inputs = _decoder()
    report = edgegen.build_module(module, inputs, tmp_path / "art", quant=quant)
    info = report.components["module"]
    assert info["psnr_db"] >= (40 if quant is None else 20), info
    art = Artifact.open(tmp_path / "art")
    assert art.pipeline == {"kind": "module", "component": "module", "inputs": ["latents", "scale"],
                            "outputs": ["image", "mean"]}
    assert art.manifest["source"]["class"].endswith("Decoder") and len(art.manifest["source"]["sha256"]) == 64
    if quant:
        record = art.components["module"].info["quant"]
        layers = record["layers"]
        # both bias-free convs after an upsample are packed
        assert sum(lay["scheme"] == quant and lay["shape"][0] == lay["shape"][1] == 32 for lay in layers) >= 2
        # each packed layer chose its values from its input statistics on the example input (no calibration given)
        packed = [lay for lay in layers if lay["scheme"] == quant]
        assert record["calibrated_layers"] == len(packed)
        assert {lay["method"].removesuffix("+awq") for lay in packed} <= {"rtn", "search", "gptq"}, packed
    other = {"latents": np.random.default_rng(1).standard_normal((1, 4, 4, 4)).astype(np.float32),
             "scale": np.full((1,), 2.0, np.float32)}
    with edgegen.runtimes.load_module(tmp_path / "art") as run:
        got = run(**other)
    want = _torch_outputs(module, **other)
    assert list(got) == ["image", "mean"]
    tol = 1e-4 if quant is None else 0.2
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=tol * np.abs(want[name]).max())


def test_cli_builds_a_factory(tmp_path):
    from edgegen.cli import main

    (tmp_path / "mlp.py").write_text(
        "import numpy as np, torch\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    m = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32),\n"
        "                            torch.nn.ReLU(), torch.nn.Linear(32, 4))\n"
        "    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)\n"
        "    return m, {'input': x}, [{'input': x}, {'input': 2 * x}]\n")
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["build-module", f"{tmp_path / 'mlp.py'}:make", "--out", str(tmp_path / "art"),
                     "--quant", "mixed:30", "--json", "--quiet"])
    assert code == 0
    summary = json.loads(stdout.getvalue())
    quant = summary["components"]["module"]["quant"]
    assert quant["calibration_samples"] == 2 and quant["calibration_psnr_db"] >= 30, quant
    run = edgegen.runtimes.load_module(tmp_path / "art")
    try:
        assert run(input=np.zeros((2, 8), np.float32))["output"].shape == (2, 4)
    finally:
        run.close()


def test_bad_modules_and_inputs_say_what_to_do(tmp_path):
    import torch

    module, inputs = _decoder()
    with pytest.raises(InputError, match="not parameters of Decoder.forward"):
        edgegen.build_module(module, {"z": inputs["latents"]}, tmp_path / "a")
    with pytest.raises(InputError, match="calibration sample 0 input 'latents' has shape"):
        edgegen.build_module(module, inputs, tmp_path / "a", quant="mixed:30",
                             calibration=[{"latents": np.zeros((1, 4, 8, 8), np.float32), "scale": inputs["scale"]}])

    class Text(torch.nn.Module):
        def forward(self, x):
            return "not a tensor"

    with pytest.raises(ModelError, match="must return a tensor"):
        edgegen.build_module(Text(), {"x": np.zeros(2, np.float32)}, tmp_path / "a")
    with pytest.raises(ValueError, match="not supported for arbitrary modules"):
        edgegen.build_module(module, inputs, tmp_path / "a", target="coreml")
    with pytest.raises(InputError, match="FILE.py:FACTORY"):
        from edgegen.converters.module import load_factory

        load_factory("no_colon_here")
    with pytest.raises(ParityError):     # the gates hold here as for pipelines: nothing written on a miss
        edgegen.build_module(module, inputs, tmp_path / "a", parity_db=400)
    assert not (tmp_path / "a").exists()


def test_load_module_refuses_a_pipeline_artifact(digits_artifact):
    from edgegen.core.errors import ArtifactError

    with pytest.raises(ArtifactError, match="not a module artifact"):
        edgegen.runtimes.load_module(digits_artifact)


@pytest.mark.opencl
def test_two_outputs_run_on_a_gpu_plan(tmp_path):
    """A module with two outputs (SDXL's second text encoder: hidden states and a projection) ends its
    graph in a tuple bound to a variable; the GPU plan names both of its tensors as outputs."""
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(8, 8)
            self.proj = torch.nn.Linear(8, 4, bias=False)

        def forward(self, x):
            h = torch.nn.functional.gelu(self.body(x))
            return {"hidden": h, "pooled": self.proj(h[:, 0])}

    torch.manual_seed(0)
    module = Encoder().eval()
    inputs = {"x": np.random.default_rng(0).standard_normal((1, 3, 8)).astype(np.float32)}
    edgegen.build_module(module, inputs, tmp_path / "art", target="adreno")
    with edgegen.runtimes.load_module(tmp_path / "art") as run:
        got = run(**inputs)
    want = _torch_outputs(module, **inputs)
    assert list(got) == ["hidden", "pooled"]
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=2e-3 * np.abs(want[name]).max())
