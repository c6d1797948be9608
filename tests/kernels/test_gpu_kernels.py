"""edgegen's GPU kernels against their numpy references: on the CPU target (TVM's LLVM
backend), on OpenCL (PoCL here) and on WebGPU (lavapipe here), through the launch-plan runtimes."""

import re

import numpy as np
import pytest

from edgegen.core.specs import TensorSpec
from edgegen.kernels.attention import safe_softmax
from edgegen.kernels.group_norm import group_norm_silu

pytestmark = pytest.mark.tvm


def _group_norm_module(shape, groups, silu=True):
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(shape, "float32"))
    g = relax.Var("gamma", relax.TensorType((shape[1],), "float32"))
    b = relax.Var("beta", relax.TensorType((shape[1],), "float32"))
    with bb.function("main", [x, g, b]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.group_norm(x, g, b, num_groups=groups, channel_axis=1, axes=[2, 3]))
            if silu:
                y = bb.emit(relax.op.nn.silu(y))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def run_through_plan(tmp_path, module, inputs: dict, weights: dict, target: str, limits=None, precision="fp32",
                     fp16_arithmetic=False, ran: list | None = None):
    """Lower `module` (inputs first, then weights) for `target`, write its plan, run it on the backend
    (`ran` receives the session's device name)."""
    from edgegen.converters import gpu
    from edgegen.converters.lower import Lowered
    from edgegen.core.targets import get_target

    tgt = get_target(target)
    lowered = Lowered(module, [TensorSpec.of(n, a) for n, a in weights.items()], dict(weights))
    built = gpu.lower_to_plan(lowered, list(inputs), ["out"], tgt.tvm_target, limits or gpu.limits_of(tgt.profile),
                              tgt.backend, precision=precision, fp16_arithmetic=fp16_arithmetic)
    files = gpu.write_files(built, tmp_path, "k", tgt.backend)
    session = gpu.open_session(built, tmp_path, files, "k", tgt.backend, inputs)
    if ran is not None:
        ran.append(session.device_name)
    try:
        return built, session.run(**inputs)["out"]
    finally:
        session.close()


def _gn_case(shape=(1, 64, 12, 12), groups=32):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    gamma = rng.standard_normal(shape[1]).astype(np.float32)
    beta = rng.standard_normal(shape[1]).astype(np.float32)
    return x, gamma, beta


