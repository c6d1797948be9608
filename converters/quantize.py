"""Quantize a lowered component for the TVM targets: pack chosen weights, decode them in-kernel.

`weight_layers` finds the weights that a matmul (linear) or conv2d consumes and says which
stay in float32 and why (first and last layer; norms, embeddings and biases are never
matmul/conv weights). `pack` replaces each chosen weight parameter of `main` by its packed
arrays (edgegen.core.quant) and a call to the decode kernel of kernels/dequant.py, which the
CPU pipeline fuses into the consumer; the artifact and the runtime's memory hold the packed
form only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgegen.core.quant import Scheme, quantize_weight
from edgegen.core.specs import TensorSpec

from .lower import Lowered, import_tvm_compiler

# a layer whose reduction is narrower than this stays float32: its scales would cost more than it saves
MIN_WIDTH = 16


@dataclass
class Layer:
    weight: str              # parameter name (the artifact's weight name)
    op: str                  # "linear" | "conv2d"
    shape: tuple
    keep: str | None = None  # why it stays float32, or None when it is quantized
    data: object = field(default=None, repr=False, compare=False)   # the Relax var of its input activation
    result: object = field(default=None, repr=False, compare=False)  # the Relax var its matmul/conv2d binds

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape))


def weight_layers(lowered: Lowered) -> list[Layer]:
    """The matmul/conv2d weights of `main` in graph order, the first and last layer marked kept."""
    import_tvm_compiler()
    from tvm import relax

    func = lowered.module["main"]
    n_inputs = len(func.params) - len(lowered.weight_specs)
    inputs = {v for v in func.params[:n_inputs]}
    by_var = dict(zip(func.params[n_inputs:], lowered.weight_specs))
    uses: dict = {}
    transposed: dict = {}   # permute_dims result -> weight var
    found: list[tuple] = []

    def visit(binding):
        value = binding.value
        if not isinstance(value, relax.Call):
            return
        for arg in value.args:
            if isinstance(arg, relax.Var):
                uses[arg] = uses.get(arg, 0) + 1
        name = getattr(value.op, "name", "")
        if name == "relax.permute_dims" and value.args[0] in by_var:
            transposed[binding.var] = value.args[0]
        elif name == "relax.matmul" and value.args[1] in transposed:
            found.append(("linear", transposed[value.args[1]], value.args[0], binding.var))
        elif name == "relax.nn.conv2d" and value.args[1] in by_var:
            found.append(("conv2d", value.args[1], value.args[0], binding.var))

    for block in func.body.blocks:
        for binding in block.bindings:
            visit(binding)
    last = _last_layers(func, {f[3] for f in found})
    layers = []
    for op, var, data, result in found:
        spec = by_var[var]
        keep = None
        if data in inputs:
            keep = "first layer (reads the model input)"
        elif result in last:
            keep = "last layer (writes the model output)"
        elif uses.get(var, 0) != 1 or (op == "linear" and uses.get(next(k for k, v in transposed.items()
                                                                            if v is var), 0) != 1):
            keep = "weight shared by several ops"
        elif int(np.prod(spec.shape[1:])) < MIN_WIDTH:
            keep = f"reduction width {int(np.prod(spec.shape[1:]))} < {MIN_WIDTH}"
        layers.append(Layer(spec.name, op, tuple(spec.shape), keep, data, result))
    return layers


def _last_layers(func, results: set) -> set:
    """The results (of `results`, matmul/conv2d outputs) that reach an output of `func` through no
    other of them: each output's last layer, where a module has several outputs."""
    from tvm import relax

    bound = {b.var: b.value for block in func.body.blocks for b in block.bindings}
    last, seen, todo = set(), set(), [func.body.body]
    while todo:
        expr = todo.pop()
        if isinstance(expr, relax.Var):
            if expr in seen:
                continue
            seen.add(expr)
            if expr in results:
                last.add(expr)
                continue
            expr = bound.get(expr)
        if isinstance(expr, relax.Tuple):
            todo.extend(expr.fields)
        elif isinstance(expr, relax.TupleGetItem):
            todo.append(expr.tuple_value)
        elif isinstance(expr, relax.Call):
            todo.extend(a for a in expr.args if isinstance(a, (relax.Var, relax.Tuple)))
        elif isinstance(expr, relax.Var):
            todo.append(expr)
    return last


