"""Import a captured graph into TVM Relax and compile it for a target."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

import numpy as np

from edgegen.core.errors import EdgegenError, MissingDependencyError, UnsupportedOpError
from edgegen.core.quiet import warnings_hidden
from edgegen.core.specs import TensorSpec

# torch's ExportedProgram.run_decompositions deep-copies its own tree specs, and copying a LeafSpec
# warns that LeafSpec is deprecated (torch 2.13): nothing a caller can change.
TORCH_LEAFSPEC_COPY = (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def import_tvm_compiler():
    """The full TVM (compiler included), or an error that says why it is not there."""
    from edgegen.runtimes.tvm_import import size_thread_pool

    size_thread_pool()      # the build's parity runs start TVM's pool; later loads in this process share it
    tvm = sys.modules.get("tvm")
    if tvm is not None:
        from tvm.base import _RUNTIME_ONLY

        if _RUNTIME_ONLY:
            raise EdgegenError(
                "TVM was imported without its compiler in this process (edgegen.runtimes loads the runtime "
                "library alone); build before loading artifacts, or set EDGEGEN_TVM_RUNTIME_ONLY=0."
            )
        return tvm
    try:
        import tvm
        from tvm import relax  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            "building needs apache-tvm: `pip install 'edgegen[build]'` (apache-tvm==0.27.0.post1, "
            "apache-tvm-ffi==0.1.14.post0)."
        ) from exc
    return tvm


@dataclass
class Lowered:
    module: object                 # Relax IRModule with weights as trailing parameters of `main`
    weight_specs: list[TensorSpec]
    weights: dict[str, np.ndarray]
    sources: dict[str, str] = field(default_factory=dict)   # weight name -> the torch parameter it came from


def _safe_name(name: str, taken: set) -> str:
    base = re.sub(r"[^A-Za-z0-9_.]", "_", name) or "w"
    out, i = base, 1
    while out in taken:
        out, i = f"{base}_{i}", i + 1
    taken.add(out)
    return out


def to_relax(exported_program, num_inputs: int, what: str) -> Lowered:
    """Translate a torch ExportedProgram to Relax, weights detached as named parameters."""
    import_tvm_compiler()
    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    try:
        with warnings_hidden(TORCH_LEAFSPEC_COPY):
            mod = from_exported_program(exported_program, keep_params_as_input=True,
                                        unwrap_unit_return_tuple=True)
    except AssertionError as exc:
        match = re.search(r"Unsupported function types (\[.*\])", str(exc))
        if not match:
            raise
        raise UnsupportedOpError(
            f"{what}: operators {match.group(1)} cannot be lowered by TVM's torch frontend. Replace them in "
            f"the model (e.g. with an equivalent built from supported ops) or pick a target that supports them."
        ) from exc
    mod, params = relax.frontend.detach_params(mod)
    relax_params = mod["main"].params[num_inputs:]
    values = params.get("main", [])
    if len(relax_params) != len(values):
        raise EdgegenError(f"{what}: {len(relax_params)} weight parameters but {len(values)} values")
    mod = _clip_gather_indices(_drop_redundant_broadcasts(mod))
    # a component's wrapper may hold modules it never calls (the VAE encoder beside the decoder)
    used = set(relax.analysis.free_vars(mod["main"].body))
    kept = [(v, value) for v, value in zip(relax_params, values) if v in used]
    if len(kept) < len(relax_params):
        main = mod["main"]
        mod.update_func(mod.get_global_var("main"), relax.Function(
            list(main.params[:num_inputs]) + [v for v, _ in kept], main.body, main.ret_ty, main.is_pure, main.attrs))
    taken: set = set()
    specs, weights, sources = [], {}, {}
    fqn = dict(exported_program.graph_signature.inputs_to_parameters)
    fqn.update(exported_program.graph_signature.inputs_to_buffers)
    for var, value in kept:
        name = _safe_name(var.name, taken)
        arr = value.numpy()
        weights[name] = arr
        specs.append(TensorSpec.of(name, arr))
        if var.name in fqn:
            sources[name] = fqn[var.name]
    return Lowered(mod, specs, weights, sources)


def _dims(expr) -> list | None:
    values = getattr(getattr(expr.ty, "shape", None), "values", None)
    return None if values is None else [int(d) if hasattr(d, "value") else d for d in values]


def _drop_redundant_broadcasts(mod):
    """torch's matmul on a non-contiguous input exports as matmul(broadcast_to(a), broadcast_to(w.T)):
    the weight copied once per batch row. Relax's matmul broadcasts by itself, so a 2-D operand is
    passed as it is, and a broadcast to the shape the tensor already has is dropped."""
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    x, shape = wildcard(), wildcard()
    broadcast = is_op("relax.broadcast_to")(x, shape)
    a, b = wildcard(), wildcard()
    operand = is_op("relax.broadcast_to")(b, wildcard())
    matmul = is_op("relax.matmul")(a, operand)

    def same_shape(expr, matches):
        return matches[x] if _dims(matches[x]) == _dims(expr) and _dims(expr) is not None else expr

    def weight_2d(expr, matches):
        dims = _dims(matches[b])
        return relax.op.matmul(matches[a], matches[b], out_dtype=expr.attrs.out_dtype) \
            if dims is not None and len(dims) == 2 else expr

    main = rewrite_call(broadcast, same_shape, rewrite_call(matmul, weight_2d, mod["main"]))
    mod.update_func(mod.get_global_var("main"), main)
    return mod


def _clip_gather_indices(mod):
    """torch's frontend emits take (embedding lookups, index_select) in TVM's "fast" mode, which
    reads out of bounds on an index past the end; "clip" clamps the index, for one min/max each."""
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    def clip(expr, matches):
        if expr.attrs.mode != "fast":
            return expr
        return relax.op.take(expr.args[0], expr.args[1], expr.attrs.axis, mode="clip")

    mod.update_func(mod.get_global_var("main"), rewrite_call(is_op("relax.take")(wildcard(), wildcard()), clip,
                                                              mod["main"]))
    return mod


def kernel_table(mod, flops: dict | None = None) -> list[dict]:
    """Each kernel (a TIR function after fusion) with its calls from main, FLOPs per call, and the
    bytes of its arguments and results (what one call reads and writes at least; `packed_bytes` of
    them are integer arguments: packed weights, ids), in order of first call. `flops` (name -> FLOPs)
    overrides the count taken from `mod`."""
    tvm = import_tvm_compiler()
    from tvm import relax, tirx
    from tvm.s_tir.analysis import estimate_tir_flops

    calls: dict[str, dict] = {}

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", None) == "relax.call_tir":
            name = expr.args[0].name_hint
            args = expr.args[1].fields
            packed = sum(_type_bytes(f.ty) for f in args if not str(getattr(f.ty, "dtype", "")).startswith("float"))
            entry = calls.setdefault(name, {"kernel": name, "calls": 0,
                                            "bytes": _type_bytes(expr.args[1].ty) + _type_bytes(expr.ty)
                                            - _rows_not_gathered(name, args),
                                            "packed_bytes": packed, "arg_shapes": [_shape(f.ty) for f in args]})
            entry["calls"] += 1

    relax.analysis.post_order_visit(mod["main"].body, visit)
    for name, entry in calls.items():
        if flops is not None and name in flops:
            entry["flops"] = flops[name]
            continue
        func = mod[name]
        try:
            entry["flops"] = float(estimate_tir_flops(tvm.IRModule({name: func}))) \
                if isinstance(func, tirx.PrimFunc) else 0.0
        except Exception:  # noqa: BLE001 - TVM cannot count some loop forms; count them as memory-only
            entry["flops"] = 0.0
    return list(calls.values())


def _rows_not_gathered(name: str, args) -> int:
    """Bytes of a gather's table (an embedding: `take` of rows by integer ids) that one call does not
    read: it reads one row per id, not the whole table (a 49408-row token table for 154 ids)."""
    if not re.search(r"(^|_)take\d*($|_)", name):
        return 0
    if "decode" in name:
        return _packed_rows_not_gathered(args)
    ids = [f.ty for f in args if not str(getattr(f.ty, "dtype", "")).startswith("float")]
    if len(ids) != 1:
        return 0
    count = int(np.prod(_shape(ids[0]))) if _shape(ids[0]) else 1
    unread = 0
    for f in args:
        shape = _shape(f.ty)
        if str(getattr(f.ty, "dtype", "")).startswith("float") and len(shape) >= 2 and shape[0] > count:
            unread += _type_bytes(f.ty) * (shape[0] - count) // shape[0]
    return unread


def _packed_rows_not_gathered(args) -> int:
    """_rows_not_gathered for a packed table decoded in its gather (kernels/dequant.py): the ids are the
    int32/int64 argument, and every packed array that holds a whole number of rows per table row
    (codes, per-row scales) is read for the looked-up rows only."""
    ids = [f.ty for f in args if str(getattr(f.ty, "dtype", "")) in ("int32", "int64")]
    tables = [f.ty for f in args if str(getattr(f.ty, "dtype", "")) not in ("int32", "int64")]
    rows = max((_shape(t)[0] for t in tables if len(_shape(t)) >= 2), default=0)
    if len(ids) != 1 or not rows:
        return 0
    count = int(np.prod(_shape(ids[0]))) if _shape(ids[0]) else 1
    if rows <= count:
        return 0
    return sum(_type_bytes(t) * (rows - count) // rows for t in tables
               if _shape(t) and int(np.prod(_shape(t))) % rows == 0)


def _shape(ty) -> list[int]:
    values = getattr(getattr(ty, "shape", None), "values", None)
    return [int(d) for d in values] if values is not None else []


def _type_bytes(ty) -> int:
    """Bytes held by a Relax value of type `ty` (a tensor or a tuple of them) with static shape."""
    fields = getattr(ty, "fields", None)
    if fields is not None:
        return sum(_type_bytes(f) for f in fields)
    shape = getattr(getattr(ty, "shape", None), "values", None)
    if shape is None:
        return 0
    bits = int("".join(c for c in str(ty.dtype) if c.isdigit()) or 32)
    return int(np.prod([int(d) for d in shape])) * max(bits // 8, 1)


def cpu_pipeline(target, kernels: list | None = None, reference: bool = False, attention: list | None = None):
    """TVM's CPU pipeline with edgegen's schedule rules applied after operator fusion, and
    exp/softmax/erf/tanh (and the sigmoid of SiLU, written with exp) replaced by their polynomial
    forms, which vectorize (libm's do not); unmasked attention's safe-softmax guard dropped, its
    scale folded onto the scores and the transposes that cancel around it merged, and large
    attention calls run by the flash kernel (kernels/cpu_attention.py);
    the build's parity gate measures what that costs in accuracy. `kernels`, when given,
    receives kernel_table() of the fused module; `attention`, one choice per attention call
    site, with its reason. `reference` keeps the same graph passes and
    fusion but drops edgegen's schedule rule, fast math and flash kernel: TVM's plain loops and
    libm, the side that layer bisection compares an artifact's kernels with."""
    sites = [] if attention is None else attention     # before `attention` names the module below
    tvm = import_tvm_compiler()
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.s_tir import dlight

    from edgegen.kernels import attention, attention_scale, cpu_attention, dequant, gelu, permute_merge, sigmoid
    from edgegen.kernels.cpu_loops import make_rule

    @tvm.transform.module_pass(opt_level=0, name="EdgegenCPUPipeline")
    def _pipeline(mod, _ctx):
        with target:
            count, table = ([], []) if kernels is None else ([p] for p in _record(kernels, sites))
            fast = [] if reference else [relax.transform.FastMathTransform()]
            schedule = [] if reference else [dlight.ApplyDefaultSchedule(make_rule())]
            flash = [] if reference else [cpu_attention.make_fusion_pass(sites)]
            # the table is taken once reshapes that are views stop being kernels
            lowering = cpu.dataflow_lower_passes(target)
            passes = (cpu.library_dispatch_passes(target) + [gelu.make_pass(), sigmoid.make_pass(),
                                                               attention.make_pass(), permute_merge.make_pass(),
                                                               attention_scale.make_pass()] + flash + fast
                      + [dequant.make_fusion_pass()]
                      + cpu.legalize_passes(target) + count + schedule + lowering[:1] + table + lowering[1:]
                      + cpu.finalize_passes(target))
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def _record(kernels: list, attention: list) -> tuple:
    """Two passes: FLOPs counted on the fused kernels before scheduling (a schedule's rfactor and
    unrolling change what TVM counts; the flash kernels' from their `attention` sites), then the
    table once reshapes that are views stop being kernels."""
    tvm = import_tvm_compiler()
    from edgegen.kernels import cpu_attention

    flops: dict[str, float] = {}

    @tvm.transform.module_pass(opt_level=0, name="EdgegenKernelFlops")
    def _count(mod, _ctx):
        known = {site["function"]: cpu_attention.flops(site) for site in attention if site.get("function")}
        flops.update({k["kernel"]: k["flops"] for k in kernel_table(mod, known)})
        return mod

    @tvm.transform.module_pass(opt_level=0, name="EdgegenKernelTable")
    def _table(mod, _ctx):
        kernels.extend(kernel_table(mod, flops))
        return mod

    return _count, _table


SCHEDULE_RULES = {"llvm": ["cpu-parallel-vectorize"]}


def resolve_target(tvm_target: dict) -> dict:
    """The target dict with "mcpu": "host" replaced by the build machine's CPU model."""
    if tvm_target.get("mcpu") != "host":
        return dict(tvm_target)
    import_tvm_compiler()
    from tvm.target import codegen

    return {**tvm_target, "mcpu": codegen.llvm_get_system_cpu()}


def compile_module(module, tvm_target: dict, kernels: list | None = None, reference: bool = False,
                   attention: list | None = None):
    """Compile a Relax module for a (resolved) target; return the executable. `kernels`, when
    given, receives the fused module's kernel table (names, calls, FLOPs, bytes); `attention`,
    the kernel chosen for each attention call site and why."""
    tvm = import_tvm_compiler()
    target = tvm.target.Target(tvm_target)
    if target.kind.name != "llvm":
        raise EdgegenError(f"no compile pipeline for target kind {target.kind.name!r} yet")
    return tvm.compile(module, target=target, relax_pipeline=cpu_pipeline(target, kernels, reference, attention))


def run_library(library_path, inputs: list[np.ndarray], weights: list[np.ndarray]) -> list[np.ndarray]:
    """Load an exported library and run it in this process (the build's parity gate)."""
    tvm = import_tvm_compiler()
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(library_path)), tvm.cpu())
    args = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in list(inputs) + list(weights)]
    out = vm["main"](*args)
    outs = [out] if hasattr(out, "numpy") else list(out)
    return [o.numpy() for o in outs]