@pytest.mark.parametrize("silu", [True, False])
def test_group_norm_kernel_on_cpu_target(silu):
    import tvm

    from edgegen.kernels.group_norm import prim_func

    x, gamma, beta = _gn_case((2, 32, 6, 5), 8)
    func = prim_func(x.shape, 8, 1e-5, silu)
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target="llvm")
    out = tvm.runtime.tensor(np.zeros_like(x))
    lib["main"](*(tvm.runtime.tensor(a) for a in (x, gamma, beta)), out)
    np.testing.assert_allclose(out.numpy(), group_norm_silu(x, gamma, beta, 8, 1e-5, silu), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("target", [pytest.param("opencl", marks=pytest.mark.opencl),
                                    pytest.param("webgpu", marks=pytest.mark.webgpu)])
def test_group_norm_silu_kernel_on_gpu_runtimes(tmp_path, target):
    x, gamma, beta = _gn_case()
    built, out = run_through_plan(tmp_path, _group_norm_module(x.shape, 32), {"x": x}, {"gamma": gamma, "beta": beta},
                                  target)
    # one launch of edgegen's kernel does the whole GroupNorm + SiLU, one workgroup per group
    assert [launch["program"] for launch in built.plan["launches"]] == ["edgegen_group_norm_silu_0"]
    assert built.plan["launches"][0]["grid"] == [32, 1, 1]
    np.testing.assert_allclose(out, group_norm_silu(x, gamma, beta, 32, 1e-5), atol=2e-5, rtol=1e-4)


def test_safe_softmax_guard_is_dropped_only_without_a_mask():
    from tvm import relax

    from edgegen.kernels.attention import make_pass

    def module(masked):
        bb = relax.BlockBuilder()
        q = relax.Var("q", relax.TensorType((4, 8, 2), "float32"))
        k = relax.Var("k", relax.TensorType((4, 2, 8), "float32"))
        m = relax.Var("m", relax.TensorType((4, 8, 8), "float32"))
        with bb.function("main", [q, k, m]):
            with bb.dataflow():
                s = bb.emit(relax.op.matmul(q, k))
                if masked:
                    s = bb.emit(relax.op.add(s, m))
                p = bb.emit(relax.op.nn.softmax(s))
                finite = bb.emit(relax.op.logical_not(relax.op.equal(s, relax.const(-np.inf, "float32"))))
                anyf = bb.emit(relax.op.astype(relax.op.max(relax.op.astype(finite, "int8"), axis=[-1], keepdims=True),
                                               "bool"))
                out = bb.emit(relax.op.where(relax.op.logical_not(anyf),
                                             relax.op.full_like(p, relax.const(0.0, "float32")), p))
                out = bb.emit_output(out)
            bb.emit_func_output(out)
        return bb.get()

    def ops(mod):
        return [c.op.name for c in _calls(mod["main"])]

    dropped = make_pass()(relax.transform.Normalize()(module(False)))
    kept = make_pass()(relax.transform.Normalize()(module(True)))
    assert "relax.where" not in ops(dropped) and "relax.nn.softmax" in ops(dropped)
    assert "relax.where" in ops(kept) and "int8" not in kept["main"].script()
    # what the dropped guard computed equals the plain softmax on finite scores
    s = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    e = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(safe_softmax(s), e / e.sum(-1, keepdims=True), rtol=1e-6)
    assert np.all(safe_softmax(np.full((1, 4), -np.inf, np.float32)) == 0)


def _calls(func):
    from tvm import relax

    found = []
    relax.analysis.post_order_visit(func, lambda e: found.append(e) if isinstance(e, relax.Call) else None)
    return found


@pytest.mark.opencl
def test_compile_guard_reschedules_a_kernel_over_the_workgroup_limit(tmp_path):
    from edgegen.converters.gpu import Limits

    x, gamma, beta = _gn_case()
    limits = Limits(max_workgroup_size=64, max_workgroup_dims=(64, 64, 64), local_memory_bytes=16384,
                    max_kernel_args=32, max_program_bytes=1 << 20)
    built, out = run_through_plan(tmp_path, _group_norm_module(x.shape, 32), {"x": x},
                                  {"gamma": gamma, "beta": beta}, "opencl", limits)
    assert built.guard and "workgroup of 256 threads > 64" in built.guard[0]["violations"][0]
    assert built.guard[0]["result"] == "ok"
    assert all(np.prod(launch["block"]) <= 64 for launch in built.plan["launches"])
    np.testing.assert_allclose(out, group_norm_silu(x, gamma, beta, 32, 1e-5), atol=2e-5, rtol=1e-4)


def test_compile_guard_refuses_a_kernel_no_schedule_fits(tmp_path):
    from edgegen.converters import gpu
    from edgegen.converters.lower import Lowered
    from edgegen.core.errors import EdgegenError
    from edgegen.core.targets import get_target

    x, gamma, beta = _gn_case()
    limits = gpu.Limits(256, (256, 256, 256), 16384, 32, max_program_bytes=100)
    weights = {"gamma": gamma, "beta": beta}
    lowered = Lowered(_group_norm_module(x.shape, 32), [TensorSpec.of(n, a) for n, a in weights.items()], weights)
    with pytest.raises(EdgegenError, match="program of .* B > 100 B"):
        gpu.lower_to_plan(lowered, ["x"], ["out"], get_target("opencl").tvm_target, limits, "opencl")


def _attention_module(bh, s, length, d):
    from tvm import relax

    bb = relax.BlockBuilder()
    q = relax.Var("q", relax.TensorType((bh, s, d), "float32"))
    kt = relax.Var("kt", relax.TensorType((bh, d, length), "float32"))
    v = relax.Var("v", relax.TensorType((bh, length, d), "float32"))
    with bb.function("main", [q, kt, v]):
        with bb.dataflow():
            scores = bb.emit(relax.op.reshape(relax.op.matmul(q, kt), (2, bh // 2, s, length)))
            p = bb.emit(relax.op.reshape(relax.op.nn.softmax(scores, axis=-1), (bh, s, length)))
            out = bb.emit_output(relax.op.matmul(p, v))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("target", [pytest.param("opencl", marks=pytest.mark.opencl),
                                    pytest.param("webgpu", marks=pytest.mark.webgpu)])
@pytest.mark.parametrize("variant", ["flash", "partial"])
def test_attention_kernels_on_gpu_runtimes(tmp_path, monkeypatch, target, variant):
    from edgegen.kernels import attention as attn

    # sequence lengths that are not multiples of the tile sizes; head dim 40 as SD's first level
    bh, s, length, d = 4, 100, 77, 40
    monkeypatch.setattr(attn, "FLASH_MIN_SCORE_BYTES", 0 if variant == "flash" else 1 << 40)
    rng = np.random.default_rng(1)
    q, kt, v = (rng.standard_normal(shape).astype(np.float32) for shape in ((bh, s, d), (bh, d, length), (bh, length, d)))
    built, out = run_through_plan(tmp_path, _attention_module(bh, s, length, d), {"q": q, "kt": kt, "v": v}, {}, target)
    assert [a["kernel"] for a in built.attention] == [variant]
    programs = [launch["program"] for launch in built.plan["launches"]]
    assert any(p.startswith(attn.FLASH_PREFIX) for p in programs) == (variant == "flash")
    if variant == "flash":
        assert len(programs) == 1        # the scores never reach memory
    np.testing.assert_allclose(out, attn.attention(q, kt, v), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("length", [77, 64])
def test_flash_attention_kernel_on_cpu_target(monkeypatch, length):
    """The flash kernel's CPU form, substituted by the same fusion pass and compiled by edgegen's
    CPU pipeline; 77 keys end in a partial tile, 64 do not."""
    import tvm
    from tvm import relax

    from edgegen.converters import lower
    from edgegen.kernels import attention as attn

    bh, s, d = 4, 100, 40
    monkeypatch.setattr(attn, "FLASH_MIN_SCORE_BYTES", 0)
    rng = np.random.default_rng(1)
    q, kt, v = (rng.standard_normal(shape).astype(np.float32) for shape in ((bh, s, d), (bh, d, length), (bh, length, d)))
    decisions: list = []
    module = attn.make_fusion_pass(0, 0, decisions, cpu=True)(_attention_module(bh, s, length, d))
    assert [(a["kernel"], a["rows_per_workgroup"]) for a in decisions] == [("flash", None)]
    executable = lower.compile_module(module, lower.resolve_target({"kind": "llvm", "mcpu": "host"}))
    out = relax.VirtualMachine(executable, tvm.cpu())["main"](*(tvm.runtime.tensor(a) for a in (q, kt, v))).numpy()
    np.testing.assert_allclose(out, attn.attention(q, kt, v), atol=1e-5, rtol=1e-4)


def _direct_conv(x, w, pad):
    n, c, h, wd = x.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = h + 2 * pad - 2, wd + 2 * pad - 2
    cols = np.stack([xp[:, :, i:i + oh, j:j + ow] for i in range(3) for j in range(3)], 2)   # n c 9 oh ow
    return np.einsum("ncthw,kct->nkhw", cols, w.reshape(w.shape[0], c, 9).astype(np.float64)).astype(np.float32)


@pytest.mark.parametrize("pad", [0, 1])
def test_winograd_reference_equals_direct_convolution(pad):
    from edgegen.kernels.winograd import transform_weight, winograd_conv2d

    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 5, 7, 6)).astype(np.float32)
    w = rng.standard_normal((3, 5, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(winograd_conv2d(x, transform_weight(w), (pad, pad)), _direct_conv(x, w, pad),
                               atol=1e-4, rtol=1e-4)


def _conv_module(x_shape, w_shape):
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "float32"))
    w = relax.Var("w", relax.TensorType(w_shape, "float32"))
    b = relax.Var("b", relax.TensorType((1, w_shape[0], 1, 1), "float32"))
    with bb.function("main", [x, w, b]):
        with bb.dataflow():
            y = bb.emit(relax.op.add(relax.op.nn.conv2d(x, w, padding=1), b))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("target", [pytest.param("opencl", marks=pytest.mark.opencl),
                                    pytest.param("webgpu", marks=pytest.mark.webgpu)])
@pytest.mark.parametrize("channels", [16, 4])
def test_winograd_conv_on_gpu_runtimes(tmp_path, target, channels):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, channels, 11, 9)).astype(np.float32)
    w = (rng.standard_normal((24, channels, 3, 3)) / channels).astype(np.float32)
    b = rng.standard_normal((1, 24, 1, 1)).astype(np.float32)
    built, out = run_through_plan(tmp_path, _conv_module(x.shape, w.shape), {"x": x}, {"w": w, "b": b}, target)
    [decision] = built.convolutions
    assert decision["kernel"] == ("winograd" if channels >= 8 else "direct")
    if channels >= 8:        # the weight was transformed at build time: the plan reads U, not w
        assert "w.winograd" in built.weights and "w" not in built.weights
        assert built.weights["w.winograd"].shape == (16, 24, channels)
    np.testing.assert_allclose(out, _direct_conv(x, w, 1) + b, atol=2e-4, rtol=1e-4)


def _two_kernel_module(n):
    """A TIR function of two kernels with a global scratch buffer between them (the second reads
    what other workgroups of the first wrote), called from main."""
    import tvm
    from tvm import relax, s_tir, te

    x = te.placeholder((n,), "float32", name="x")
    tmp = te.compute((n,), lambda i: x[i] * 2.0, name="tmp")
    y = te.compute((n,), lambda i: tmp[n - 1 - i] + 1.0, name="y")
    sch = s_tir.Schedule(te.create_prim_func([x, y]).without_attr("global_symbol"))
    for block in ("tmp", "y"):
        bx, tx = sch.split(sch.get_loops(sch.get_sblock(block))[0], [None, 32])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
    bb = relax.BlockBuilder()
    gv = bb.add_func(sch.mod["main"].with_attr("tirx.is_scheduled", True), "two_kernels")
    xv = relax.Var("x", relax.TensorType((n,), "float32"))
    with bb.function("main", [xv]):
        with bb.dataflow():
            out = bb.emit_output(relax.call_tir(gv, [xv], relax.TensorType((n,), "float32")))
        bb.emit_func_output(out)
    del tvm
    return bb.get()


@pytest.mark.opencl
def test_scratch_buffers_between_kernels_get_arena_space(tmp_path):
    x = np.arange(100, dtype=np.float32)
    built, out = run_through_plan(tmp_path, _two_kernel_module(100), {"x": x}, {}, "opencl")
    assert len(built.plan["launches"]) == 2
    scratch = [n for n in built.plan["tensors"] if ".scratch" in n]
    assert len(scratch) == 1 and built.plan["tensors"][scratch[0]]["bytes"] == 400
    assert all(scratch[0] in launch["args"] for launch in built.plan["launches"])
    np.testing.assert_allclose(out, x[::-1] * 2 + 1)


def _geglu_module(x_shape, w_shape):
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "float32"))
    w = relax.Var("w", relax.TensorType(w_shape, "float32"))
    b = relax.Var("b", relax.TensorType((w_shape[0],), "float32"))
    n = w_shape[0] // 2
    with bb.function("main", [x, w, b]):
        with bb.dataflow():
            flat = bb.emit(relax.op.reshape(x, (x_shape[0] * x_shape[1], x_shape[2])))
            y = bb.emit(relax.op.add(b, relax.op.matmul(flat, relax.op.permute_dims(w, [1, 0]))))
            y = bb.emit(relax.op.reshape(y, (x_shape[0], x_shape[1], 2 * n)))
            halves = bb.emit(relax.op.split(y, [n], axis=-1))
            value = bb.emit(relax.TupleGetItem(halves, 0))
            gate = bb.emit(relax.TupleGetItem(halves, 1))
            out = bb.emit_output(relax.op.multiply(value, relax.op.nn.gelu(gate)))
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize("target", [pytest.param("opencl", marks=pytest.mark.opencl),
                                    pytest.param("webgpu", marks=pytest.mark.webgpu)])
