"""The GPU kernel rules, in order (first match wins): edgegen's own, then TVM dlight's GPU rules.

`fusion_passes` substitutes edgegen's kernels into the Relax graph (by pattern name,
`edgegen.*`) before TVM's operator fusion; `apply_schedule` schedules every TIR function.
"""

from __future__ import annotations


def fusion_passes(max_threads: int, local_memory_bytes: int, decisions: list) -> list:
    """Graph rewrites into edgegen's kernels; `decisions` receives one entry per attention call site."""
    from . import attention, group_norm

    return [attention.make_pass(), attention.make_fusion_pass(max_threads, local_memory_bytes, decisions),
            group_norm.make_fusion_pass()]


def rules(fallback_only: bool = False) -> list:
    from tvm.s_tir import dlight as dl

    from . import group_norm

    # the flash kernel arrives scheduled (tirx.is_scheduled): dlight leaves it as it is
    if fallback_only:
        return [dl.gpu.Fallback()]
    return [group_norm.make_rule(), dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
            dl.gpu.GeneralReduction(), dl.gpu.Fallback()]


def apply_schedule(target, fallback_only: bool = False):
    import importlib

    from tvm.s_tir import dlight as dl

    from .relax_util import quick_stack

    if target.kind.name == "metal":
        # dlight's Metal GEMM rule imports TVM's tensor intrinsics (hundreds of TVMScript functions)
        # from inside the pass; imported here first, with cheap stack inspection, it takes seconds
        with quick_stack():
            importlib.import_module("tvm.s_tir.tensor_intrin")
    return dl.ApplyDefaultSchedule(*rules(fallback_only))


def reschedule(func, tvm_target: dict, host: dict, fallback_only: bool):
    """`func` (unscheduled) scheduled again for a target with other limits."""
    import tvm

    target = tvm.target.Target(tvm_target, host=host)
    mod = tvm.IRModule({"main": func})
    with target:
        mod = apply_schedule(target, fallback_only)(mod)
    return mod["main"]