def embedding_layers(lowered: Lowered) -> list[Layer]:
    """The 2-D lookup tables of `main` (a weight read only by a take along its rows: token and position
    embeddings), as layers whose rows are the entries; a table narrower than MIN_WIDTH is kept."""
    import_tvm_compiler()
    from tvm import relax

    func = lowered.module["main"]
    by_var = dict(zip(func.params[len(func.params) - len(lowered.weight_specs):], lowered.weight_specs))
    uses: dict = {}
    tables: list = []

    def visit(expr):
        if not isinstance(expr, relax.Call):
            return
        for arg in expr.args:
            if isinstance(arg, relax.Var) and arg in by_var:
                uses[arg] = uses.get(arg, 0) + 1
        if getattr(expr.op, "name", "") == "relax.take" and expr.args[0] in by_var and int(expr.attrs.axis or 0) == 0:
            tables.append(expr.args[0])

    relax.analysis.post_order_visit(func.body, visit)
    layers = []
    for var in dict.fromkeys(tables):
        spec = by_var[var]
        if len(spec.shape) != 2 or uses.get(var) != 1:
            continue
        keep = f"row width {spec.shape[1]} < {MIN_WIDTH}" if spec.shape[1] < MIN_WIDTH else None
        layers.append(Layer(spec.name, "embedding", tuple(spec.shape), keep))
    return layers


def pack(lowered: Lowered, choices: dict[str, Scheme], words: bool = False,
         stats: dict | None = None) -> tuple[Lowered, dict[str, dict]]:
    """`lowered` with each weight in `choices` packed and decoded in-kernel; returns it and, per
    packed weight, {scheme, method, bits_per_weight, bytes}. `words`: store the packed arrays as 32-bit
    words (kernels/dequant.as_words), the form GPU kernels read. `stats`: weight -> LayerStats of its
    input (converters/layer_stats.py), which the calibrated methods use."""
    import_tvm_compiler()
    from tvm import relax

    from edgegen.kernels.dequant import DECODE_PREFIX, as_words, decode_func

    mod = lowered.module.clone()    # `lowered` stays as it was
    packed_all, scales = _quantize_chosen(lowered, choices, stats or {})
    func, source_weights, placed = _apply_input_scales(lowered, scales)
    n_inputs = len(func.params) - len(lowered.weight_specs)
    bb = relax.BlockBuilder(mod)
    params, specs, weights, substitute, decodes, report = list(func.params[:n_inputs]), [], {}, {}, [], {}
    for var, spec in zip(func.params[n_inputs:], lowered.weight_specs):
        scheme = choices.get(spec.name)
        if scheme is None:
            params.append(var)
            specs.append(spec)
            weights[spec.name] = source_weights[spec.name]
            continue
        w = lowered.weights[spec.name]
        packed = packed_all[spec.name]
        stored = []
        for key, arr in packed.arrays.items():
            name = f"{spec.name}.{key}"
            arr = as_words(arr) if words else arr
            stored.append(relax.Var(name, relax.TensorType(arr.shape, str(arr.dtype))))
            specs.append(TensorSpec.of(name, arr))
            weights[name] = arr
        params.extend(stored)
        gv = bb.add_func(decode_func(scheme, tuple(spec.shape), packed.arrays, words),
                         DECODE_PREFIX + scheme.name.replace("-", "_"))
        decoded = relax.DataflowVar(spec.name, relax.TensorType(tuple(spec.shape), "float32"))
        substitute[var] = decoded
        decodes.append(relax.VarBinding(decoded, relax.call_tir(gv, stored, decoded.ty)))
        nbytes = int(sum(weights[v.name].nbytes for v in stored))
        report[spec.name] = {"scheme": scheme.name, "method": packed.method,
                             "bits_per_weight": round(8 * nbytes / w.size, 3), "bytes": nbytes,
                             **({"input_scale": placed[spec.name]} if spec.name in placed else {})}
    bound = func.bind_params(substitute)
    first, *rest = bound.body.blocks
    body = relax.SeqExpr([relax.DataflowBlock(decodes + list(first.bindings)), *rest], bound.body.body)
    new_mod = bb.get()
    new_mod.update_func(new_mod.get_global_var("main"),
                        relax.Function(params, body, func.ret_ty, func.is_pure, func.attrs))
    return Lowered(new_mod, specs, weights, lowered.sources), report


def _quantize_chosen(lowered: Lowered, choices: dict[str, Scheme], stats: dict) -> tuple[dict, dict]:
    """Each chosen weight's Packed form, with AWQ's input-channel scales where they lower its layer's
    output error (edgegen.core.quant.quantize_scaled; calibrated methods with statistics only):
    ({weight: Packed}, {weight: (its Layer, scales per input channel)})."""
    from edgegen.core.quant import quantize_scaled

    layers = {lay.weight: lay for lay in weight_layers(lowered)} if stats else {}
    packed, scales = {}, {}
    for name, scheme in choices.items():
        w = lowered.weights[name]
        lay = layers.get(name)
        if lay is None or lay.op not in ("linear", "conv2d"):
            packed[name] = quantize_weight(w, scheme, out_axis=0, stats=stats.get(name))
            continue
        packed[name], s = quantize_scaled(w, scheme, stats.get(name), w.shape[1])
        if s is not None:
            scales[name] = (lay, s)
    return packed, scales


