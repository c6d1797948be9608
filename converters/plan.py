"""What a model family hands the build: its components to compile and its pipeline section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .capture import Captured


@dataclass
class Plan:
    components: dict[str, Captured]      # name -> module with example inputs, compiled in this order
    pipeline: dict                       # the manifest's pipeline section
    write_extra: Callable                # write(writer) -> dict merged into the pipeline section
