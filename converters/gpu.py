"""Lower a component for a GPU target (OpenCL, WebGPU, Metal) to kernel sources and a launch plan.

TVM compiles the kernels; edgegen replaces TVM's host side (the Relax VM and the TVM
runtime, which phones would need built for them) with a static launch plan: the graph's
kernel calls in order, each kernel's arguments, grid and workgroup sizes read from TVM's
own lowered host code, and an arena in which every intermediate has a fixed offset.

Every kernel passes a compile guard against the device profile (workgroup size, local
memory, kernel arguments, program size) before it is written; a kernel over a limit is
rescheduled with a tighter budget, and the reason is recorded.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field

import numpy as np

from edgegen.core.errors import EdgegenError, UnsupportedOpError
from edgegen.core.launch_plan import FALLBACK_KERNELS, dtype_bytes
from edgegen.core.specs import TensorSpec

from . import half_arithmetic, half_storage, lower
from .lower import Lowered, import_tvm_compiler
from .plan_graph import PlanGraph

HOST = {"kind": "llvm"}
PRECISIONS = ("fp32", "fp16")
_LAUNCH_TAGS = ("blockIdx.x", "blockIdx.y", "blockIdx.z", "threadIdx.x", "threadIdx.y", "threadIdx.z")


@dataclass
class Limits:
    """What the device accepts of one kernel (from the target's device profile)."""

    max_workgroup_size: int
    max_workgroup_dims: tuple[int, int, int]
    local_memory_bytes: int
    max_kernel_args: int
    max_program_bytes: int


@dataclass
class GpuBuild:
    plan: dict
    source: str                     # every program, each after a `// edgegen-program: <name>` line
    constants: dict[str, np.ndarray]    # tensors the graph holds as constants, stored beside the weights
    guard: list = field(default_factory=list)   # fallbacks the compile guard took, with reasons
    attention: list = field(default_factory=list)   # per attention call site: the kernel chosen and why
    convolutions: list = field(default_factory=list)   # per 3x3 convolution: Winograd or direct, and why
    feed_forward: list = field(default_factory=list)   # per GEGLU projection split for the fused epilogue
    weights: dict = field(default_factory=dict)       # the weights the plan reads (Winograd ones transformed)
    weight_specs: list = field(default_factory=list)
    quant: dict = field(default_factory=dict)         # per packed weight (named as the float32 graph's): how stored
    kernels: list = field(default_factory=list)       # lower.kernel_table of the fused kernels the plan launches
    # with fp16 arithmetic on OpenCL: the same programs computing in float32, for devices without cl_khr_fp16
    fallback_source: str = ""


def limits_of(profile) -> Limits:
    return Limits(profile.max_workgroup_size, tuple(profile.max_workgroup_dims), profile.local_memory_bytes,
                  profile.max_kernel_args, profile.max_program_bytes)


def relax_passes(target, limits: Limits, decisions: list, edgegen_kernels: bool = True) -> list:
    """Relax passes for a GPU target up to scheduling: edgegen's graph rewrites into its kernels
    (`decisions` receives the attention choices), each packed weight's decode fused into the GEMM or
    convolution that reads it, legalization and TVM's operator fusion."""
    from tvm import relax
    from tvm.relax.backend.gpu_generic import pipeline as gpu

    from edgegen.kernels import dequant, gelu, gpu_rules

    threads = min(limits.max_workgroup_size, int(target.attrs.get("max_num_threads", 256)))
    local = min(limits.local_memory_bytes, int(target.attrs.get("max_shared_memory_per_block", 16384)))
    fusion = [gelu.make_pass(), *(gpu_rules.fusion_passes(threads, local, decisions) if edgegen_kernels else []),
              dequant.make_fusion_pass()]
    # folding makes boolean constants (masks), which are then rewritten and their casts legalized
    legalize = [relax.transform.LegalizeOps(), relax.transform.FoldConstant(), _bool_constants_as_int32(),
                relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                relax.transform.FuseOps(), relax.transform.FuseTIR()]
    return gpu.library_dispatch_passes(target) + fusion + legalize


def _bool_constants_as_int32():
    """Boolean constants (a text encoder's causal mask) become int32 constants cast back to bool
    inside the kernel that reads them: OpenCL kernels take no bool buffers, WGSL stores none."""
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    from edgegen.kernels.relax_util import function_pass

    @mutator
    class _Rewrite(PyExprMutator):
        def visit_generic_const_(self, op):
            if str(getattr(op.ty, "dtype", "")) != "bool":
                return op
            return relax.op.astype(relax.const(op.value.numpy().astype(np.int32)), "bool")

    return function_pass(_Rewrite, "BoolConstantsAsInt32")


def lower_to_plan(lowered: Lowered, input_names: list[str], output_names: list[str], tvm_target: dict,
                  limits: Limits, language: str, edgegen_kernels: bool = True, quant: dict | None = None,
                  precision: str = "fp32", roofline: str = "", fp16_arithmetic: bool = False) -> GpuBuild:
    """`edgegen_kernels=False` leaves out edgegen's kernels (Winograd, flash attention, fused
    GroupNorm+SiLU, GEGLU epilogue): TVM's own fusion and dlight's schedules alone, the baseline they are
    measured against in benchmarks/kernels.py. `quant` (weight -> Scheme, named as in `lowered`)
    packs those weights, after the weight rewrites (a GEGLU projection as its two halves; a packed 3x3
    conv keeps the direct kernel); the kernels that read them decode them in-kernel.
    `precision` "fp16": every float tensor in global memory (activations, the arena, float weights)
    is stored as float16 (converters/half_storage.py); with `fp16_arithmetic` (the device computes in
    float16) the kernels compute in float16 too, accumulators excepted (converters/half_arithmetic.py),
    and on OpenCL the plan carries the float32-arithmetic kernels for devices without cl_khr_fp16.
    `roofline` (an entry of device_profiles.json): per-layer kernel choices by that device's roofline."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    half = precision == "fp16"
    arithmetic = half and fp16_arithmetic
    tvm = import_tvm_compiler()
    from tvm import relax

    from edgegen.kernels import geglu, gpu_rules, weight_layout, winograd

    target = tvm.target.Target(tvm_target, host=HOST)
    attention: list = []
    convolutions: list = []
    weights, specs = dict(lowered.weights), list(lowered.weight_specs)
    feed_forward: list = []
    module = lowered.module
    if edgegen_kernels:     # rewrites that transform weights, once, here
        module = winograd.rewrite(module, weights, specs, convolutions,
                                  {n: sch.name for n, sch in (quant or {}).items()}, _device(roofline, half))
        module = geglu.rewrite(module, weights, specs, feed_forward)
    # linear weights stored transposed, as the GEMM reads them: no transpose kernel (and arena copy) per call
    layouts: list = []
    module = weight_layout.rewrite(module, weights, specs, layouts, set(quant or {}),
                                   "packed: the decoding GEMM reads the packed layout")
    packed: dict = {}
    if quant:
        module, specs, weights, packed = _pack(Lowered(module, specs, weights), quant)
    with target:
        fused = tvm.transform.Sequential(relax_passes(target, limits, attention, edgegen_kernels))(module)
        unscheduled = fused.clone()
        kernels = lower.kernel_table(fused, _flash_flops(attention))
        mod = tvm.transform.Sequential([gpu_rules.apply_schedule(target), relax.transform.RewriteDataflowReshape(),
                                        relax.transform.DeadCodeElimination(["main"])])(fused)
    graph = PlanGraph(mod["main"], len(input_names), input_names, specs, output_names)
    if half:
        graph.store_float16()
        weights = {n: a.astype(np.float16) if a.dtype == np.float32 else a for n, a in weights.items()}
        specs = [TensorSpec.of(s.name, weights[s.name]) for s in specs]
    programs, guard = {}, []
    for name in graph.functions_called():
        func = mod[name]
        if not isinstance(func, tvm.tirx.PrimFunc):
            raise UnsupportedOpError(f"{name} is not a TIR function; the GPU plan runs TIR kernels only")
        programs[name] = _guarded_program(name, func, unscheduled[name], tvm_target, limits, language, guard, half,
                                          arithmetic)
    plan = graph.plan({n: p["kernels"] for n, p in programs.items()}, language)
    plan["programs"] = {n: {"kernels": [k["name"] for k in p["kernels"]]} for n, p in programs.items()}
    plan["arithmetic"] = "fp16" if arithmetic else "fp32"

    def joined(key: str) -> str:
        return "".join(f"// edgegen-program: {n}\n{p[key]}\n" for n, p in programs.items() if key in p)

    return GpuBuild(plan, joined("source"), graph.constants, guard, attention, convolutions, feed_forward, weights,
                    specs, quant=packed, kernels=kernels, fallback_source=joined("fallback_source"))


def _device(roofline: str, half: bool) -> dict | None:
    """The roofline figures kernel choices are weighed with (see winograd.roofline), or None."""
    if not roofline:
        return None
    from edgegen.core.targets import device_profile

    dev = device_profile(roofline)
    precision = "fp16" if half else "fp32"
    return {"name": f"{roofline} {precision}", "flops": dev["peak_flops"][precision],
            "bandwidth": dev["memory_bandwidth_bytes_per_s"], "bytes": 2 if half else 4}


def _flash_flops(attention: list) -> dict[str, float]:
    """FLOPs of each flash-attention kernel (QKᵀ and PV: 4·BH·Q·K·D), which TVM cannot count in its
    hand-written loops."""
    return {site["function"]: 4.0 * site["batch_heads"] * site["queries"] * site["keys"] * site["head_dim"]
            for site in attention if site.get("function")}


# what GEGLU's rewrite names the halves it splits a projection weight into (Winograd keeps packed
# weights as they are: see winograd.rewrite)
_HALVES = ("value", "gate")


def _pack(lowered: Lowered, quant: dict) -> tuple:
    """Pack the weights `quant` names (or the GEGLU halves made of them) as 32-bit words, decoded in
    the kernels that read them. Returns (module, specs, weights, {float32 weight name: entry})."""
    from . import quantize

    choices, origin = {}, {}
    for spec in lowered.weight_specs:
        base, _, suffix = spec.name.rpartition(".")
        if spec.name in quant:
            choices[spec.name], origin[spec.name] = quant[spec.name], spec.name
        elif suffix in _HALVES and base in quant:
            choices[spec.name], origin[spec.name] = quant[base], base
    out, report = quantize.pack(lowered, choices, words=True)
    merged: dict = {}
    for name, entry in report.items():
        into = merged.setdefault(origin[name], {"scheme": entry["scheme"], "bytes": 0, "stored_as": []})
        into["bytes"] += entry["bytes"]
        into["stored_as"].append(name)
    return out.module, out.weight_specs, out.weights, merged


EXTENSIONS = {"opencl": "cl", "webgpu": "wgsl", "metal": "metal"}


def write_files(built: GpuBuild, root, prefix: str, backend: str) -> dict[str, str]:
    """Write a component's plan, kernel source and weights under root/prefix; return the files
    entry of its manifest (relative paths)."""
    import json
    from pathlib import Path

    from edgegen.core import safetensors_io

    files = {"plan": f"{prefix}/plan.json", "kernels": f"{prefix}/kernels.{EXTENSIONS[backend]}",
             "weights": f"{prefix}/weights.safetensors"}
    if built.fallback_source:
        files[FALLBACK_KERNELS] = f"{prefix}/kernels_fp32_arithmetic.{EXTENSIONS[backend]}"
    root = Path(root)
    (root / prefix).mkdir(parents=True, exist_ok=True)
    (root / files["plan"]).write_text(json.dumps(built.plan, indent=1))
    (root / files["kernels"]).write_text(built.source)
    if built.fallback_source:
        (root / files[FALLBACK_KERNELS]).write_text(built.fallback_source)
    safetensors_io.save({**built.weights, **built.constants}, root / files["weights"])
    return files


def weight_specs(built: GpuBuild) -> list:
    from edgegen.core.specs import TensorSpec

    return built.weight_specs + [TensorSpec.of(n, a) for n, a in built.constants.items()]


def open_session(built: GpuBuild, root, files: dict, name: str, backend: str, inputs: dict, family: str = "test"):
    """The runtime backend's session on files written by write_files (what the build's parity
    check, the kernel tests and benchmarks/kernels.py run)."""
    from pathlib import Path

    from edgegen.core.artifact import Component
    from edgegen.runtimes import get_backend

    class _Folder:
        def file(self, rel):
            return Path(root) / rel

    outputs = []
    for out_name, tensor in built.plan["outputs"].items():
        entry = built.plan["tensors"][tensor]    # fp16 storage returns float32, as the component's specs say
        outputs.append(TensorSpec(out_name, "float32" if entry["dtype"] == "float16" else entry["dtype"],
                                  entry["shape"]))
    comp = Component(name, backend, family, files, [TensorSpec.of(n, a) for n, a in inputs.items()], outputs,
                     weight_specs(built))
    return get_backend(backend).load(_Folder(), comp)


def precision_record(precision: str, scheme: str | None, profile, plan: dict, backend: str) -> dict:
    """The manifest's `precision` of a GPU component: how weights and activations are stored, what the
    kernels compute in, and why each part that is not float16 stays float32."""
    half = precision == "fp16"
    arithmetic = plan.get("arithmetic", "fp32")
    record = {"precision": precision, "activations": "fp16" if half else "fp32",
              "weights": scheme or ("fp16" if half else "fp32"), "arithmetic": arithmetic,
              "device_fp16_arithmetic": profile.fp16_arithmetic, "kept_fp32": []}
    if arithmetic == "fp16":
        record["kept_fp32"] = [{"what": half_arithmetic.KEPT_FP32,
                                "reason": "float16 sums lose small terms and overflow past 65504; the products "
                                          "are taken in float16 and summed in float32"}]
        if backend == "opencl":
            record["fallback"] = {"when": "the device lacks cl_khr_fp16 (e.g. PoCL)",
                                  "kernels": "the same programs with float32 arithmetic on the float16 storage",
                                  "file": FALLBACK_KERNELS}
    elif half:
        record["kept_fp32"] = [
            {"what": "arithmetic, registers and local memory",
             "reason": f"{profile.name} computes in float16 only with an extension it is not known to have; the "
                       f"kernels convert on load and store (vload_half/vstore_half on OpenCL)"}]
    return record


def check_memory(plan: dict, profile, where: str) -> None:
    """Refuse a plan the device cannot hold: a tensor over its largest buffer, or arena plus
    weights over its memory budget."""
    from edgegen.core.errors import ModelError

    big = [(n, t["bytes"]) for n, t in plan["tensors"].items() if t["bytes"] > profile.max_buffer_bytes]
    if big:
        name, size = max(big, key=lambda x: x[1])
        raise ModelError(f"{where}: tensor {name} {plan['tensors'][name]['shape']} needs {size / 2**20:.0f} MiB, over "
                         f"the {profile.name} profile's {profile.max_buffer_bytes / 2**20:.0f} MiB buffer limit; build "
                         f"at a lower resolution or batch.")
    weights = sum(t["bytes"] for t in plan["tensors"].values() if t["storage"] == "weight")
    total = weights + plan["arena_bytes"]
    if total > profile.memory_budget_bytes:
        raise ModelError(f"{where}: weights ({weights / 2**20:.0f} MiB) and arena ({plan['arena_bytes'] / 2**20:.0f} "
                         f"MiB) exceed the {profile.name} profile's {profile.memory_budget_bytes / 2**30:.1f} GiB "
                         f"budget; build at a lower resolution or batch, or quantize for another target.")


def edgegen_kernels(plan: dict) -> dict[str, int]:
    """How many launches run each of edgegen's own kernels (by pattern name)."""
    from edgegen.kernels import attention, group_norm, winograd

    names = {group_norm.PREFIX: group_norm.NAME, attention.FLASH_PREFIX: attention.FLASH,
             winograd.PREFIX + "_input": winograd.NAME}
    counts: dict[str, int] = {}
    for launch in plan["launches"]:
        for prefix, pattern in names.items():
            if prefix in launch["program"]:
                counts[pattern] = counts.get(pattern, 0) + 1
    return counts