def _last_dim(var) -> int | None:
    shape = getattr(var.ty, "shape", None)
    values = getattr(shape, "values", None)
    return int(values[-1]) if values else None


_NORMS = {"relax.nn.layer_norm": "LayerNorm", "relax.nn.group_norm": "GroupNorm"}


def _apply_input_scales(lowered: Lowered, scales: dict) -> tuple:
    """Divide each scaled layer's input by its scales s (the packed weight holds W diag(s)): folded into
    the affine of the LayerNorm/GroupNorm that produces it where that norm feeds only this layer and
    owns its gamma/beta (gamma / s, beta / s: free at run time), else an explicit multiply by 1/s
    before the layer. Returns (main rewritten, every float32 weight as it is now stored, {weight:
    where its scale went})."""
    from tvm import relax

    func = lowered.module["main"]
    weights = dict(lowered.weights)
    if not scales:
        return func, weights, {}
    n_inputs = len(func.params) - len(lowered.weight_specs)
    name_of = {var: spec.name for var, spec in zip(func.params[n_inputs:], lowered.weight_specs)}
    bound = {b.var: b.value for block in func.body.blocks for b in block.bindings}
    uses: dict = {}
    for value in bound.values():
        for arg in getattr(value, "args", []):
            if isinstance(arg, relax.Var):
                uses[arg] = uses.get(arg, 0) + 1
    placed, explicit = {}, {}
    for weight, (lay, s) in scales.items():
        src = lay.data     # through the reshapes that fold a linear's leading axes (channels stay last)
        while (lay.op == "linear" and uses.get(src) == 1 and isinstance(bound.get(src), relax.Call)
               and getattr(bound[src].op, "name", "") == "relax.reshape" and isinstance(bound[src].args[0], relax.Var)
               and _last_dim(bound[src].args[0]) == _last_dim(src)):
            src = bound[src].args[0]
        norm = bound.get(src)
        gamma = beta = None
        if isinstance(norm, relax.Call) and getattr(norm.op, "name", "") in _NORMS and uses.get(src) == 1:
            gamma, beta = (name_of.get(a) for a in norm.args[1:3])
            axis_ok = (list(norm.attrs.axes)[-1] in (-1, len(src.ty.shape.values) - 1) if lay.op == "linear"
                       and getattr(norm.op, "name", "") == "relax.nn.layer_norm"
                       else lay.op == "conv2d" and getattr(norm.op, "name", "") == "relax.nn.group_norm"
                       and int(norm.attrs.channel_axis) == 1)
            if not (gamma and beta and axis_ok and uses.get(norm.args[1]) == 1 and uses.get(norm.args[2]) == 1
                    and weights[gamma].shape == s.shape and weights[beta].shape == s.shape):
                gamma = None
        if gamma:
            weights[gamma] = (weights[gamma] / s).astype(np.float32)
            weights[beta] = (weights[beta] / s).astype(np.float32)
            placed[weight] = f"folded into {_NORMS[norm.op.name]} {lowered.sources.get(gamma, gamma)}"
        else:
            explicit[lay.result] = (lay, s)
            placed[weight] = "explicit multiply before the layer"
    if explicit:
        blocks = []
        for block in func.body.blocks:
            bindings = []
            for b in block.bindings:
                if b.var in explicit:
                    lay, s = explicit[b.var]
                    shape = (-1,) if lay.op == "linear" else (1, -1, 1, 1)
                    scaled = relax.DataflowVar(f"{lay.weight}.input_scaled", lay.data.ty)
                    bindings.append(relax.VarBinding(scaled, relax.op.multiply(
                        lay.data, relax.const((1.0 / s).astype(np.float32).reshape(shape)))))
                    b = relax.VarBinding(b.var, relax.Call(b.value.op, [scaled, *b.value.args[1:]], b.value.attrs,
                                                           b.value.ty_args))
                bindings.append(b)
            blocks.append(relax.DataflowBlock(bindings) if isinstance(block, relax.DataflowBlock)
                          else relax.BindingBlock(bindings))
        func = relax.Function(func.params, relax.SeqExpr(blocks, func.body.body), func.ret_ty, func.is_pure,
                              func.attrs)
    return func, weights, placed


# the ladder `mixed:<dB>` climbs, fewest bits first; a layer that needs more than its top stays float32.
# Ternary's error looks small on one denoiser call and compounds over the sampling steps, which is
# why sensitivity is also measured on the final outputs (see search_mixed).
MIXED_LADDER = ("ternary", "w4g128", "w4g32", "w8")
MIXED_ROUNDS = 6
SENSITIVITY_SAMPLES = 3   # calibration inputs each layer's sensitivity is measured on (all check the result)


