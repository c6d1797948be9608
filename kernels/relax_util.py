"""A module pass from an expression rewriter: what each graph rewrite of kernels/ and converters/ needs."""

from __future__ import annotations


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
