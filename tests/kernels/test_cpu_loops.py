"""The generic CPU schedule rule: it schedules conv, matmul, softmax and elementwise
blocks, and the scheduled code matches numpy references."""

import numpy as np
import pytest

pytestmark = pytest.mark.tvm


def _conv2d_nchw(x, w, pad):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((n, o, h + 2 * pad - kh + 1, wd + 2 * pad - kw + 1), np.float64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i:i + out.shape[2], j:j + out.shape[3]]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _module():
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 16, 12, 12), "float32"))
    w = relax.Var("w", relax.TensorType((32, 16, 3, 3), "float32"))
    a = relax.Var("a", relax.TensorType((2, 64, 48), "float32"))
    b = relax.Var("b", relax.TensorType((48, 80), "float32"))
    with bb.function("main", [x, w, a, b]):
        with bb.dataflow():
            conv = bb.emit(relax.op.nn.conv2d(x, w, padding=1))
            act = bb.emit(relax.op.nn.silu(conv))
            mm = bb.emit(relax.op.matmul(a, b))
            sm = bb.emit(relax.op.nn.softmax(mm, axis=-1))
            out = bb.emit_output(relax.Tuple([act, sm]))
        bb.emit_func_output(out)
    return bb.get()


def test_rule_schedules_and_matches_numpy():
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.s_tir import dlight

    from edgegen.converters.lower import compile_module
    from edgegen.kernels.cpu_loops import make_rule

    target = tvm.target.Target({"kind": "llvm"})
    with target:
        legal = tvm.transform.Sequential(cpu.legalize_passes(target))(_module())
        scheduled = dlight.ApplyDefaultSchedule(make_rule())(legal)
    prims = {gv.name_hint: f for gv, f in scheduled.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    assert prims and all(f.attrs and f.attrs.get("tirx.is_scheduled") for f in prims.values()), sorted(prims)
    conv_text = next(f.script() for n, f in prims.items() if "conv2d" in n)
    assert "T.parallel" in conv_text and "T.unroll" in conv_text
    softmax_text = next(f.script() for n, f in prims.items() if "softmax" in n)
    assert softmax_text.count("T.parallel") == 1 and "T.vectorized" in softmax_text   # one pass, row by row

    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(s, dtype=np.float32) for s in [(2, 16, 12, 12), (32, 16, 3, 3), (2, 64, 48), (48, 80)]]
    vm = relax.VirtualMachine(compile_module(_module(), {"kind": "llvm"}), tvm.cpu())
    act, sm = vm["main"](*[tvm.runtime.tensor(v) for v in xs])
    conv = _conv2d_nchw(*xs[:2], pad=1)
    np.testing.assert_allclose(act.numpy(), conv / (1 + np.exp(-conv)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(sm.numpy(), _softmax(xs[2].astype(np.float64) @ xs[3]), rtol=1e-4, atol=1e-6)


def _gemm_module():
    """A linear with bias and GELU (one column block of the weight exceeds GEMM_BLOCK_BYTES, so the
    columns run in blocks) and a batched matmul with a residual add."""
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 8, 320), "float32"))
    w = relax.Var("w", relax.TensorType((320, 512), "float32"))
    bias = relax.Var("bias", relax.TensorType((512,), "float32"))
    a = relax.Var("a", relax.TensorType((3, 12, 40), "float32"))
    b = relax.Var("b", relax.TensorType((3, 40, 32), "float32"))
    r = relax.Var("r", relax.TensorType((3, 12, 32), "float32"))
    with bb.function("main", [x, w, bias, a, b, r]):
        with bb.dataflow():
            lin = bb.emit(relax.op.nn.gelu(relax.op.add(relax.op.matmul(x, w), bias)))
            bmm = bb.emit(relax.op.add(relax.op.matmul(a, b), r))
            out = bb.emit_output(relax.Tuple([lin, bmm]))
        bb.emit_func_output(out)
    return bb.get()


