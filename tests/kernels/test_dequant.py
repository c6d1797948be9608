"""Dequantizing kernels: each decode kernel equals the numpy dequantizer bit for bit, and a
quantized model compiles to GEMM/conv kernels that read the packed weights themselves."""

import numpy as np
import pytest

from edgegen.core.quant import dequantize_weight, parse, quantize_weight

pytestmark = pytest.mark.tvm

SCHEMES = ("fp16", "w8", "w4g32", "w4g128", "pal6", "pal4", "ternary")


@pytest.mark.parametrize("name", SCHEMES)
@pytest.mark.parametrize("shape", [(24, 20, 3, 3), (40, 48)])   # conv width 180: a partial last group
@pytest.mark.parametrize("words", [False, True], ids=["arrays", "words"])
def test_decode_kernel_equals_numpy_dequantizer(name, shape, words):
    """`words`: the 32-bit form GPU kernels read, fp16 scales and int8 codes unpacked with integer
    operations."""
    import tvm

    from edgegen.kernels.dequant import as_words, decode_func

    w = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    w.flat[:3] = [1e-6, -3e-7, 0.0]      # fp16 subnormals and zero in the scales and palettes
    packed = quantize_weight(w, parse(name))
    func = decode_func(parse(name), shape, packed.arrays, words)
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target="llvm")
    out = tvm.runtime.tensor(np.zeros(shape, np.float32))
    lib["main"](*(tvm.runtime.tensor(as_words(a) if words else a) for a in packed.arrays.values()), out)
    np.testing.assert_array_equal(out.numpy(), dequantize_weight(packed))


def test_words_hold_the_packed_bytes_little_endian():
    from edgegen.kernels.dequant import as_words

    data = np.arange(7, dtype=np.uint8)
    assert as_words(data).dtype == np.uint32
    assert as_words(data).tolist() == [0x03020100, 0x00060504]
    assert as_words(np.array([1.0, -2.0], np.float16)).tolist() == [0xC0003C00]


def _model():
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.first = torch.nn.Conv2d(4, 32, 3, padding=1)
            self.conv = torch.nn.Conv2d(32, 32, 3, padding=1)
            self.fc1 = torch.nn.Linear(32, 64)
            self.fc2 = torch.nn.Linear(64, 32)
            self.last = torch.nn.Linear(32, 8)

        def forward(self, x):
            h = self.conv(torch.relu(self.first(x))).flatten(2).transpose(1, 2)   # [1, 64, 32], not contiguous
            return self.last(self.fc2(torch.nn.functional.silu(self.fc1(h))))

    torch.manual_seed(0)
    return Net().eval()


@pytest.mark.parametrize("name", ["w4g32", "pal6", "w8"])
def test_packed_model_runs_decode_inside_gemm_and_conv(name, tmp_path):
    import torch

    from edgegen.converters import lower, quantize

    model, x = _model(), torch.randn(1, 4, 8, 8)
    lowered = lower.to_relax(torch.export.export(model, (x,)), 1, "net")
    layers = quantize.weight_layers(lowered)
    assert [(lay.op, lay.keep is None) for lay in layers] == [
        ("conv2d", False), ("conv2d", True), ("linear", True), ("linear", True), ("linear", False)]
    assert "first layer" in layers[0].keep and "last layer" in layers[-1].keep
    packed, info = quantize.apply(lowered, parse(name), {"kind": "llvm"})
    quantized = {row["weight"] for row in info["layers"] if row["scheme"] == name}
    assert len(quantized) == 3
    # the artifact holds no float32 copy of a quantized weight
    assert not any(s.name in quantized for s in packed.weight_specs)
    assert all(packed.weights[s.name].dtype != np.float32 for s in packed.weight_specs
               if s.name.rsplit(".", 1)[0] in quantized)
    kernels: list = []
    executable = lower.compile_module(packed.module, lower.resolve_target({"kind": "llvm", "mcpu": "host"}),
                                      kernels)
    decoding = [k["kernel"] for k in kernels if "decode" in k["kernel"]]
    assert len(decoding) == 3 and all("matmul" in k or "conv2d" in k for k in decoding), decoding
    executable.export_library(str(tmp_path / "net.so"))
    got = lower.run_library(tmp_path / "net.so", [x.numpy()], [packed.weights[s.name] for s in packed.weight_specs])

    # torch with the same weights quantized and dequantized by numpy
    for mod_name in ("conv", "fc1", "fc2"):
        module = getattr(model, mod_name)
        module.weight.data = torch.from_numpy(dequantize_weight(quantize_weight(module.weight.detach().numpy(),
                                                                                parse(name))))
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got[0], want, atol=2e-5 * np.abs(want).max())


