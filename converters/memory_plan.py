"""The memory plan: which components are resident in each phase, and which are cut into chunks, for a
budget; made before anything is compiled (from the exported graphs) and restated from the built files.

Modes, tried in order, first fit wins:
- resident: every component loaded at the start (no load during a run); peak = all weights + the
  largest arena of a phase;
- phased: each phase loads its components and frees them when it ends (the text encoder is freed
  after encoding, the VAE decoder loaded after denoising); peak = the largest component's weights
  plus its arena;
- phased with chunks: a component that alone exceeds the budget is cut at graph boundaries
  (converters/partition.best_cuts) and its chunks are loaded and freed one by one on each call.
"""

from __future__ import annotations

from edgegen.core.errors import BudgetError
from edgegen.core.memory import format_size, phases_of

from . import capture, partition


def exported_graph(cap):
    """The unlifted torch.export graph of a captured component (weights as get_attr nodes)."""
    from edgegen.core.quiet import warnings_hidden

    from .lower import TORCH_LEAFSPEC_COPY

    with warnings_hidden(TORCH_LEAFSPEC_COPY):
        return capture.export(cap).module()


def measure(components: dict, scheme) -> dict:
    """name -> GraphMemory of each captured component (its graph is dropped: a cut re-exports it)."""
    return {name: partition.analyse(exported_graph(cap), scheme) for name, cap in components.items()}


def chunked(name: str, cap, cuts: list[int], scheme) -> list:
    """(chunk name, Captured) of `cap` cut after the ops `cuts` index."""
    gm = exported_graph(cap)
    return partition.split(cap, gm, partition.analyse(gm, scheme), cuts, name)


def chunk_calibration(units: dict, calibration: dict) -> dict:
    """Calibration inputs per built unit: a chunk's are what the chunks before it give on each of its
    component's calibration inputs (torch runs of the chunks, in order)."""
    out = {name: samples for name, samples in calibration.items() if name in units}
    by_component: dict = {}
    for name in units:
        base, _, k = name.rpartition("_chunk")
        if base and k.isdigit() and base in calibration:
            by_component.setdefault(base, []).append(name)
    for base, chunks in by_component.items():
        values = [dict(sample) for sample in calibration[base]]
        for name in chunks:
            cap = units[name]
            out[name] = [{k: v[k] for k in cap.inputs} for v in values]
            for v in values:
                v.update(capture.run_torch(capture.Captured(cap.family, cap.module, {k: v[k] for k in cap.inputs},
                                                            cap.outputs)))
    return out


def _phase_rows(mode: str, phases, cost: dict) -> list[dict]:
    """One row per phase: the weights resident while it runs, the arena, the peak. `cost`: component ->
    list of (weight bytes, arena bytes), one per chunk (one item for a whole component)."""
    total = sum(w for parts in cost.values() for w, _ in parts)
    rows = []
    for phase, members in phases:
        if mode == "resident":
            arena = max(a for c in members for _, a in cost[c])
            rows.append({"phase": phase, "components": members, "weight_bytes": total, "arena_bytes": arena,
                         "peak_bytes": total + arena})
            continue
        w, a = max(((w, a) for c in members for w, a in cost[c]), key=lambda wa: wa[0] + wa[1])
        rows.append({"phase": phase, "components": members, "weight_bytes": w, "arena_bytes": a,
                     "peak_bytes": w + a})
    return rows


