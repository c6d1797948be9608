"""What a model family hands the build: its components to compile and its pipeline section."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .capture import Captured


@dataclass
class Plan:
    components: dict[str, Captured]      # name -> module with example inputs, compiled in this order
    pipeline: dict                       # the manifest's pipeline section
    scheduler_config: dict               # written to scheduler/scheduler_config.json
    write_extra: Callable = field(default=lambda writer: {})  # write(writer) -> dict merged into `pipeline`
    # calibrate() -> {component: [inputs, ...]} from real runs of the source pipeline, and
    # end_output(component, {torch parameter: value}) -> final outputs in [0, 1] (converters.calibrate)
    calibrate: Callable | None = None
    end_output: Callable | None = None
