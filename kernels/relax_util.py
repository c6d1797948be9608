"""Helpers for kernels/ and converters/: a module pass from an expression rewriter, and cheap
stack inspection while TVMScript parses."""

from __future__ import annotations

import contextlib
import inspect
import linecache
import sys


def function_pass(rewriter_class, name: str):
    """A module pass applying `rewriter_class(mod)` (a relax PyExprMutator) to every Relax function."""
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod, _ctx):
        rewriter = rewriter_class(mod)
        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
        return rewriter.builder_.get()

    return _pass


@contextlib.contextmanager
def quick_stack():
    """Make `inspect.stack()` cheap while TVMScript is parsed. TVMScript's @T.prim_func calls it
    once per function to find enclosing frames, and inspect resolves each frame's module by
    scanning sys.modules, which misses for TVM's Cython frames and repeats the scan. Importing
    TVM's tensor intrinsics (dlight's Metal GEMM rule does) parses 528 functions: 230 s under a
    Relax pass here. The frames, names and the one source line TVMScript reads stay the same."""
    saved = inspect.stack

    def stack(context: int = 1):
        frames, frame = [], sys._getframe(1)
        while frame is not None:
            filename, lineno = frame.f_code.co_filename, frame.f_lineno
            line = linecache.getline(filename, lineno)
            frames.append(inspect.FrameInfo(frame, filename, lineno, frame.f_code.co_name,
                                            [line] if line else None, 0 if line else None))
            frame = frame.f_back
        return frames

    inspect.stack = stack
    try:
        yield
    finally:
        inspect.stack = saved
