"""Helpers shared by the benchmarks: timing, peers, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def time_call(fn, warmup: int = 3, runs: int = 20) -> dict:
    """Median and spread of fn() wall time in milliseconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return {"median_ms": statistics.median(samples), "min_ms": samples[0],
            "p90_ms": samples[int(0.9 * (len(samples) - 1))], "runs": runs}


def onnx_session(captured, path: Path, threads: int):
    """The captured torch module exported by edgegen's ONNX exporter, in an onnxruntime CPU session."""
    from edgegen.converters import onnx_export

    onnx_export.export(captured, path)
    return onnx_export.session(path, threads)


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                           "python": platform.python_version()}, **payload}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1))
    return path


def print_table(rows: list[dict], baseline: str) -> None:
    base = next(r["median_ms"] for r in rows if r["name"] == baseline)
    print(f"{'runner':28s} {'median ms':>10s} {'min ms':>9s} {'vs ' + baseline:>14s}")
    for r in rows:
        print(f"{r['name']:28s} {r['median_ms']:10.2f} {r['min_ms']:9.2f} {r['median_ms'] / base:13.2f}x")