# --- one TIR function: lower, read its launches, codegen, guard -----------------------------------------------

def _guarded_program(name: str, func, unscheduled, tvm_target: dict, limits: Limits, language: str,
                     guard: list, half: bool = False, arithmetic: bool = False) -> dict:
    """Compile one function's kernels; when one breaks a device limit, reschedule with half the
    workgroup and local memory budget, then with dlight's fallback rule alone; record why."""
    from edgegen.kernels import gpu_rules

    program = _compile_function(name, func, tvm_target, language, half, arithmetic)
    problems = _violations(program, limits, language)
    attempts = [(f"workgroup ≤ {limits.max_workgroup_size // 2}, local memory ≤ {limits.local_memory_bytes // 2} B",
                 {"max_num_threads": limits.max_workgroup_size // 2,
                  "max_threads_per_block": limits.max_workgroup_size // 2,
                  "max_shared_memory_per_block": limits.local_memory_bytes // 2}, False),
                ("dlight's fallback schedule", {"max_num_threads": limits.max_workgroup_size // 2,
                                                 "max_threads_per_block": limits.max_workgroup_size // 2}, True)]
    for what, tighter, fallback_only in attempts:
        if not problems:
            return program
        retry = gpu_rules.reschedule(unscheduled, {**tvm_target, **tighter}, HOST, fallback_only)
        before = problems
        program = _compile_function(name, retry, tvm_target, language, half, arithmetic)
        problems = _violations(program, limits, language)
        guard.append({"function": name, "violations": before, "fallback": what,
                      "result": "ok" if not problems else "; ".join(problems)})
    if problems:
        raise EdgegenError(f"kernel {name}: {'; '.join(problems)} on this device profile, even with "
                           f"dlight's fallback schedule; the artifact was not written.")
    return program


def _compile_function(name: str, func, tvm_target: dict, language: str, half: bool = False,
                      arithmetic: bool = False) -> dict:
    """One TIR function compiled for the target: {"source": its device code (and "fallback_source", the
    float32-arithmetic one, where `arithmetic` on OpenCL), "kernels": [{"name",
    "params": [["param", i] | ["scratch", i] | ["scalar", dtype, value], ...], "launch": {tag: extent},
    "scratch_bytes", "device_params"}, ...]} (the launches in the order its host code makes them)."""
    tvm = import_tvm_compiler()
    from tvm import tirx

    tir_build = importlib.import_module("tvm.tirx.build")    # the module; tvm.tirx.build is its function
    target = tvm.target.Target(tvm_target, host=HOST)
    mod = tvm.IRModule({name: func.with_attr("global_symbol", name)})
    mod = tirx.transform.BindTarget(target)(mod)
    pipeline = tvm.tirx.get_default_tir_pipeline(target)
    if isinstance(pipeline, tuple):
        pipeline, _, finalize_device = pipeline
    else:      # the Adreno pipeline comes alone; its device code is finalized as every GPU's
        finalize_device = importlib.import_module("tvm.s_tir.pipeline").finalize_device_passes
    split = _until_host_device_split(pipeline, mod)
    host = split[name]
    kernels = _launches(name, host, split)
    full = tvm.transform.Sequential([tirx.transform.MakePackedAPI(), tirx.transform.FP8StorageLegalize(),
                                     tirx.transform.BF16StorageLegalize()])(split)
    _, devices = tir_build.split_host_device_mods(full)
    variants = {"source": arithmetic}
    if arithmetic and language == "opencl":
        variants["fallback_source"] = False
    program = {"kernels": kernels}
    finalized = [(dev_target, finalize_device()(dev_mod)) for dev_target, dev_mod in devices.items()]
    for key, fp16_arithmetic in variants.items():
        sources = []
        for dev_target, device in finalized:
            if half:
                device = half_storage.rewrite_module(device, language, fp16_arithmetic)
            sources.append(tir_build.codegen_build(device, dev_target).inspect_source())
        program[key] = _finish_source("\n".join(sources), language, half and not fp16_arithmetic)
    return program


def _finish_source(source: str, language: str, half_storage_only: bool) -> str:
    if half_storage_only and language == "opencl":
        source = half_storage.opencl_source(source)
    if language == "webgpu":
        # every tensor lives in one arena buffer, and WebGPU forbids binding a buffer read-only and
        # writable in the same dispatch: the arena is bound read_write throughout
        source = source.replace("var<storage, read> ", "var<storage, read_write> ")
        source = _wgsl_specials(source)
    return source


_WGSL_SPECIAL = re.compile(r"(?<![\w.])(inff|nanf|infh|nanh)\b")
_WGSL_BITS = {"inff": "bitcast<f32>(edgegen_inf_bits)", "nanf": "bitcast<f32>(edgegen_nan_bits)",
              "infh": "f16(bitcast<f32>(edgegen_inf_bits))", "nanh": "f16(bitcast<f32>(edgegen_nan_bits))"}
_WGSL_BITS_DECLS = "var<private> edgegen_inf_bits: u32 = 0x7f800000u;\nvar<private> edgegen_nan_bits: u32 = 0x7fc00000u;\n"


def _wgsl_specials(source: str) -> str:
    """TVM writes infinity and NaN as `inff` / `nanf` (f16: `infh`), which WGSL lacks. Spelt as a bitcast
    of a constant they would be a constant expression, and WGSL makes a constant infinity or NaN a shader
    creation error (Chrome's compiler enforces it; wgpu's does not): they are read from private variables."""
    spelt = _WGSL_SPECIAL.sub(lambda m: _WGSL_BITS[m.group(1)], source)
    if spelt == source:
        return source
    lines = spelt.splitlines(keepends=True)
    directives = 0        # `enable f16;` and other directives must stay first
    while directives < len(lines) and re.match(r"\s*(enable|requires|diagnostic)\b|\s*(//.*)?$", lines[directives]):
        directives += 1
    return "".join(lines[:directives]) + _WGSL_BITS_DECLS + "".join(lines[directives:])


def _until_host_device_split(pipeline, mod):
    """TVM's TIR pipeline for the target up to SplitHostDevice: its last three passes (the packed
    calling convention and fp8/bf16 storage) are skipped, so the host function still takes the
    original buffers and names each kernel launch plainly (`call_ffi_kernel`)."""
    tvm = import_tvm_compiler()
    from tvm.tirx import transform as tt

    names = ("MakePackedAPI", "FP8StorageLegalize", "BF16StorageLegalize")
    saved = {n: getattr(tt, n) for n in names}
    try:
        for n in names:
            setattr(tt, n, lambda *a, **k: tvm.transform.module_pass(lambda m, c: m, opt_level=0, name="skipped"))
        return pipeline(mod)
    finally:
        for n, p in saved.items():
            setattr(tt, n, p)


def _walk(node, visit) -> None:
    """Visit every statement and call below a lowered host function's body (the few node kinds
    a host function holds: sequences, buffer declarations, attributes, conditionals, calls)."""
    from tvm import tirx

    visit(node)
    if isinstance(node, tirx.SeqStmt):
        for s in node.seq:
            _walk(s, visit)
        return
    for attr in ("body", "then_case", "else_case"):
        child = getattr(node, attr, None)
        if isinstance(child, tirx.Stmt):
            _walk(child, visit)
    if isinstance(node, tirx.Evaluate):
        visit(node.value)


def _launches(name: str, host, split) -> list[dict]:
    """The kernel launches in a host function (lowered up to the host/device split): which
    parameter (or function-local scratch buffer) each buffer argument is, the scalar arguments,
    and the grid/workgroup extents."""
    import tvm
    from tvm import tirx

    declared: list = []     # (buffer var, the expression its data is)
    scratch: list = []      # (buffer var, bytes)
    launches: list[dict] = []

    def source_of(expr):
        """A kernel argument `buffer_data(b)` followed through declarations to a parameter or scratch."""
        while isinstance(expr, tvm.ir.expr.Call) and getattr(expr.op, "name", "") == "tirx.buffer_data":
            var = expr.args[0]
            for i, p in enumerate(host.params):
                if p.same_as(var):
                    return ["param", i]
            for i, (b, _) in enumerate(scratch):
                if b.same_as(var):
                    return ["scratch", i]
            found = [d for b, d in declared if b.same_as(var)]
            if not found:
                break
            expr = found[0]
        return None

    def visit(node):
        if isinstance(node, tirx.DeclBuffer) and getattr(node, "data", None) is not None:
            declared.append((node.buffer, node.data))
        if isinstance(node, tirx.AllocBuffer) and str(node.buffer.ty.storage_scope) in ("global", ""):
            ty = node.buffer.ty
            scratch.append((node.buffer, int(np.prod([int(d) for d in ty.shape])) * dtype_bytes(str(ty.dtype))))
        if isinstance(node, tvm.ir.expr.Call) and getattr(node.op, "name", "") == "tirx.call_ffi_kernel":
            kernel = str(node.args[0].value)
            tags = [str(t) for t in getattr(node.attrs, "launch_params", None) or []]
            args = list(node.args[1:])
            values, extents = args[:len(args) - len(tags)], args[len(args) - len(tags):]
            params = []
            for v in values:
                where = source_of(v)
                if where is not None:
                    params.append(where)
                elif isinstance(v, (tirx.IntImm, tirx.FloatImm)):
                    params.append(["scalar", str(v.dtype), v.value])
                else:
                    raise UnsupportedOpError(f"kernel {kernel} of {name}: argument {v} is not static; "
                                             f"GPU plans need static shapes")
            launch = {}
            for tag, e in zip(tags, extents):
                if tag not in _LAUNCH_TAGS:
                    raise UnsupportedOpError(f"kernel {kernel} of {name}: launch parameter {tag!r} is not supported")
                if not isinstance(e, tirx.IntImm):
                    raise UnsupportedOpError(f"kernel {kernel} of {name}: {tag} extent {e} is not static")
                launch[tag] = int(e.value)
            launches.append({"name": kernel, "params": params, "launch": launch})

    _walk(host.body, visit)
    for k in launches:
        k["scratch_bytes"] = [size for _, size in scratch]
        k["device_params"] = len(split[k["name"]].params)
    return launches


_TYPE_BYTES = {"float": 4, "f32": 4, "int": 4, "i32": 4, "uint": 4, "u32": 4, "half": 2, "f16": 2,
               "char": 1, "uchar": 1, "short": 2, "ushort": 2, "long": 8, "ulong": 8, "double": 8}
_LOCAL = {
    "opencl": re.compile(r"__local\s+(\w+?)(\d*)\s+\w+\[(\d+)\]"),
    "metal": re.compile(r"threadgroup\s+(\w+?)(\d*)\s+\w+\[(\d+)\]"),
    "webgpu": re.compile(r"var<workgroup>\s+\w+\s*:\s*array<(?:vec(\d)<)?(\w+?)>?,\s*(\d+)>"),
}


def local_memory_bytes(source: str, language: str) -> int:
    """Bytes of workgroup-local memory a kernel source declares."""
    total = 0
    for m in _LOCAL[language].finditer(source):
        if language == "webgpu":
            lanes, ty, count = m.group(1), m.group(2), m.group(3)
        else:
            ty, lanes, count = m.group(1), m.group(2), m.group(3)
        total += _TYPE_BYTES.get(ty, 4) * int(lanes or 1) * int(count)
    return total


def _violations(program: dict, limits: Limits, language: str) -> list[str]:
    problems = []
    for k in program["kernels"]:
        dims = [k["launch"].get(f"threadIdx.{a}", 1) for a in "xyz"]
        threads = int(np.prod(dims))
        if threads > limits.max_workgroup_size:
            problems.append(f"{k['name']}: workgroup of {threads} threads > {limits.max_workgroup_size}")
        for axis, d, cap in zip("xyz", dims, limits.max_workgroup_dims):
            if d > cap:
                problems.append(f"{k['name']}: workgroup {axis} = {d} > {cap}")
        if k["device_params"] > limits.max_kernel_args:
            problems.append(f"{k['name']}: {k['device_params']} kernel arguments > {limits.max_kernel_args}")
    local = local_memory_bytes(program["source"], language)
    if local > limits.local_memory_bytes:
        problems.append(f"local memory {local} B > {limits.local_memory_bytes} B")
    if len(program["source"].encode()) > limits.max_program_bytes:
        problems.append(f"program of {len(program['source'].encode())} B > {limits.max_program_bytes} B")
    return problems