def test_gemm_runs_column_blocks_with_the_epilogue_on_each_tile():
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.s_tir import dlight

    from edgegen.converters.lower import compile_module
    from edgegen.kernels.cpu_loops import make_rule

    target = tvm.target.Target({"kind": "llvm"})
    with target:
        legal = tvm.transform.Sequential(cpu.legalize_passes(target))(_gemm_module())
        scheduled = dlight.ApplyDefaultSchedule(make_rule())(legal)
    prims = [f for f in scheduled.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    gemms = [f.script() for f in prims if "matmul" in f.script()]
    assert len(gemms) == 2
    for text in gemms:   # one parallel loop: the epilogue runs on the GEMM's tiles, not in a pass of its own
        assert text.count("T.parallel") == 1 and "T.unroll" in text, text
    assert any("T.int64(256)" in text for text in gemms)   # 512 columns in two blocks of 256

    rng = np.random.default_rng(1)
    shapes = [(2, 8, 320), (320, 512), (512,), (3, 12, 40), (3, 40, 32), (3, 12, 32)]
    xs = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    vm = relax.VirtualMachine(compile_module(_gemm_module(), {"kind": "llvm"}), tvm.cpu())
    lin, bmm = vm["main"](*[tvm.runtime.tensor(v) for v in xs])
    pre = xs[0].astype(np.float64) @ xs[1] + xs[2]
    from math import erf

    gelu = pre * 0.5 * (1 + np.vectorize(erf)(pre / np.sqrt(2)))
    np.testing.assert_allclose(lin.numpy(), gelu, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(bmm.numpy(), xs[3].astype(np.float64) @ xs[4] + xs[5], rtol=1e-4, atol=1e-4)


def test_a_pad_after_a_residual_conv_is_not_its_epilogue():
    """conv -> residual add -> pad (the VAE encoder's resnet into its downsampler): the fused pad
    writes a border no conv tile covers, so it must not run on the conv's tiles (it left NaN there)."""
    import tvm
    from tvm import relax

    from edgegen.converters.lower import compile_module

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 8, 16, 16), "float32"))
    w = relax.Var("w", relax.TensorType((8, 8, 3, 3), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            res = bb.emit(relax.op.add(relax.op.nn.conv2d(x, w, padding=1), x))
            out = bb.emit_output(relax.op.nn.pad(res, [0, 0, 0, 0, 0, 1, 0, 1]))
        bb.emit_func_output(out)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(s, dtype=np.float32) for s in [(1, 8, 16, 16), (8, 8, 3, 3)]]
    vm = relax.VirtualMachine(compile_module(bb.get(), {"kind": "llvm"}), tvm.cpu())
    got = vm["main"](*[tvm.runtime.tensor(v) for v in xs]).numpy()
    want = np.pad(_conv2d_nchw(*xs, pad=1) + xs[0], ((0, 0), (0, 0), (0, 1), (0, 1)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _odd_columns_module():
    """Cross-attention's scores over 77 keys (no vector width divides 77), alone and with an epilogue."""
    from tvm import relax

    bb = relax.BlockBuilder()
    q = relax.Var("q", relax.TensorType((2, 36, 40), "float32"))
    kt = relax.Var("kt", relax.TensorType((2, 40, 77), "float32"))
    r = relax.Var("r", relax.TensorType((2, 36, 77), "float32"))
    with bb.function("main", [q, kt, r]):
        with bb.dataflow():
            scores = bb.emit(relax.op.matmul(q, kt))
            plus = bb.emit(relax.op.add(relax.op.matmul(kt, relax.op.permute_dims(kt, [0, 2, 1])), relax.const(1.0)))
            res = bb.emit(relax.op.add(relax.op.matmul(q, kt), r))
            out = bb.emit_output(relax.Tuple([scores, plus, res]))
        bb.emit_func_output(out)
    return bb.get()


def test_gemm_with_odd_columns_is_padded_to_vector_tiles():
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.s_tir import dlight

    from edgegen.converters.lower import compile_module
    from edgegen.kernels.cpu_loops import make_rule

    target = tvm.target.Target({"kind": "llvm"})
    with target:
        legal = tvm.transform.Sequential(cpu.legalize_passes(target))(_odd_columns_module())
        scheduled = dlight.ApplyDefaultSchedule(make_rule())(legal)
    texts = [f.script() for f in scheduled.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    padded = [t for t in texts if "_pad" in t]
    assert len(padded) == 2 and all("T.int64(80)" in t and "T.unroll" in t for t in padded), texts

    rng = np.random.default_rng(2)
    xs = [rng.standard_normal(s, dtype=np.float32) for s in [(2, 36, 40), (2, 40, 77), (2, 36, 77)]]
    vm = relax.VirtualMachine(compile_module(_odd_columns_module(), {"kind": "llvm"}), tvm.cpu())
    scores, plus, res = vm["main"](*[tvm.runtime.tensor(v) for v in xs])
    q, kt, r = (v.astype(np.float64) for v in xs)
    np.testing.assert_allclose(scores.numpy(), q @ kt, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(plus.numpy(), kt @ kt.transpose(0, 2, 1) + 1, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(res.numpy(), q @ kt + r, rtol=1e-4, atol=1e-4)


def test_group_norm_silu_reads_once_in_vector_partials_with_a_vector_sigmoid():
    """GroupNorm's reshape into groups is read in place (no copy), its statistics accumulate in
    vector-lane partials, and the SiLU's sigmoid is the polynomial exp (kernels/sigmoid.py), not libm's."""
    import torch
    import tvm
    from tvm import relax

    from edgegen.converters import lower
    from edgegen.kernels.group_norm import group_norm_silu
    from edgegen.kernels.sigmoid import silu

    module = torch.nn.Sequential(torch.nn.GroupNorm(4, 32), torch.nn.SiLU(), torch.nn.Flatten(), torch.nn.Sigmoid())
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2, 32, 8, 16)) * 3 + 1).astype(np.float32)
    with torch.no_grad():
        module[0].weight.normal_()
        module[0].bias.normal_()
    lowered = lower.to_relax(torch.export.export(module, (torch.from_numpy(x),)), 1, "gn")
    kernels: list = []
    vm = relax.VirtualMachine(lower.compile_module(lowered.module, {"kind": "llvm"}, kernels), tvm.cpu())
    names = " ".join(k["kernel"] for k in kernels)
    assert "fast_exp" in names and "sigmoid" not in names, names
    out = vm["main"](tvm.runtime.tensor(x), *[tvm.runtime.tensor(lowered.weights[s.name])
                                              for s in lowered.weight_specs]).numpy()
    gamma, beta = (module[0].weight.detach().numpy(), module[0].bias.detach().numpy())
    expected = 1 / (1 + np.exp(-group_norm_silu(x.astype(np.float64), gamma, beta, 4, 1e-5).reshape(2, -1)))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(silu(np.array([-100.0, 0.0, 3.0])), [0.0, 0.0, 3 / (1 + np.exp(-3))], atol=1e-12)


def test_row_reduction_accumulates_in_vector_lanes():
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.s_tir import dlight

    from edgegen.kernels.cpu_loops import make_rule

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 64, 10, 64), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.sum(x, axis=[2, 3]))
        bb.emit_func_output(out)
    target = tvm.target.Target({"kind": "llvm"})
    with target:
        scheduled = dlight.ApplyDefaultSchedule(make_rule())(tvm.transform.Sequential(cpu.legalize_passes(target))(
            bb.get()))
    text = next(f.script() for f in scheduled.functions.values() if isinstance(f, tvm.tirx.PrimFunc))
    assert "_rf" in text and "T.parallel" in text and "T.unroll(T.int64(16))" in text, text