def test_geglu_epilogue_on_gpu_runtimes(tmp_path, target):
    from edgegen.kernels.geglu import geglu

    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 20, 24)).astype(np.float32)
    w = (rng.standard_normal((64, 24)) / 5).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    built, out = run_through_plan(tmp_path, _geglu_module(x.shape, w.shape), {"x": x}, {"w": w, "b": b}, target)
    assert [f["kernel"] for f in built.feed_forward] == ["geglu"]
    # both halves stored transposed, as their GEMMs read them (kernels/weight_layout.py)
    assert set(built.weights) == {"w.value.t", "w.gate.t", "b.value", "b.gate"}, set(built.weights)
    # two GEMM kernels; the gate one ends in GELU and the product: no 2N-wide tensor in the plan
    gemms = [launch["program"] for launch in built.plan["launches"] if "matmul" in launch["program"]]
    assert len(gemms) == 2 and any("multiply" in p for p in gemms)
    assert all(t["shape"][-1] != 64 for n, t in built.plan["tensors"].items() if t["storage"] == "arena")
    np.testing.assert_allclose(out, geglu(x, w, b), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("case", ["winograd", "geglu"])
def test_build_time_weight_rewrites_on_the_cpu_target(case):
    """Winograd and GEGLU change the graph and its weights; the rewritten graph compiled by the
    CPU pipeline reproduces the original operator."""
    import tvm
    from tvm import relax

    from edgegen.converters import lower
    from edgegen.core.specs import TensorSpec
    from edgegen.kernels import geglu, winograd

    rng = np.random.default_rng(5)
    if case == "winograd":
        x = rng.standard_normal((1, 16, 9, 7)).astype(np.float32)
        weights = {"w": (rng.standard_normal((8, 16, 3, 3)) / 16).astype(np.float32),
                   "b": rng.standard_normal((1, 8, 1, 1)).astype(np.float32)}
        module, expected = _conv_module(x.shape, weights["w"].shape), _direct_conv(x, weights["w"], 1) + weights["b"]
    else:
        x = rng.standard_normal((2, 6, 24)).astype(np.float32)
        weights = {"w": (rng.standard_normal((32, 24)) / 5).astype(np.float32),
                   "b": rng.standard_normal(32).astype(np.float32)}
        module, expected = _geglu_module(x.shape, weights["w"].shape), geglu.geglu(x, weights["w"], weights["b"])
    specs, decisions = [TensorSpec.of(n, a) for n, a in weights.items()], []
    rewrite = winograd.rewrite if case == "winograd" else geglu.rewrite
    module = rewrite(module, weights, specs, decisions)
    assert decisions and decisions[0]["kernel"] == case
    executable = lower.compile_module(module, lower.resolve_target({"kind": "llvm", "mcpu": "host"}))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    out = vm["main"](tvm.runtime.tensor(x), *(tvm.runtime.tensor(weights[s.name]) for s in specs)).numpy()
    np.testing.assert_allclose(out, expected, atol=2e-4, rtol=1e-4)


def _fp16_cases():
    """(module, inputs, weights, numpy reference of the float16-rounded values) per edgegen kernel."""
    from edgegen.kernels.attention import attention
    from edgegen.kernels.geglu import geglu

    rng = np.random.default_rng(5)

    def r(a):
        return a.astype(np.float16).astype(np.float32)

    x, gamma, beta = _gn_case()
    yield "group_norm_silu", _group_norm_module(x.shape, 32), {"x": x}, {"gamma": gamma, "beta": beta}, \
        group_norm_silu(r(x), r(gamma), r(beta), 32, 1e-5)
    bh, s, length, d = 4, 100, 77, 40
    q, kt, v = (rng.standard_normal(sh).astype(np.float32) for sh in ((bh, s, d), (bh, d, length), (bh, length, d)))
    yield "flash_attention", _attention_module(bh, s, length, d), {"q": q, "kt": kt, "v": v}, {}, \
        attention(r(q), r(kt), r(v))
    c = rng.standard_normal((1, 16, 11, 9)).astype(np.float32)
    w = (rng.standard_normal((24, 16, 3, 3)) / 16).astype(np.float32)
    b = rng.standard_normal((1, 24, 1, 1)).astype(np.float32)
    yield "winograd_conv2d", _conv_module(c.shape, w.shape), {"x": c}, {"w": w, "b": b}, \
        _direct_conv(r(c), w, 1) + b
    g = rng.standard_normal((2, 20, 24)).astype(np.float32)
    gw = (rng.standard_normal((64, 24)) / 5).astype(np.float32)
    gb = rng.standard_normal(64).astype(np.float32)
    yield "geglu", _geglu_module(g.shape, gw.shape), {"x": g}, {"w": gw, "b": gb}, geglu(r(g), r(gw), r(gb))


@pytest.mark.parametrize("target", [pytest.param("opencl", marks=pytest.mark.opencl),
                                    pytest.param("webgpu", marks=pytest.mark.webgpu)])
@pytest.mark.parametrize("case", ["group_norm_silu", "flash_attention", "winograd_conv2d", "geglu"])
def test_kernels_with_fp16_storage_on_gpu_runtimes(tmp_path, monkeypatch, target, case):
    """Every kernel with float16 in memory and float32 arithmetic, against its numpy reference on the
    same float16-rounded inputs: what is left is the rounding of the stored intermediates and output."""
    from edgegen.kernels import attention as attn

    monkeypatch.setattr(attn, "FLASH_MIN_SCORE_BYTES", 0)
    module, inputs, weights, want = next(c[1:] for c in _fp16_cases() if c[0] == case)
    built, out = run_through_plan(tmp_path, module, inputs, weights, target, precision="fp16")
    assert all(t["dtype"] == "float16" for t in built.plan["tensors"].values() if t["dtype"].startswith("float"))
    np.testing.assert_allclose(out, want, atol=2e-3 * np.abs(want).max(), rtol=2e-3)


def _opencl_c_errors(source: str, tmp_path) -> list[str]:
    """clang's OpenCL C front end on each program of `source`, with cl_khr_fp16: the compile check of
    kernels no device here can run (PoCL has no cl_khr_fp16)."""
    import shutil
    import subprocess

    from edgegen.runtimes.launch_plan import split_programs

    clang = shutil.which("clang-15") or shutil.which("clang")
    if clang is None:
        pytest.skip("needs clang (Debian's clang-15, which PoCL depends on) to compile the fp16 OpenCL C kernels")
    errors = []
    for name, body in split_programs(source).items():
        path = tmp_path / f"{name}.cl"
        path.write_text(body)
        done = subprocess.run([clang, "-x", "cl", "-cl-std=CL2.0", "-Xclang", "-finclude-default-header",
                               "-fsyntax-only", str(path)], capture_output=True, text=True)
        if done.returncode:
            errors.append(f"{name}: {done.stderr[:500]}")
    return errors


@pytest.mark.parametrize("target", [pytest.param("adreno", marks=pytest.mark.opencl),
                                    pytest.param("webgpu", marks=pytest.mark.webgpu)])
@pytest.mark.parametrize("case", ["group_norm_silu", "flash_attention", "winograd_conv2d", "geglu"])
def test_kernels_computing_in_fp16(tmp_path, monkeypatch, target, case):
    """fp16 arithmetic: lavapipe (shader-f16) runs the float16 kernels; on OpenCL, clang compiles them with
    cl_khr_fp16 and PoCL, which lacks it, runs the plan's float32-arithmetic kernels on the same storage.
    Accumulators stay float32: the flash kernel's scores, running maximum and sum, and output."""
    from edgegen.kernels import attention as attn

    monkeypatch.setattr(attn, "FLASH_MIN_SCORE_BYTES", 0)
    module, inputs, weights, want = next(c[1:] for c in _fp16_cases() if c[0] == case)
    ran: list = []
    built, out = run_through_plan(tmp_path, module, inputs, weights, target, precision="fp16", fp16_arithmetic=True,
                                  ran=ran)
    assert built.plan["arithmetic"] == "fp16"
    np.testing.assert_allclose(out, want, atol=2e-3 * np.abs(want).max(), rtol=2e-3)
    if target == "adreno":
        assert "#pragma OPENCL EXTENSION cl_khr_fp16 : enable" in built.source
        assert _opencl_c_errors(built.source, tmp_path) == []
        assert built.fallback_source and "vload_half" in built.fallback_source
        assert "float32-arithmetic kernels" in ran[0]
    if case == "flash_attention":
        local = dict(re.findall(r"var(?:<workgroup>)? (\w+) : array<(f16|f32), \d+>", built.source)) or \
            {n: {"half": "f16", "float": "f32"}[t] for t, n in re.findall(r"(half|float) (\w+)_ptr\[\d+\];", built.source)}
        assert {n: local[n] for n in ("q_row", "k_tile", "v_tile", "acc", "state", "score")} == \
            {"q_row": "f16", "k_tile": "f16", "v_tile": "f16", "acc": "f32", "state": "f32", "score": "f32"}


def test_winograd_is_chosen_by_the_devices_roofline():
    """SD shapes on Adreno 740 at fp16: Winograd for the UNet's wide convolutions, direct for the VAE
    decoder's full-resolution ones (memory-bound: V and M would be 4x the activations) and for 8x8
    maps, where U's 16/9 weight bytes dominate."""
    from edgegen.converters.gpu import _device
    from edgegen.kernels.winograd import roofline

    device = _device("adreno-740", True)
    unet = [roofline((k, k, 3, 3), (2, k, hw, hw), (1, 1), device)[0] for k, hw in ((320, 64), (640, 32), (1280, 16))]
    vae = [roofline((k, k, 3, 3), (1, k, hw, hw), (1, 1), device)[0] for k, hw in ((128, 512), (256, 512), (256, 256))]
    assert all(unet) and not any(vae)
    ok, reason = roofline((1280, 1280, 3, 3), (2, 1280, 8, 8), (1, 1), device)
    assert not ok and "roofline on adreno-740 fp16" in reason
