"""The CPU flash-attention kernel and the graph rewrites around it (the attention scale folded onto
the scores, transposes that cancel merged), each against its numpy reference, and the CPU
pipeline's choice per attention call."""

import numpy as np
import pytest

pytestmark = pytest.mark.tvm

HOST = {"kind": "llvm", "mcpu": "host"}


def _run_prim_func(func, arrays, out_shape):
    import tvm

    from edgegen.converters import lower

    lib = tvm.compile(tvm.IRModule({"main": func}), target=tvm.target.Target(lower.resolve_target(HOST)))
    out = tvm.runtime.tensor(np.zeros(out_shape, np.float32))
    lib["main"](*[tvm.runtime.tensor(a) for a in arrays], out)
    return out.numpy()


def test_fast_exp_reference_matches_numpy():
    from edgegen.kernels.cpu_attention import fast_exp

    x = np.linspace(-80, 0, 10001, dtype=np.float32)
    np.testing.assert_allclose(fast_exp(x), np.exp(x.astype(np.float64)), rtol=3e-7, atol=0)
    assert fast_exp(np.float32([-1e30]))[0] < 1e-37       # float32's lowest (masked scores): ~0, not NaN


@pytest.mark.parametrize("bh,s,length,d,dv", [
    (2, 64, 256, 40, 40),     # full key tiles, several of them
    (2, 36, 77, 40, 40),      # one tile past the keys (77 of 80), a query block of 4 rows
    (3, 16, 200, 24, 80),     # a last tile past the keys; dv in two chunks
    (1, 8, 13, 160, 160),     # fewer keys than a vector tile; dv in four chunks
])
def test_flash_kernel_matches_reference(bh, s, length, d, dv):
    from edgegen.kernels import cpu_attention as ca
    import edgegen.converters.lower as lower

    lower.import_tvm_compiler()
    rng = np.random.default_rng(0)
    q = rng.standard_normal((bh, s, d)).astype(np.float32) * 2
    kt = rng.standard_normal((bh, d, length)).astype(np.float32)
    v = rng.standard_normal((bh, length, dv)).astype(np.float32)
    scale = d ** -0.5
    out = _run_prim_func(ca.flash_func(bh, s, length, d, dv, scale), (q, kt, v), (bh, s, dv))
    np.testing.assert_allclose(out, ca.attention(q, kt, v, scale), atol=2e-6, rtol=1e-5)


def test_flash_kernel_refuses_shapes_it_cannot_take():
    from edgegen.kernels import cpu_attention as ca

    assert "not a multiple of 4" in ca.unsupported(6, 64, 40, 40)
    assert "value dim 36" in ca.unsupported(8, 64, 40, 36)
    with pytest.raises(ValueError, match="use the GEMM chain"):
        ca.flash_func(1, 6, 64, 40, 40)


def test_merged_axes_and_pass():
    import tvm
    from tvm import relax

    from edgegen.kernels.permute_merge import make_pass, merged_axes

    x = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    for p1, p2 in (([2, 0, 1, 3], [1, 2, 0, 3]), ([0, 2, 1, 3], [3, 1, 0, 2])):
        assert np.array_equal(x.transpose(p1).transpose(p2), x.transpose(merged_axes(p1, p2)))

    bb = relax.BlockBuilder()
    a = relax.Var("a", relax.TensorType((2, 3, 4, 5), "float32"))
    with bb.function("main", [a]):
        with bb.dataflow():
            same = bb.emit(relax.op.permute_dims(relax.op.permute_dims(a, [2, 0, 1, 3]), [1, 2, 0, 3]))
            other = bb.emit(relax.op.permute_dims(relax.op.permute_dims(a, [0, 2, 1, 3]), [3, 1, 0, 2]))
            out = bb.emit_output(relax.Tuple([same, other]))
        bb.emit_func_output(out)
    mod = make_pass()(bb.get())
    permutes = []
    relax.analysis.post_order_visit(mod["main"].body, lambda e: permutes.append([int(v) for v in e.attrs.axes])
                                    if isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.permute_dims"
                                    else None)
    assert permutes == [merged_axes([0, 2, 1, 3], [3, 1, 0, 2])]      # the identity pair is gone
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x.astype(np.float32)))
    assert np.array_equal(got[0].numpy(), x) and np.array_equal(got[1].numpy(), x.transpose(0, 2, 1, 3).transpose(3, 1, 0, 2))


def _sdpa_module(s, length, d, heads=2):
    """torch's scaled_dot_product_attention, exported and imported as edgegen's builds do."""
    import torch

    from edgegen.converters import lower

    class Attention(torch.nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    rng = np.random.default_rng(3)
    xs = [rng.standard_normal(shape).astype(np.float32) for shape in
          ((2, heads, s, d), (2, heads, length, d), (2, heads, length, d))]
    with torch.no_grad():
        expected = Attention()(*map(torch.from_numpy, xs)).numpy()
    exported = torch.export.export(Attention(), tuple(map(torch.from_numpy, xs)))
    return lower.to_relax(exported, 3, "attention").module, xs, expected


@pytest.mark.parametrize("length,flash", [(96, True), (77, True), (96, False)])
def test_pipeline_chooses_and_matches_torch(monkeypatch, length, flash):
    """Through edgegen's CPU pipeline: the scale multiplies on q and k are gone (folded onto the
    scores), the output's two cancelling transposes too, and the call runs the flash kernel or the
    GEMM chain as the size rule says, with the reason recorded."""
    import tvm
    from tvm import relax

    from edgegen.converters import lower
    from edgegen.kernels import cpu_attention as ca

    monkeypatch.setattr(ca, "MIN_SCORE_BYTES", 0 if flash else 1 << 40)
    module, xs, expected = _sdpa_module(32, length, 40)
    sites, kernels = [], []
    executable = lower.compile_module(module, lower.resolve_target(HOST), kernels, attention=sites)
    assert [s["kernel"] for s in sites] == ["flash" if flash else "gemm-softmax-gemm"] and sites[0]["reason"]
    names = [k["kernel"] for k in kernels]
    assert not any("multiply" in n and "matmul" not in n for n in names), names     # no pass of its own for the scale
    assert sum("transpose" in n for n in names) == 1, names                         # kᵀ only
    if flash:
        [entry] = [k for k in kernels if k["kernel"] == sites[0]["function"]]
        assert entry["flops"] == ca.flops(sites[0])
    out = relax.VirtualMachine(executable, tvm.cpu())["main"](*map(tvm.runtime.tensor, xs)).numpy()
    np.testing.assert_allclose(out, expected, atol=2e-5, rtol=1e-4)


def test_scale_fold_reference():
    from edgegen.kernels.attention_scale import scaled_scores

    rng = np.random.default_rng(4)
    q, kt = rng.standard_normal((3, 5, 8)), rng.standard_normal((3, 8, 7))
    np.testing.assert_allclose(scaled_scores(q, kt, 0.5, 0.25), (q * 0.5) @ (kt * 0.25), rtol=1e-12)