def cpu_weight_layouts(lowered: Lowered, decisions: list | None = None, keep=frozenset(),
                       winograd: bool = True) -> Lowered:
    """The CPU kernels' weight transforms, made once at build time: linear weights stored
    transposed as the GEMM reads them (kernels/weight_layout.py), 3x3 convolutions' weights
    Winograd-transformed (kernels/cpu_winograd.py). `decisions` receives one entry per layer, with
    its reason. Packed (quantized) weights are not float32 and keep their layout and kernel;
    `keep` names float32 weights to leave as they are (the layers a quantization report names);
    winograd=False keeps 3x3 convolutions' weights as they are (a Winograd-transformed weight holds
    16/9 to 4 times the bytes: a memory plan that loads per phase or cuts chunks does without it)."""
    import_tvm_compiler()
    from edgegen.kernels import weight_layout, cpu_winograd

    weights, specs = dict(lowered.weights), list(lowered.weight_specs)
    found: list = []
    module = weight_layout.rewrite(lowered.module, weights, specs, found, set(keep))
    if winograd:
        module = cpu_winograd.rewrite(module, weights, specs, found, set(keep))
    if decisions is not None:
        decisions.extend(found)
    sources = {n: s for n, s in lowered.sources.items() if n in weights}
    for d in found:   # a transformed weight comes from the same torch parameter
        made = [n for n in weights if n.rpartition(".")[0] == d["weight"] and n not in lowered.weights]
        sources.update({n: lowered.sources[d["weight"]] for n in made if d["weight"] in lowered.sources})
    return Lowered(module, specs, weights, sources)
