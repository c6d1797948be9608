"""Memory budgets and the memory plan an artifact records: which components are resident in each
phase of a run, the bytes each phase holds, and the chunks a component was cut into.

The plan lives in the manifest's `memory_plan` section (schema: manifest.schema.json); the build
writes it (converters/memory_plan.py), runtimes follow it (runtimes/memory_plan.py), `edgegen
inspect` shows it and `edgegen bench` sets the measured peak beside its planned peak.
"""

from __future__ import annotations

import re

# the phases of a text-to-image (or class-to-image) run, in order, and the components each runs
PHASES = (("encode", ("text_encoder", "text_encoder_2")), ("encode_image", ("vae_encoder",)),
          ("denoise", ("unet", "transformer")), ("decode", ("vae_decoder",)))
MODES = ("resident", "phased")   # resident: all loaded at the start; phased: each loaded for its phase
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 10**3, "m": 10**6, "g": 10**9}


def parse_size(text: str | int) -> int:
    """'600MB', '1.5GB', '3MB', '512MiB', or a byte count, to bytes (KB/MB/GB are powers of 1000,
    KiB/MiB/GiB of 1024)."""
    if isinstance(text, int):
        size = text
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
        unit = match and match.group(2).lower()
        if not match or unit not in _UNITS:
            raise ValueError(f"memory size {text!r}: write a number with a unit, e.g. 600MB, 1.5GB, 512MiB "
                             f"(KB/MB/GB are powers of 1000, KiB/MiB/GiB of 1024).")
        size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"memory size {text!r} must be more than zero bytes.")
    return size


def format_size(nbytes: int | float) -> str:
    """Bytes in the unit parse_size reads back: 3.17 MB, 612 KB, 1.50 GB."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}" if nbytes / scale < 100 else f"{nbytes / scale:.0f} {unit}"
    return f"{int(nbytes)} B"


def phases_of(components) -> list[tuple[str, list[str]]]:
    """(phase, its components in run order) for a pipeline's components; a component no phase names
    runs in a phase of its own (a module artifact's one component)."""
    names = list(components)
    out = [(phase, [c for c in members if c in names]) for phase, members in PHASES]
    out = [(phase, members) for phase, members in out if members]
    known = {c for _, members in out for c in members}
    return out + [(c, [c]) for c in names if c not in known]


def chunks_of(plan: dict | None, component: str) -> list[str]:
    """The chunk components `component` was cut into by the plan ([] when it is whole)."""
    return list(((plan or {}).get("components", {}).get(component) or {}).get("chunks", []))
