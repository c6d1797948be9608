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


class WeightRewrite:
    """Bookkeeping for a graph rewrite that transforms weights at build time: `main`'s trailing
    parameters are the weights (`weight_specs`, values in `weights`); a rewrite replaces one
    weight parameter by new ones with new values, and `finish` rebuilds `main` and updates
    `weights` and `weight_specs` in place."""

    def __init__(self, module, weights: dict, weight_specs: list):
        from tvm import relax

        self.module = module.clone()
        self.main = self.module["main"]
        self.weights, self.specs = weights, weight_specs
        self.params = list(self.main.params[len(self.main.params) - len(weight_specs):])
        self.builder = relax.BlockBuilder(self.module)
        self.replaced: dict[int, list] = {}      # weight index -> [(new var, value), ...]
        self.uses: dict[int, int] = {}

        def count(e):
            i = self.index_of(e)
            if i is not None:
                self.uses[i] = self.uses.get(i, 0) + 1

        relax.analysis.post_order_visit(self.main.body, count)

    def index_of(self, expr) -> int | None:
        """Which weight `expr` is (None: not a weight parameter)."""
        from tvm import relax

        if not isinstance(expr, relax.Var):
            return None
        return next((i for i, p in enumerate(self.params) if p.same_as(expr)), None)

    def replace(self, index: int, new: list) -> list:
        """Replace weight `index` by [(suffix, array), ...]; returns the new parameter vars."""
        from tvm import relax

        name = self.specs[index].name
        made = [(relax.Var(f"{name}.{suffix}", relax.TensorType(list(a.shape), str(a.dtype))), a) for suffix, a in new]
        self.replaced[index] = made
        return [v for v, _ in made]

    def finish(self, body):
        """The module with `body` (main after rewrite_call) as main, the replaced weights swapped in."""
        from tvm import relax

        from edgegen.core.specs import TensorSpec

        if not self.replaced:
            return self.module
        main = self.main
        params = list(main.params[:len(main.params) - len(self.params)])
        specs = []
        for i, p in enumerate(self.params):
            if i not in self.replaced:
                params.append(p)
                specs.append(self.specs[i])
                continue
            del self.weights[self.specs[i].name]
            for var, value in self.replaced[i]:
                params.append(var)
                self.weights[var.name] = value
                specs.append(TensorSpec.of(var.name, value))
        self.specs[:] = specs
        self.builder.update_func(self.module.get_global_var("main"),
                                 relax.Function(params, body.body, body.ret_ty, body.is_pure, body.attrs))
        return self.builder.get()
