"""A component's memory by graph position, and its cut into chunks at graph boundaries.

Both read the torch.export graph before anything is compiled, so a budget that no plan meets fails
the build before the first compile. Memory is counted as the runtime holds it: the weights each op
reads, and the activations alive at each op (a value lives from the op that makes it to its last
reader; views share their source's bytes). The sum at the worst op is the component's arena.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .capture import Captured

# ops whose output shares its input's storage (no bytes of their own)
VIEW_OPS = {"view", "_unsafe_view", "reshape", "expand", "permute", "transpose", "t", "squeeze", "unsqueeze",
            "slice", "select", "alias", "detach", "flatten", "unflatten", "as_strided", "contiguous", "clone",
            "getitem", "split", "chunk", "unbind", "_assert_tensor_metadata", "lift_fresh_copy"}


@dataclass
class GraphMemory:
    """Per op (in graph order): the weights it reads, the activation bytes alive while it runs, and
    its nn.Module path; per boundary after op i: the activation bytes crossing it."""
    ops: list                        # fx nodes (call_function), in order
    weights: list[set]               # weight names read by each op
    weight_bytes: dict[str, int]     # weight name -> stored bytes (as the build's scheme will store it)
    live: list[int]                  # activation bytes alive at each op
    crossing: list[int]              # bytes crossing the boundary after each op
    modules: list[str]               # the op's module path down to its numbered block ("down_blocks.1")

    @property
    def total_weight_bytes(self) -> int:
        """Bytes of the weights the graph reads (a wrapper may hold modules it never calls)."""
        return int(sum(self.weight_bytes[n] for n in set().union(*self.weights)))

    @property
    def arena_bytes(self) -> int:
        return int(max(self.live, default=0))

    def chunk_cost(self, a: int, b: int) -> int:
        """Peak bytes of ops a..b (inclusive) run alone: their weights and the activations alive there."""
        names = set().union(*self.weights[a:b + 1])
        return int(sum(self.weight_bytes[n] for n in names) + max(self.live[a:b + 1]))

    def boundaries(self) -> list[int]:
        """Op indices i where a cut after op i falls between two modules (a graph boundary: a numbered
        block such as down_blocks.1 or layers.3, or a named module such as conv_in)."""
        return [i for i in range(len(self.ops) - 1) if self.modules[i] != self.modules[i + 1]]


def stored_bits(scheme, shape) -> float:
    """Bits per element the build will store a weight of `shape` in: packed bits plus a float16
    scale per group for matmul/conv weights under a weight scheme (mixed: 8, its median choice);
    norms and biases stay float32."""
    if scheme is None or len(shape) < 2:
        return 32.0
    if scheme.kind == "float":
        return float(scheme.bits or 16)
    bits = scheme.bits if scheme.bits is not None else 8
    return bits + (16.0 / scheme.group if scheme.group else 0.0)


def _base(node) -> str:
    target = getattr(node.target, "__name__", str(node.target))
    return target.split(".")[0]


def _nbytes(val) -> int:
    vals = val if isinstance(val, (tuple, list)) else [val]
    total = 0
    for v in vals:
        if hasattr(v, "shape") and hasattr(v, "dtype"):
            total += int(np.prod([int(d) for d in v.shape])) * v.dtype.itemsize
    return total


def _module_path(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    paths = [p for p, _ in stack.values()]
    deepest = max(paths, key=len, default="")
    parts = deepest.split(".")
    if parts and parts[0] == "inner":
        parts = parts[1:]
    numbered = next((i for i, p in enumerate(parts) if p.isdigit()), None)   # down_blocks.1, layers.0
    return ".".join(parts[:numbered + 1] if numbered is not None else parts[:2])


def analyse(gm, scheme=None) -> GraphMemory:
    """The memory of an unlifted exported graph (ExportedProgram.module()): weights are get_attr nodes."""
    nodes = list(gm.graph.nodes)
    ops = [n for n in nodes if n.op == "call_function"]
    index = {n: i for i, n in enumerate(ops)}
    end = len(ops)
    weight_bytes, root = {}, {}
    for n in nodes:
        if n.op == "get_attr":
            value = gm
            for part in n.target.split("."):
                value = getattr(value, part)
            weight_bytes[n.target] = int(value.numel() * stored_bits(scheme, tuple(value.shape)) / 8)

    def root_of(n):
        return root.get(n, n)

    size, define, last = {}, {}, {}
    for n in nodes:
        if n.op == "placeholder":
            size[n], define[n] = _nbytes(n.meta.get("val")), -1
        elif n.op == "call_function":
            parents = [a for a in n.all_input_nodes if a.op in ("placeholder", "call_function")]
            if _base(n) in VIEW_OPS and parents:
                root[n] = root_of(parents[0])
            else:
                size[n], define[n] = _nbytes(n.meta.get("val")), index[n]
        for a in n.all_input_nodes:
            if a.op in ("placeholder", "call_function"):
                r = root_of(a)
                last[r] = max(last.get(r, -1), end if n.op == "output" else index.get(n, -1))
    live = [0] * end
    crossing = [0] * end
    for v, d in define.items():
        stop = last.get(v, d)
        for i in range(max(d, 0), min(stop, end - 1) + 1):
            live[i] += size[v]
        for i in range(max(d, 0), min(stop, end)):
            crossing[i] += size[v]      # made at or before op i, read after it
    weights = [{a.target for a in n.all_input_nodes if a.op == "get_attr"} for n in ops]
    return GraphMemory(ops, weights, weight_bytes, live, crossing, [_module_path(n) for n in ops])


def best_cuts(mem: GraphMemory, budget: int) -> list[int] | None:
    """Cuts (op indices, cut after each) at graph boundaries such that every chunk's weights plus arena
    fit `budget`, minimising the bytes that cross the cuts; [] when the whole fits, None when no cut can."""
    n = len(mem.ops)
    if n == 0 or mem.chunk_cost(0, n - 1) <= budget:
        return []
    starts = [0] + [b + 1 for b in mem.boundaries()]
    # best[s]: (crossing bytes, cuts) of the cheapest plan for ops 0..s-1 ending at boundary s
    best = {0: (0, [])}
    for j, s in enumerate(starts):
        if s not in best:
            continue
        cost_so_far, cuts = best[s]
        for e in starts[j + 1:] + [n]:
            if mem.chunk_cost(s, e - 1) > budget:
                break    # a longer chunk only costs more
            if e == n:
                if n not in best or cost_so_far < best[n][0]:
                    best[n] = (cost_so_far, cuts)
                continue
            cand = (cost_so_far + mem.crossing[e - 1], cuts + [e - 1])
            if e not in best or cand[0] < best[e][0]:
                best[e] = cand
    return best[n][1] if n in best else None


def smallest_budget(mem: GraphMemory) -> int:
    """The least budget any cut at graph boundaries fits: the costliest chunk between two neighbouring
    boundaries (a finer cut is not a graph boundary)."""
    edges = [-1] + mem.boundaries() + [len(mem.ops) - 1]
    return max((mem.chunk_cost(a + 1, b) for a, b in zip(edges, edges[1:]) if b > a), default=0)


def split(cap: Captured, gm, mem: GraphMemory, cuts: list[int], name: str) -> list[tuple[str, Captured]]:
    """The component cut after each op in `cuts`: (chunk name, Captured) per chunk, each a torch
    GraphModule that takes the values crossing into it (named by the graph) and returns those that
    cross out of it; the last returns the component's outputs. Example inputs come from running the
    chunks before it."""
    import torch
    import torch.fx as fx

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    finals = list(out_node.args[0]) if isinstance(out_node.args[0], (tuple, list)) else [out_node.args[0]]
    names = {p: k for p, k in zip(placeholders, cap.inputs)}
    names.update({f: o for f, o in zip(finals, cap.outputs)})
    bounds = [-1, *cuts, len(mem.ops) - 1]
    env = {names[p]: cap.inputs[names[p]] for p in placeholders}
    chunks = []
    for k, (a, b) in enumerate(zip(bounds, bounds[1:])):
        ops = mem.ops[a + 1:b + 1]
        graph = fx.Graph()
        local: dict = {}
        inputs: list = []

        def value(node, graph=graph, local=local, inputs=inputs):
            if node in local:
                return local[node]
            if node.op == "get_attr":
                local[node] = graph.get_attr(node.target)
            else:   # an input of the component, or a value an earlier chunk made
                key = names.setdefault(node, node.name)
                local[node] = graph.placeholder(key)
                inputs.append(key)
            return local[node]

        for op in ops:
            local[op] = graph.node_copy(op, value)
        later = set(mem.ops[b + 1:])
        made = [op for op in ops if op in finals or any(u in later for u in op.users)]
        for op in made:
            names.setdefault(op, op.name)
        if k == len(bounds) - 2 and not all(f in local for f in finals):
            raise ValueError(f"{name}: an output is made before the last cut; cut later in the graph.")
        outs = finals if k == len(bounds) - 2 else made
        graph.output(tuple(local[o] for o in outs))
        module = fx.GraphModule(gm, graph).eval()
        chunk_inputs = {key: env[key] for key in inputs}
        with torch.no_grad():
            result = module(*(torch.from_numpy(np.ascontiguousarray(v)) for v in chunk_inputs.values()))
        env.update({names[o]: r.detach().numpy() for o, r in zip(outs, result)})
        chunks.append((f"{name}_chunk{k + 1}",
                       Captured(cap.family, _chunk_module(module, len(outs)), chunk_inputs, [names[o] for o in outs],
                                {key: cap.ranges[key] for key in inputs if key in cap.ranges})))
    return chunks


def _chunk_module(module, count: int):
    """A chunk with one output returns it alone, as the components' wrappers do (the TVM import unwraps a
    one-tuple; the build's reference run expects a tensor)."""
    import torch

    class Chunk(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            out = self.inner(*args)
            return out[0] if count == 1 else out

    return Chunk(module).eval()