def _residual_around_bias_free(linear: bool):
    """h = op(a(x)) with op bias-free, then f(h) + h: the add's other operand is read from the fused
    op's own output (TAESD's Upsample -> conv(bias=False) -> Block; a bias-free projection in a
    transformer)."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            layer = (lambda i, o, bias=True: torch.nn.Linear(i, o, bias=bias)) if linear else \
                (lambda i, o, bias=True: torch.nn.Conv2d(i, o, 3, padding=1, bias=bias))
            self.a, self.op, self.f, self.last = layer(4, 32), layer(32, 32, False), layer(32, 32), layer(32, 3)

        def forward(self, x):
            h = self.a(x) if linear else torch.nn.functional.interpolate(self.a(x), scale_factor=2, mode="nearest")
            h = self.op(h)
            return self.last(torch.relu(self.f(h)) + h)

    torch.manual_seed(0)
    return Net().eval()


@pytest.mark.parametrize("linear", [False, True], ids=["conv", "linear"])
def test_residual_around_bias_free_layer_compiles_and_matches(linear, tmp_path):
    """The add is fused into the decoding kernel only when its other operand does not depend on that
    kernel's output (else Relax's VM codegen failed: "Var lvN is not defined")."""
    import torch

    from edgegen.converters import lower, quantize

    model = _residual_around_bias_free(linear)
    x = torch.randn(1, 16, 4) if linear else torch.randn(1, 4, 6, 6)
    lowered = lower.to_relax(torch.export.export(model, (x,)), 1, "net")
    packed, info = quantize.apply(lowered, parse("w4g32"), {"kind": "llvm"})
    assert {row["weight"] for row in info["layers"] if row["scheme"] == "w4g32"} == {"p_op_weight", "p_f_weight"}
    kernels: list = []
    executable = lower.compile_module(packed.module, {"kind": "llvm"}, kernels)
    decoding = [k["kernel"] for k in kernels if "decode" in k["kernel"]]
    assert len(decoding) == 2 and any(k.endswith("add") for k in decoding), decoding   # f's bias add still fused
    executable.export_library(str(tmp_path / "net.so"))
    got = lower.run_library(tmp_path / "net.so", [x.numpy()], [packed.weights[s.name] for s in packed.weight_specs])
    for module in (model.op, model.f):
        module.weight.data = torch.from_numpy(dequantize_weight(quantize_weight(module.weight.detach().numpy(),
                                                                                parse("w4g32"))))
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got[0], want, atol=2e-5 * np.abs(want).max())


@pytest.mark.parametrize("name", ["w8", "w4g32", "pal4", "ternary"])
def test_packed_lookup_table_is_decoded_row_by_row_in_the_gather(name, tmp_path):
    """A token table takes the scheme's packed form; on the CPU its decode is inlined into the gather,
    so the kernel reads the packed rows it looks up and holds no decoded table."""
    import torch
    import tvm

    from edgegen.converters import lower, quantize
    from edgegen.kernels.dequant import take_rows

    torch.manual_seed(0)
    table, proj, last = torch.nn.Embedding(300, 64), torch.nn.Linear(64, 64), torch.nn.Linear(64, 8)
    model = torch.nn.Sequential(table, proj, torch.nn.SiLU(), last).eval()
    ids = torch.tensor([[3, 299, 0, 17, 3]], dtype=torch.int64)
    lowered = lower.to_relax(torch.export.export(model, (ids,)), 1, "net")
    packed, info = quantize.apply(lowered, parse(name), {"kind": "llvm"})
    rows = {row["weight"]: row for row in info["layers"]}
    assert rows["p_0_weight"]["op"] == "embedding" and rows["p_0_weight"]["scheme"] == name
    assert "p_0_weight" not in {s.name for s in packed.weight_specs}     # no float32 copy of the table
    assert "lookup-table" in info["kept_float32"]

    kernels: list = []
    target = lower.resolve_target({"kind": "llvm", "mcpu": "host"})
    executable = lower.compile_module(packed.module, target, kernels)
    gathers = [k["kernel"] for k in kernels if "take" in k["kernel"]]
    assert gathers and all("decode" in k for k in gathers), gathers
    gather = next(k for k in kernels if k["kernel"] == gathers[0])
    assert gather["bytes"] < gather["packed_bytes"] / 2      # the profile counts the rows read, not the table
    scheduled = lower.cpu_pipeline(tvm.target.Target(target))(packed.module)
    script = next(f.script() for gv, f in scheduled.functions.items() if gv.name_hint == gathers[0])
    assert "alloc_buffer" not in script and 'T.int64(300), T.int64(64)), "float32"' not in script, script

    executable.export_library(str(tmp_path / "net.so"))
    got = lower.run_library(tmp_path / "net.so", [ids.numpy()], [packed.weights[s.name] for s in packed.weight_specs])
    stored = quantize_weight(table.weight.detach().numpy(), parse(name))
    for module, weight in ((proj, "p_1_weight"), (last, "p_3_weight")):
        if rows[weight]["scheme"] == name:
            module.weight.data = torch.from_numpy(dequantize_weight(quantize_weight(module.weight.detach().numpy(),
                                                                                    parse(name))))
    with torch.no_grad():
        want = torch.nn.Sequential(proj, torch.nn.SiLU(), last)(torch.from_numpy(take_rows(stored, ids.numpy())))
    np.testing.assert_allclose(got[0], want.numpy(), atol=2e-5 * np.abs(want.numpy()).max())