def make(measured: dict, budget: int, source: str) -> tuple[dict, dict]:
    """(the manifest's memory plan, {component: cut op indices}) for `budget` bytes, or BudgetError
    naming the least budget any plan fits."""
    phases = phases_of(measured)
    whole = {n: [(m.total_weight_bytes, m.arena_bytes)] for n, m in measured.items()}
    plan = {"budget_bytes": int(budget), "budget_source": source, "estimated_from": "exported graphs"}
    for mode in ("resident", "phased"):
        rows = _phase_rows(mode, phases, whole)
        if max(r["peak_bytes"] for r in rows) <= budget:
            return _finish(plan, mode, rows, measured, {}), {}
    cuts, cost = {}, dict(whole)
    for name, mem in measured.items():
        if whole[name][0][0] + whole[name][0][1] <= budget:
            continue
        found = partition.best_cuts(mem, budget)
        if found is None:
            smallest = max(partition.smallest_budget(m) for m in measured.values())
            raise BudgetError(
                f"memory budget {format_size(budget)} ({budget} bytes): component {name!r} needs "
                f"{format_size(whole[name][0][0] + whole[name][0][1])} (weights {format_size(whole[name][0][0])}, "
                f"arena {format_size(whole[name][0][1])}) and no cut at its graph boundaries brings every chunk "
                f"under the budget; the smallest budget a plan fits is {format_size(smallest)} ({smallest} bytes). "
                f"Raise --memory-budget to at least that, or quantize the weights (--quant w4g32).", budget, smallest)
        cuts[name] = found
        bounds = [-1, *found, len(mem.ops) - 1]
        cost[name] = [_chunk(mem, a + 1, b) for a, b in zip(bounds, bounds[1:])]
    rows = _phase_rows("phased", phases, cost)
    plan = _finish(plan, "phased", rows, measured, cuts)
    for name in cuts:
        plan["components"][name]["chunk_estimates"] = [{"weight_bytes": w, "arena_bytes": a} for w, a in cost[name]]
    return plan, cuts


def _chunk(mem, a: int, b: int) -> tuple[int, int]:
    names = set().union(*mem.weights[a:b + 1])
    return int(sum(mem.weight_bytes[n] for n in names)), int(max(mem.live[a:b + 1]))


def _finish(plan: dict, mode: str, rows: list, measured: dict, cuts: dict) -> dict:
    components = {}
    for name, mem in measured.items():
        entry = {"weight_bytes": mem.total_weight_bytes, "arena_bytes": mem.arena_bytes}
        if name in cuts:
            entry["chunks"] = [f"{name}_chunk{k + 1}" for k in range(len(cuts[name]) + 1)]
            entry["cuts"] = [{"after_module": mem.modules[i], "after_op": mem.ops[i].name,
                              "crossing_bytes": int(mem.crossing[i]),
                              "reason": f"{name} alone ({format_size(entry['weight_bytes'] + entry['arena_bytes'])}) "
                                        f"exceeds the budget; cuts at graph boundaries chosen to minimise the "
                                        f"bytes crossing them with every chunk under the budget"}
                             for i in cuts[name]]
        components[name] = entry
    plan.update(mode=mode, peak_bytes=max(r["peak_bytes"] for r in rows), phases=rows, components=components)
    return plan


def restate(plan: dict, built: dict) -> dict:
    """The plan with the built components' bytes: `built` maps each built component (chunks by their
    own names) to (weight bytes of its files, arena bytes or None). Weights become exact; an arena
    left None (the CPU's: the Relax VM plans its own) stays the graph's estimate, a GPU plan's arena
    is its launch plan's."""
    cost = {}
    for name, entry in plan["components"].items():
        parts = entry.get("chunks") or [name]
        estimates = [(e["weight_bytes"], e["arena_bytes"]) for e in entry.get("chunk_estimates", [])] \
            or [(entry["weight_bytes"], entry["arena_bytes"])]
        cost[name] = [(built[p][0], built[p][1] if built[p][1] is not None else est[1])
                      for p, est in zip(parts, estimates)]
        entry["built"] = [{"component": p, "weight_bytes": w, "arena_bytes": a} for p, (w, a) in zip(parts, cost[name])]
    rows = _phase_rows(plan["mode"], [(r["phase"], r["components"]) for r in plan["phases"]], cost)
    return {**plan, "estimated_peak_bytes": plan["peak_bytes"], "peak_bytes": max(r["peak_bytes"] for r in rows),
            "phases": rows, "estimated_from": "exported graphs; weights as built"}


def check_built(plan: dict) -> None:
    """The plan restated from the built files still fits its budget (BudgetError otherwise: the
    artifact is not written)."""
    if plan["peak_bytes"] <= plan["budget_bytes"]:
        return
    worst = max(plan["phases"], key=lambda r: r["peak_bytes"])
    raise BudgetError(
        f"memory budget {format_size(plan['budget_bytes'])}: the built components need {format_size(plan['peak_bytes'])} "
        f"in phase {worst['phase']!r} (weights {format_size(worst['weight_bytes'])}, arena "
        f"{format_size(worst['arena_bytes'])}), more than the {format_size(plan['estimated_peak_bytes'])} the exported "
        f"graphs gave; the artifact was not written. Raise --memory-budget to {format_size(plan['peak_bytes'])}.",
        plan["budget_bytes"], plan["peak_bytes"])
