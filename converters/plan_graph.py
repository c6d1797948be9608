"""A GPU component's Relax `main`, after fusion and scheduling, read as the launch plan's graph:
named tensors (inputs, weights, constants, kernel outputs, views), the kernel calls in order,
and the arena those tensors live in (lifetimes over launches, planned by core.launch_plan)."""

from __future__ import annotations

import numpy as np

from edgegen.core.errors import EdgegenError, UnsupportedOpError
from edgegen.core.launch_plan import LANGUAGES, PLAN_FORMAT, PLAN_VERSION, Interval, dtype_bytes, plan_arena


class PlanGraph:
    """main after fusion and scheduling, read as a list of kernel calls over named tensors."""

    def __init__(self, main, num_inputs: int, input_names: list[str], weight_specs, output_names: list[str]):
        from tvm import relax

        self.tensors: dict[str, dict] = {}
        self.calls: list[tuple[str, list[str]]] = []        # (function, [args..., outputs...])
        self.constants: dict[str, np.ndarray] = {}
        self._name: dict = {}
        self._tuples: list = []
        params = list(main.params)
        for var, n in zip(params[:num_inputs], input_names):
            self._add(var, n, {"storage": "input"})
        for var, spec in zip(params[num_inputs:], weight_specs):
            self._add(var, spec.name, {"storage": "weight"})
        body = main.body
        for block in body.blocks:
            for binding in block.bindings:
                self._binding(binding, relax)
        result = body.body
        bound = [names for v, names in self._tuples if v.same_as(result)]
        outs = list(result.fields) if isinstance(result, relax.Tuple) else [result]
        if bound:
            outs = bound[0]
        if len(outs) != len(output_names):
            raise EdgegenError(f"main returns {len(outs)} tensors, the component names {len(output_names)} outputs")
        self.outputs = []
        for var, n in zip(outs, output_names):
            self.outputs.append(var if isinstance(var, str) else self._ref(var, relax))
            self.tensors[self.outputs[-1]]["output_name"] = n
        self.inputs = input_names

    def _add(self, var, name: str, entry: dict, ty=None) -> str:
        ty = var.ty if ty is None else ty
        shape = [int(d) for d in ty.shape.values]
        dtype = str(ty.dtype)
        self.tensors[name] = {"shape": shape, "dtype": dtype,
                              "bytes": int(np.prod(shape, dtype=np.int64)) * dtype_bytes(dtype), **entry}
        if var is not None:
            self._name[var] = name
        return name

    def _ref(self, expr, relax) -> str:
        import tvm

        if isinstance(expr, tvm.ir.expr.Constant):
            name = f"const.{len(self.constants)}"
            value = expr.value.numpy()
            value = value.reshape(1) if value.ndim == 0 else value    # the weights file has no 0-d tensors
            self.constants[name] = value
            self.tensors[name] = {"shape": list(value.shape), "dtype": str(value.dtype), "bytes": int(value.nbytes),
                                  "storage": "weight"}
            return name
        if expr not in self._name:
            raise UnsupportedOpError(f"the GPU plan cannot place {type(expr).__name__} {expr}")
        return self._name[expr]

    def _binding(self, binding, relax) -> None:
        var, value = binding.var, binding.value
        fresh = f"t{len(self.tensors)}"
        if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.call_tir":
            args = [self._ref(a, relax) for a in value.args[1].fields]
            if isinstance(var.ty, relax.TupleType):     # several outputs (a split): one tensor each
                outs = [self._add(None, f"{fresh}.{i}", {"storage": "arena"}, ty) for i, ty in enumerate(var.ty.fields)]
                self._tuples.append((var, outs))
            else:
                outs = [self._add(var, fresh, {"storage": "arena"})]
            self.calls.append((value.args[0].name_hint, args + outs))
        elif isinstance(value, relax.Tuple):        # a tuple built of tensors (several outputs): a name each
            self._tuples.append((var, [self._ref(f, relax) for f in value.fields]))
        elif isinstance(value, relax.TupleGetItem):
            fields = [outs for v, outs in self._tuples if v.same_as(value.tuple_value)]
            if not fields:
                raise UnsupportedOpError(f"the GPU plan cannot take item {value.index} of {value.tuple_value}")
            self._name[var] = fields[0][value.index]
        elif isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.reshape":
            self._add(var, fresh, {"storage": "view", "of": self._ref(value.args[0], relax)})
        elif isinstance(value, relax.Var):
            self._name[var] = self._ref(value, relax)
        else:
            op = getattr(getattr(value, "op", None), "name", type(value).__name__)
            raise UnsupportedOpError(f"operator {op} is left in the graph after lowering; the GPU plan runs "
                                     f"kernels only. Build for the cpu target, or replace the op in the model.")

    def store_float16(self) -> None:
        """Every float32 tensor (inputs, outputs, intermediates, weights, constants) held as float16."""
        for name, t in self.tensors.items():
            if t["dtype"] == "float32":
                t.update(dtype="float16", bytes=t["bytes"] // 2)
        self.constants = {n: c.astype(np.float16) if c.dtype == np.float32 else c for n, c in self.constants.items()}

    def functions_called(self) -> list[str]:
        return list(dict.fromkeys(f for f, _ in self.calls))

    def _base(self, name: str) -> str:
        while self.tensors[name]["storage"] == "view":
            name = self.tensors[name]["of"]
        return name

    def plan(self, kernels_of: dict, language: str) -> dict:
        launches = []
        for call_index, (func, args) in enumerate(self.calls):
            for k in kernels_of[func]:
                tensors, scalars = [], []
                for p in k["params"]:
                    if p[0] == "param":
                        tensors.append(args[p[1]])
                    elif p[0] == "scratch":
                        tensors.append(f"{func}.{call_index}.scratch{p[1]}")
                    else:
                        scalars.append({"dtype": p[1], "value": p[2]})
                grid = [k["launch"].get(f"blockIdx.{a}", 1) for a in "xyz"]
                block = [k["launch"].get(f"threadIdx.{a}", 1) for a in "xyz"]
                launches.append({"program": func, "kernel": k["name"], "args": tensors, "scalars": scalars,
                                 "grid": grid, "block": block, "call": call_index})
            for i, size in enumerate(kernels_of[func][0]["scratch_bytes"] if kernels_of[func] else []):
                name = f"{func}.{call_index}.scratch{i}"
                self.tensors[name] = {"shape": [size], "dtype": "uint8", "bytes": size, "storage": "arena"}
        # lifetimes over launch indices; inputs from before the first, outputs past the last
        first, last = {}, {}
        for n in self.inputs:
            first[n] = last[n] = -1
        for i, launch in enumerate(launches):
            for a in launch["args"]:
                base = self._base(a)
                first.setdefault(base, i)
                last[base] = i
        end = len(launches)
        for o in self.outputs:
            base = self._base(o)
            first.setdefault(base, -1)
            last[base] = end
        intervals = [Interval(n, t["bytes"], first[n], last[n]) for n, t in self.tensors.items()
                     if t["storage"] in ("arena", "input") and n in first]
        offsets, arena = plan_arena(intervals)
        # computed but never read (and views of such): nothing to keep
        unread = {n for n, t in self.tensors.items() if t["storage"] in ("arena", "input") and n not in offsets}
        unread |= {n for n, t in self.tensors.items() if t["storage"] == "view" and self._base(n) in unread}
        for n in unread:
            del self.tensors[n]
        tensors = {}
        for n, t in self.tensors.items():
            entry = {k: v for k, v in t.items() if k != "output_name"}
            if t["storage"] in ("arena", "input"):
                entry.update(storage="arena", offset=offsets[n])
            tensors[n] = entry
        naive = sum(t["bytes"] for t in self.tensors.values() if t["storage"] in ("arena", "input"))
        return {"format": PLAN_FORMAT, "version": PLAN_VERSION, "language": LANGUAGES[language],
                "arena_bytes": arena, "arena_bytes_without_reuse": naive, "tensors": tensors,
                "inputs": {n: n for n in self.inputs},
                "outputs": {self.tensors[o]["output_name"]: o for o in self.outputs},
                "launches": launches}