class _Runner:
    """The float32 component compiled once; runs it on calibration inputs with some weights replaced
    by their quantize -> dequantize round trip (what the packed kernels compute), no recompile."""

    def __init__(self, lowered: Lowered, tvm_target: dict, calibration: list[dict]):
        import tvm
        from tvm import relax

        from . import lower

        self._tvm = tvm
        self._vm = relax.VirtualMachine(lower.compile_module(lowered.module, tvm_target), tvm.cpu())
        self._names = [s.name for s in lowered.weight_specs]
        self._weights = {n: tvm.runtime.tensor(np.ascontiguousarray(lowered.weights[n])) for n in self._names}
        self._inputs = [[tvm.runtime.tensor(np.ascontiguousarray(a)) for a in sample.values()]
                        for sample in calibration]
        raw = [self._outputs(x, {}) for x in self._inputs]
        # every output counts, each relative to its own peak (a module's outputs need not share a scale)
        self._peaks = [max(max(float(np.abs(r[i]).max()) for r in raw), 1e-12) for i in range(len(raw[0]))]
        self.reference = [self._joined(r) for r in raw]
        self.peak2 = max(float(np.abs(r).max()) for r in self.reference) ** 2
        # spread over the calibration runs (prompts/labels x timesteps, in that order)
        self._few = sorted({int(i) for i in np.linspace(0, len(self._inputs) - 1, SENSITIVITY_SAMPLES).round()})

    def _outputs(self, inputs: list, replaced: dict) -> list[np.ndarray]:
        out = self._vm["main"](*inputs, *(replaced.get(n, self._weights[n]) for n in self._names))
        return [o.numpy() for o in ([out] if hasattr(out, "numpy") else out)]

    def _joined(self, outputs: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([o.ravel() / p for o, p in zip(outputs, self._peaks)])

    def _run(self, inputs: list, replaced: dict) -> np.ndarray:
        return self._joined(self._outputs(inputs, replaced))

    def mse(self, replaced: dict[str, np.ndarray], few: bool = False) -> float:
        """Mean squared error of the outputs (each over its peak) on the calibration inputs (`few`: a
        spread subset)."""
        tensors = {n: self._tvm.runtime.tensor(np.ascontiguousarray(w, np.float32)) for n, w in replaced.items()}
        picked = self._few if few else range(len(self._inputs))
        return float(np.mean([np.mean((self._run(self._inputs[i], tensors).astype(np.float64)
                                       - self.reference[i]) ** 2) for i in picked]))

    def db(self, mse: float) -> float:
        return 10 * np.log10(self.peak2 / mse) if mse > 0 else float("inf")


def search_mixed(lowered: Lowered, layers: list[Layer], target_db: float, runner: _Runner,
                 log=lambda msg: None, end_check=None, end_target_db: float | None = None,
                 stats: dict | None = None) -> tuple[dict, list[dict], dict]:
    """Per-layer bit widths for `mixed:<dB>`.

    Sensitivity: for every layer and every rung of MIXED_LADDER, the component's output error over
    the calibration inputs with only that layer quantized. Given `end_check` (replaced weights,
    quick -> PSNR of the pipeline's final outputs on real runs), each layer's end-output error is
    also measured alone, on its lowest rung; its ratio to the component error scales the layer's
    other rungs, so the search works in end-output terms: one denoiser call hides how an error
    compounds over the sampling steps, and that differs from layer to layer.

    Allocation: errors of different layers are taken to add. From every layer on the lowest rung,
    the layer and higher rung that remove the most error per stored bit are taken until the
    predicted error meets a budget; the whole assignment is then measured (on the final outputs
    given `end_check`, against `end_target_db`; else on the calibration inputs, against
    `target_db`). The budget starts at the goal; each measurement corrects the additive
    model's bias (predicted vs measured dB) for the next, until one budget passes and one fails;
    then it is bisected; the passing assignment with the fewest bits is kept. Returns (choices,
    per-layer records, {calibration_psnr_db, end_output_psnr_db})."""
    from edgegen.core.quant import dequantize_weight, parse

    ladder = [parse(n) for n in MIXED_LADDER]
    todo = [lay for lay in layers if lay.keep is None]
    stats = stats or {}
    rungs: dict[str, list[tuple]] = {}    # weight -> [(scheme or None, bits, component mse, dB, error)]
    end_solo: dict[str, float] = {}
    for lay in todo:
        w = lowered.weights[lay.weight]
        rows = []
        for scheme in ladder:
            packed = quantize_weight(w, scheme, stats=stats.get(lay.weight))
            mse = runner.mse({lay.weight: dequantize_weight(packed)}, few=True)
            rows.append([scheme, packed.bits_per_weight, mse, runner.db(mse), mse])
        rows.append([None, 32.0, 0.0, float("inf"), 0.0])
        if end_check is not None:
            end_solo[lay.weight] = end_check({lay.weight: dequantize_weight(
                quantize_weight(w, ladder[0], stats=stats.get(lay.weight)))}, True)
            gain = 10 ** (-end_solo[lay.weight] / 10) / max(rows[0][2], runner.peak2 * 1e-12)
            for row in rows:
                row[4] = row[2] * gain
        rungs[lay.weight] = rows
        log(f"sensitivity {lay.weight}: " + ", ".join(f"{r[0].name} {r[3]:.1f} dB" for r in rows[:-1])
            + (f"; end output at {ladder[0].name} {end_solo[lay.weight]:.1f} dB" if lay.weight in end_solo else ""))
    peak2, goal_db = (1.0, end_target_db) if end_check is not None else (runner.peak2, target_db)

    def climb(budget_db: float) -> dict:
        level = {lay.weight: 0 for lay in todo}
        budget = peak2 / 10 ** (budget_db / 10)
        while sum(rungs[n][level[n]][4] for n in level) > budget:
            best, gain = None, 0.0
            for lay in todo:   # the best step up to any higher rung: errors need not fall rung by rung
                cur = rungs[lay.weight][level[lay.weight]]
                for j in range(level[lay.weight] + 1, len(rungs[lay.weight])):
                    up = rungs[lay.weight][j]
                    g = (cur[4] - up[4]) / max((up[1] - cur[1]) * lay.elements, 1e-9)
                    if g > gain:
                        best, gain = (lay.weight, j), g
            if best is None:
                break
            level[best[0]] = best[1]
        return level

    def measure(level: dict) -> tuple[dict, float]:
        replaced = {n: dequantize_weight(quantize_weight(lowered.weights[n], rungs[n][i][0], stats=stats.get(n)))
                    for n, i in level.items() if rungs[n][i][0] is not None}
        measured = {"calibration_psnr_db": round(runner.db(runner.mse(replaced)), 2)}
        if end_check is not None:
            measured["end_output_psnr_db"] = round(end_check(replaced, False), 2)
        return measured, measured.get("end_output_psnr_db", measured["calibration_psnr_db"])

    tried, lo, hi, budget_db = [], None, None, goal_db
    for _ in range(MIXED_ROUNDS):
        level = climb(budget_db)
        measured, reached = measure(level)
        bits = sum(rungs[lay.weight][level[lay.weight]][1] * lay.elements for lay in todo)
        tried.append((reached >= goal_db, bits, level, measured))
        log(f"mixed: budget {budget_db:.1f} dB -> " + ", ".join(
            f"{k.removesuffix('_psnr_db')} {v:.2f} dB" for k, v in measured.items())
            + f", {bits / max(sum(lay.elements for lay in todo), 1):.2f} bits/weight")
        if reached >= goal_db and not any(level.values()):
            break           # every layer on the lowest rung already passes: no fewer bits to find
        if reached >= goal_db:
            hi = budget_db if hi is None else min(hi, budget_db)
        else:
            lo = budget_db if lo is None else max(lo, budget_db)
        if hi is not None and lo is not None and hi - lo <= 1.0:
            break
        if lo is not None and hi is not None:
            budget_db = (lo + hi) / 2
        else:   # correct the additive model by what it got wrong here: aim its prediction at the goal
            predicted = 10 * np.log10(peak2 / max(sum(rungs[n][i][4] for n, i in level.items()), 1e-30))
            aim = goal_db - (reached - predicted)
            step = 1.0 if hi is None else -1.0     # at least 1 dB towards the side not yet seen
            budget_db = aim if (aim - budget_db) * step >= 1.0 else budget_db + step
    passing = [t for t in tried if t[0]]
    _, _, level, measured = min(passing, key=lambda t: t[1]) if passing else max(tried, key=lambda t: t[1])
    choices = {n: rungs[n][i][0] for n, i in level.items() if rungs[n][i][0] is not None}
    records = [{"weight": n, "scheme": rungs[n][i][0].name if rungs[n][i][0] else "fp32",
                "solo_psnr_db": None if rungs[n][i][0] is None else round(rungs[n][i][3], 2),
                "sensitivity_db": {r[0].name: round(r[3], 2) for r in rungs[n][:-1]},
                **({"end_output_solo_db": {ladder[0].name: round(end_solo[n], 2)}} if n in end_solo else {})}
               for n, i in level.items()]
    return choices, records, measured


def choose(lowered: Lowered, scheme: Scheme, tvm_target: dict, calibration: list[dict] | None = None,
           log=lambda msg: None, end_output=None, end_target_db: float | None = None,
           stats: dict | None = None) -> tuple[list, dict, dict]:
    """The weight-only scheme each matmul/conv2d weight takes: `scheme` for every layer not kept
    float32, or, for mixed:<dB>, the bits the search picks (measured with the component compiled
    for `tvm_target`, a CPU target). Returns (layers, {weight: Scheme}, the manifest's `quant`
    record so far). `end_output`: see apply()."""
    layers = weight_layers(lowered)
    info: dict = {"scheme": scheme.name, "applied": scheme.name, "fallback_reason": None}
    if scheme.kind != "mixed":
        return layers, {lay.weight: scheme for lay in layers if lay.keep is None}, info
    if not any(lay.keep is None for lay in layers):
        info.update(applied="fp32", fallback_reason="no matmul/conv weight can be quantized (each layer is kept "
                                                    "float32 for the reason it records)")
        return layers, {}, info
    if not calibration:
        raise ValueError(f"{scheme.name} needs calibration inputs from real runs of the pipeline")
    runner = _Runner(lowered, tvm_target, calibration)
    end_check, end_target_db = None, end_target_db or scheme.target_db
    if end_output is not None:
        from edgegen.core.metrics import psnr

        reference = end_output(None, False)

        def end_check(replaced, quick):
            out = end_output({lowered.sources[n]: w for n, w in replaced.items()}, quick)
            return psnr(reference[:len(out)], out, peak=1.0)

    choices, records, measured = search_mixed(lowered, layers, scheme.target_db, runner, log, end_check,
                                              end_target_db, stats)
    info.update(target_db=scheme.target_db, calibration_samples=len(calibration), **measured,
                **({"end_target_db": round(end_target_db, 2)} if end_check else {}), search=records)
    return layers, choices, info


def summarize(info: dict, layers: list, weight_specs: list, stored: dict, report: dict,
              kept: str = "norms, biases and embeddings (not matmul/conv weights), and the layers marked fp32") -> dict:
    """Complete a `quant` record: per layer its scheme and stored bytes (or why it stayed float32),
    and bits per weight over the quantized layers and over all of `weight_specs` (the float32
    component's weights), given `stored` (every array written) and `report` (weight -> pack's entry)."""
    quantized = sum(lay.elements for lay in layers if lay.weight in report)
    info["layers"] = [{"weight": lay.weight, "op": lay.op, "shape": list(lay.shape),
                       **(report[lay.weight] if lay.weight in report
                          else {"scheme": "fp32", "reason": lay.keep or "mixed search kept it float32"})}
                      for lay in layers]
    info["bits_per_weight_quantized"] = round(
        8 * sum(r["bytes"] for r in report.values()) / max(quantized, 1), 3) if report else None
    total = sum(int(np.prod(s.shape)) for s in weight_specs)
    info["quantized_share"] = round(quantized / max(total, 1), 4)
    info["bits_per_weight"] = round(8 * sum(a.nbytes for a in stored.values()) / max(total, 1), 3)
    info["kept_float32"] = kept
    return info


def apply(lowered: Lowered, scheme: Scheme, tvm_target: dict, calibration: list[dict] | None = None,
          log=lambda msg: None, end_output=None, end_target_db: float | None = None,
          stats: dict | None = None) -> tuple[Lowered, dict]:
    """Quantize a lowered component with `scheme`; returns the packed component and the manifest's
    `quant` record (per-layer choices and methods, the layers kept and why, bits per weight). For
    mixed:<dB>, `end_output(replaced)` (torch parameter name -> value; None for float32) gives the
    pipeline's final outputs in [0, 1], which must stay `end_target_db` (default: the scheme's) from
    float32. `stats`: weight -> LayerStats on the calibration inputs (converters/layer_stats.py)."""
    if scheme.activations:
        if not calibration:
            raise ValueError(f"{scheme.name} needs calibration inputs from real runs of the pipeline")
        layers = weight_layers(lowered)
        chosen = [lay for lay in layers if lay.keep is None]
        ranges = activation_ranges(lowered, chosen, tvm_target, calibration)
        info = {"scheme": scheme.name, "applied": scheme.name, "fallback_reason": None,
                "calibration_samples": len(calibration), "outlier_ratio": OUTLIER_RATIO}
        packed, report = pack_w8a8(lowered, chosen, ranges)
    else:
        layers, choices, info = choose(lowered, scheme, tvm_target, calibration, log, end_output, end_target_db,
                                       stats)
        layers, choices = with_lookup_tables(lowered, scheme, layers, choices)
        packed, report = pack(lowered, choices, stats=stats)
        if stats:
            info["calibrated_layers"] = sum(1 for w in report if w in stats)
        return packed, summarize(info, layers, lowered.weight_specs, packed.weights, report, TABLES_PACKED)
    return packed, summarize(info, layers, lowered.weight_specs, packed.weights, report)


TABLES_PACKED = "norms and biases (not matmul, conv or lookup-table weights), and the layers marked fp32"


def with_lookup_tables(lowered: Lowered, scheme: Scheme, layers: list, choices: dict) -> tuple[list, dict]:
    """`layers` and `choices` with the component's lookup tables (token, position and class embeddings:
    embedding_layers) packed in `scheme` too; kernels/dequant.py fuses their decode into the gather,
    which decodes only the rows it reads. A text encoder's token table is most of its weights (CLIP
    ViT-L: 49408 x 768 of 123M). mixed:<dB> searches matmul/conv weights only and leaves the tables
    float32."""
    if scheme.kind == "mixed" or scheme.activations:
        return layers, choices
    tables = embedding_layers(lowered)
    return layers + tables, {**choices, **{lay.weight: scheme for lay in tables if lay.keep is None}}


# ---- w8a8: int8 activations x int8 weights, int32 accumulation ----

# an input channel whose calibrated range exceeds this multiple of the median channel's stays float
# (LLM.int8()'s mixed decomposition); at most OUTLIER_MAX_SHARE of a layer's input channels
OUTLIER_RATIO = 6.0
OUTLIER_MAX_SHARE = 0.05


def _channel_axes(layer: Layer, ndim: int) -> list[int]:
    """The axes an input activation is reduced over to leave its channels (the matmul/conv reduction)."""
    return list(range(ndim - 1)) if layer.op == "linear" else [a for a in range(ndim) if a != 1]


def activation_ranges(lowered: Lowered, layers: list[Layer], tvm_target: dict,
                      calibration: list[dict]) -> dict[str, np.ndarray]:
    """Per input channel, the largest |activation| each layer reads over the calibration inputs:
    the component is compiled once more with these maxima as extra outputs."""
    import tvm
    from tvm import relax

    from . import lower

    func = lowered.module["main"]
    if len(func.body.blocks) != 1:
        raise ValueError("w8a8 calibration expects main to be one dataflow block")
    bb = relax.BlockBuilder()
    bindings = list(func.body.blocks[0].bindings)
    stats = []
    for i, lay in enumerate(layers):
        ndim = len(lay.data.ty.shape.values)
        a = relax.DataflowVar(f"edgegen_abs{i}", bb.normalize(relax.op.abs(lay.data)).ty)
        bindings.append(relax.VarBinding(a, relax.op.abs(lay.data)))
        m_expr = relax.op.max(a, axis=_channel_axes(lay, ndim))
        m = relax.DataflowVar(f"edgegen_range{i}", bb.normalize(m_expr).ty)
        bindings.append(relax.VarBinding(m, m_expr))
        stats.append(m)
    out_expr = relax.Tuple([func.body.body, *stats])
    out = relax.Var("edgegen_ranges", bb.normalize(out_expr).ty)
    bindings.append(relax.VarBinding(out, out_expr))
    mod = tvm.IRModule({"main": relax.Function(func.params, relax.SeqExpr([relax.DataflowBlock(bindings)], out),
                                               out.ty, func.is_pure, func.attrs)})
    vm = relax.VirtualMachine(lower.compile_module(mod, tvm_target), tvm.cpu())
    weights = [tvm.runtime.tensor(np.ascontiguousarray(lowered.weights[s.name])) for s in lowered.weight_specs]
    ranges: dict[str, np.ndarray] = {}
    for sample in calibration:
        result = vm["main"](*(tvm.runtime.tensor(np.ascontiguousarray(a)) for a in sample.values()), *weights)
        for lay, r in zip(layers, list(result)[1:]):
            got = r.numpy()
            ranges[lay.weight] = np.maximum(ranges.get(lay.weight, got), got)
    return ranges


def _outliers(channel_max: np.ndarray) -> np.ndarray:
    """Indices of the input channels kept in float (sorted), by OUTLIER_RATIO and OUTLIER_MAX_SHARE."""
    median = float(np.median(channel_max))
    over = np.flatnonzero(channel_max > OUTLIER_RATIO * max(median, 1e-12))
    worst = over[np.argsort(-channel_max[over])][:int(OUTLIER_MAX_SHARE * len(channel_max))]
    return np.sort(worst)


def pack_w8a8(lowered: Lowered, layers: list[Layer], ranges: dict[str, np.ndarray]) -> tuple[Lowered, dict]:
    """Rewrite each layer of `layers` (with a calibrated range) as int8 x int8 -> int32 matmul/conv2d:
    the activation quantized per tensor (scale from calibration; the outlier input channels are
    zeroed there and go through a small float matmul/conv beside), the weight int8 per output
    channel. Returns the component and per-layer records."""
    import_tvm_compiler()
    from tvm import relax
    from tvm.relax.dpl import is_op, rewrite_call, wildcard

    func = lowered.module["main"]
    n_inputs = len(func.params) - len(lowered.weight_specs)
    var_of = dict(zip((s.name for s in lowered.weight_specs), func.params[n_inputs:]))
    todo = {var_of[lay.weight]: lay for lay in layers if lay.weight in ranges}
    new_params: dict[str, list] = {}          # weight -> its new parameter vars
    new_weights: dict[str, dict] = {}         # weight -> {name: array}
    report: dict[str, dict] = {}

    def param(weight: str, key: str, arr: np.ndarray):
        var = relax.Var(f"{weight}.{key}", relax.TensorType(arr.shape, str(arr.dtype)))
        new_params.setdefault(weight, []).append(var)
        new_weights.setdefault(weight, {})[var.name] = arr
        return var

    def rewrite(lay: Layer, call, a):
        w = lowered.weights[lay.weight]                       # [N, K] or [O, I, kh, kw]
        rng = ranges[lay.weight]
        grouped = lay.op == "conv2d" and int(call.attrs.groups) != 1
        # a grouped conv's filters each read one slice of the channels: no float side conv for outliers there
        out_idx = np.zeros(0, np.int64) if grouped else _outliers(rng)
        inl = np.ones(len(rng), bool)
        inl[out_idx] = False
        sx = max(float(rng[inl].max()), 1e-8) / 127
        w_in = w if grouped else w * inl.reshape((1, -1) + (1,) * (w.ndim - 2))
        rows = w_in.reshape(w.shape[0], -1)
        sw = np.maximum(np.abs(rows).max(axis=1), 1e-12) / 127
        q = np.clip(np.round(w_in / sw.reshape((-1,) + (1,) * (w.ndim - 1))), -127, 127).astype(np.int8)
        ndim = len(a.ty.shape.values)
        bshape = [-1] if lay.op == "linear" else [1, -1, 1, 1]
        mask_shape = [len(rng)] if lay.op == "linear" else [1, len(rng), 1, 1]
        x = a if not len(out_idx) else relax.op.multiply(a, relax.const(inl.astype(np.float32).reshape(mask_shape)))
        xq = relax.op.astype(relax.op.clip(relax.op.round(relax.op.multiply(x, relax.const(np.float32(1 / sx)))),
                                           -127, 127), "int8")
        scale = param(lay.weight, "scale", (sx * sw).astype(np.float32))
        if lay.op == "linear":
            acc = relax.op.matmul(xq, param(lay.weight, "q", np.ascontiguousarray(q.T)), out_dtype="int32")
        else:
            acc = relax.op.nn.conv2d(xq, param(lay.weight, "q", q), strides=call.attrs.strides,
                                     padding=call.attrs.padding, dilation=call.attrs.dilation,
                                     groups=call.attrs.groups, out_dtype="int32")
        y = relax.op.multiply(relax.op.astype(acc, "float32"), relax.op.reshape(scale, bshape))
        if len(out_idx):
            idx = relax.const(out_idx.astype(np.int64))
            taken = relax.op.take(a, idx, axis=ndim - 1 if lay.op == "linear" else 1)
            if lay.op == "linear":
                wo = relax.op.astype(param(lay.weight, "outlier", np.ascontiguousarray(w[:, out_idx].T)
                                           .astype(np.float16)), "float32")
                y = relax.op.add(y, relax.op.matmul(taken, wo))
            else:
                wo = relax.op.astype(param(lay.weight, "outlier", w[:, out_idx].astype(np.float16)), "float32")
                y = relax.op.add(y, relax.op.nn.conv2d(taken, wo, strides=call.attrs.strides,
                                                       padding=call.attrs.padding, dilation=call.attrs.dilation))
        stored = sum(v.nbytes for v in new_weights[lay.weight].values())
        report[lay.weight] = {"scheme": "w8a8", "bits_per_weight": round(8 * stored / w.size, 3), "bytes": int(stored),
                              "activation_scale": sx, "outlier_channels": [int(i) for i in out_idx]}
        return y

    a, w = wildcard(), wildcard()
    linear = is_op("relax.matmul")(a, is_op("relax.permute_dims")(w))
    conv = is_op("relax.nn.conv2d")(a, w)

    def rewriter(expr, matches):
        lay = todo.get(matches[w])
        if lay is None or lay.weight in report:
            return expr
        return rewrite(lay, expr, matches[a])

    body = rewrite_call(linear | conv, rewriter, func)
    params, specs, weights = list(func.params[:n_inputs]), [], {}
    for spec, var in zip(lowered.weight_specs, func.params[n_inputs:]):
        if spec.name in report:
            for v in new_params[spec.name]:
                params.append(v)
                arr = new_weights[spec.name][v.name]
                specs.append(TensorSpec.of(v.name, arr))
                weights[v.name] = arr
        else:
            params.append(var)
            specs.append(spec)
            weights[spec.name] = lowered.weights[spec.name]
    mod = lowered.module.clone()
    mod.update_func(mod.get_global_var("main"), relax.Function(params, body.body, func.ret_ty, func.is_pure,
                                                               func.attrs))
    return Lowered(mod, specs, weights, lowered.sources), report
