"""`edgegen bench`: latency and memory of an artifact, here, on a device behind TVM's RPC tracker,
or on a phone or board over ssh or adb running the native `edgegen-run --bench`.

The measuring runs in a worker process that reports each result as one JSON line
(for ssh:// and adb:// devices the worker is edgegen/remote.py, which relays the
remote binary's lines); this side reads them with a deadline per line, so a device
that disconnects, hangs or fails mid-run becomes a per-run error in the report
within a bounded time, never a hang.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class BenchReport:
    artifact: str
    device: str
    runs: int
    warmup: int
    steps: int
    cold_start_s: float | None = None
    threads: int | None = None                        # CPU threads the artifact's calls used
    components: dict = field(default_factory=dict)    # name -> {"ms": [...], "errors": [...]}
    image_s: float | None = None                      # end to end, per image
    peak_rss_bytes: int | None = None
    memory_note: str = ""
    planned_peak_bytes: int | None = None             # the artifact's memory plan (its model's bytes, no runtime)
    errors: list = field(default_factory=list)
    total_s: float = 0.0
    remote: dict | None = None                        # ssh/adb: architecture, binary, remote paths, copy

    @staticmethod
    def _stats(ms: list[float]) -> dict:
        if not ms:
            return {}
        a = np.asarray(ms)
        return {"median_ms": round(float(np.median(a)), 3), "min_ms": round(float(a.min()), 3),
                "max_ms": round(float(a.max()), 3),
                "iqr_ms": round(float(np.percentile(a, 75) - np.percentile(a, 25)), 3)}

    def to_json(self) -> dict:
        comps = {n: {**self._stats(c["ms"]), "runs_ok": len(c["ms"]), "errors": c["errors"]}
                 for n, c in self.components.items()}
        return {"artifact": self.artifact, "device": self.device, "runs": self.runs, "warmup": self.warmup,
                "steps": self.steps, "threads": self.threads, "cold_start_s": self.cold_start_s, "components": comps,
                "image_s": self.image_s, "peak_rss_bytes": self.peak_rss_bytes, "memory_note": self.memory_note,
                "planned_peak_bytes": self.planned_peak_bytes,
                "errors": self.errors, "total_s": round(self.total_s, 3), "ok": not self.failed,
                **({"remote": self.remote} if self.remote else {})}

    @property
    def failed(self) -> bool:
        return bool(self.errors) or any(c["errors"] for c in self.components.values())


# A remote device that sends nothing for this long (plus twice what the runs so far say the next call
# takes) is taken for hung or gone. A local bench has no such limit: it watches its worker process.
DEVICE_TIMEOUT_S = 120.0


def bench(artifact: str, device: str = "local", runs: int = 10, warmup: int = 2, steps: int = 20,
          run_timeout_s: float | None = None, total_timeout_s: float = 1800.0, threads: int | None = None,
          on_event=None, native_binary: str | None = None) -> BenchReport:
    """Measure `artifact` on `device`: "local", rpc://TRACKER_HOST:PORT/KEY, or ssh://[user@]host[:port]
    and adb://SERIAL, which run the native edgegen-run there (edgegen/remote.py; native_binary: the
    edgegen-run to copy instead of the one built for the device's architecture). `on_event(event)`
    sees each result as it arrives (a dict with "event": cold_start | run | expect | image | memory | error,
    and on ssh/adb devices copy | remote).
    run_timeout_s: the longest wait for one result beyond twice its expected time (default: none here,
    DEVICE_TIMEOUT_S on a remote device); total_timeout_s bounds the whole bench. threads: CPU threads
    for the artifact's calls (default: every core the worker may use)."""
    from edgegen.core import Artifact

    art = Artifact.open(artifact)
    plan = art.manifest.get("memory_plan") or {}
    chunks = {c for entry in plan.get("components", {}).values() for c in entry.get("chunks", [])}
    names = [n for n in art.components if n not in chunks] + [n for n in plan.get("components", {})
                                                              if n not in art.components]
    report = BenchReport(artifact=str(art.root), device=device, runs=runs, warmup=warmup, steps=steps,
                         components={n: {"ms": [], "errors": []} for n in names},
                         planned_peak_bytes=plan.get("peak_bytes"))
    config = {"artifact": str(art.root), "device": device, "runs": runs, "warmup": warmup, "steps": steps,
              "session_timeout_s": total_timeout_s, "threads": threads}
    if native_binary:
        config["native_binary"] = str(native_binary)
    limit = run_timeout_s if run_timeout_s is not None or device == "local" else DEVICE_TIMEOUT_S
    t0 = time.perf_counter()
    proc = subprocess.Popen(_worker_argv(device, config), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    stopped, expected, pending = None, 0.0, b""
    try:
        while True:
            total_left = total_timeout_s - (time.perf_counter() - t0)
            wait = total_left if limit is None else min(limit + 2 * expected, total_left)
            if total_left <= 0 or not sel.select(timeout=max(wait, 0)):
                stopped = _limit_message(device, proc, limit, expected, total_timeout_s, total_left <= wait)
                break
            # the pipe itself, not a buffered reader: lines that came together are all handled now, and
            # none waits in a buffer the next select() cannot see
            chunk = os.read(proc.stdout.fileno(), 1 << 16)
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines + ([pending] if not chunk else []):
                if not line.strip():
                    continue
                event = json.loads(line)
                expected = event.get("expect_s", expected)
                _record(report, event)
                if on_event is not None:
                    on_event(event)
            if not chunk:
                break
    finally:
        try:   # the worker's group: an ssh or adb client it started goes with it
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        sel.close()
        stderr = proc.stderr.read().strip().splitlines()
    if stopped is None and proc.returncode != 0 and not report.errors:
        stopped = f"the bench worker exited with code {proc.returncode}: " + (stderr[-1] if stderr else "")
    short = {n: len(c["ms"]) + len(c["errors"]) for n, c in report.components.items()
             if len(c["ms"]) + len(c["errors"]) < runs}
    if stopped is None and short and not report.errors:
        stopped = (f"the bench ended before its runs did: {', '.join(f'{n} {k} of {runs}' for n, k in short.items())}"
                   + (f" ({stderr[-1]})" if stderr else ""))
    if stopped:
        report.errors.append(stopped)
    if report.errors:
        for comp in report.components.values():   # the runs that never happened
            missing = runs - len(comp["ms"]) - len(comp["errors"])
            comp["errors"] += [f"not run: {report.errors[0]}"] * max(missing, 0)
    report.total_s = time.perf_counter() - t0
    return report


def _worker_argv(device: str, config: dict) -> list[str]:
    """The worker process that prints the bench's event lines: this module's own worker (local,
    rpc://), or edgegen.remote, which runs edgegen-run over ssh or adb and relays its lines."""
    from edgegen.remote import is_remote

    module = "edgegen.remote" if is_remote(device) else "edgegen.bench"
    return [sys.executable, "-m", module, json.dumps(config)]


def _limit_message(device: str, proc, limit: float | None, expected: float, total_s: float, total: bool) -> str:
    """Which limit stopped the bench, and the flag that raises it; a device is called hung or gone
    only where nothing says otherwise (a local worker still running is merely slow)."""
    if total:
        return (f"the bench ran past its {total_s:.0f} s limit on the whole run (raise it with --total-timeout)"
                + ("; the worker was still working" if proc.poll() is None else ""))
    waited = f"{limit:.0f} s" + (f" + 2 x {expected:.1f} s expected" if expected else "")
    if device == "local" and proc.poll() is None:
        return (f"no result for {waited} (--run-timeout {limit:g}); the worker is still running: the work takes "
                f"longer than that limit, raise --run-timeout or leave it unset to wait as long as it takes")
    return (f"no result from the device for {waited} (--run-timeout {limit:g}): the device or its server hung "
            f"or died, or one call takes longer than that (raise --run-timeout)")


def _record(report: BenchReport, event: dict) -> None:
    kind = event["event"]
    if kind == "cold_start":
        report.cold_start_s, report.threads = event["seconds"], event.get("threads")
    elif kind == "run":
        comp = report.components.setdefault(event["component"], {"ms": [], "errors": []})
        if "error" in event:
            comp["errors"].append(event["error"])
        else:
            comp["ms"].append(event["ms"])
    elif kind == "image":
        report.image_s = event["seconds"]
    elif kind == "memory":
        report.peak_rss_bytes, report.memory_note = event.get("rss_bytes"), event.get("note", "")
    elif kind == "error":
        report.errors.append(event["error"])
    elif kind == "remote":
        report.remote = {k: v for k, v in event.items() if k != "event"}


# ---- the worker: runs in its own process, one JSON line per result ----

def _emit(**event) -> None:
    print(json.dumps(event), flush=True)


def example_inputs(component) -> dict[str, np.ndarray]:
    """Deterministic inputs of the component's shapes: normal floats, one timestep (500) for
    every row of 1-D float inputs, zero ids and labels."""
    rng = np.random.default_rng(0)
    out = {}
    for spec in component.inputs:
        dtype = np.dtype(spec.dtype)
        if dtype.kind != "f":
            out[spec.name] = np.zeros(spec.shape, dtype)
        elif len(spec.shape) == 1:
            out[spec.name] = np.full(spec.shape, 500, dtype)
        else:
            out[spec.name] = rng.standard_normal(spec.shape).astype(dtype)
    return out


def _release(session) -> None:
    """Free a component a phased memory plan loads for its phase (runtimes/memory_plan.LazySession)."""
    release = getattr(session, "release", None)
    if release is not None:
        release()


def _worker(config: dict) -> int:
    import resource

    from edgegen import runtimes
    from edgegen.profiling import calls_per_image

    device, runs, warmup, threads = config["device"], config["runs"], config["warmup"], config["threads"]
    t0 = time.perf_counter()
    try:
        factory = None
        if device != "local":
            from edgegen.runtimes.tvm_rpc import connect, remote_session

            remote = connect(device, config["session_timeout_s"])
            factory = lambda art, name: remote_session(art, art.component(name), remote, threads)  # noqa: E731
        pipe = runtimes.load(config["artifact"], session_factory=factory, threads=threads)
        feeds = {name: example_inputs(s.component) for name, s in pipe.sessions.items()}
        first_call = {}
        for name, session in pipe.sessions.items():
            t = time.perf_counter()
            session.run(**feeds[name])
            first_call[name] = time.perf_counter() - t
            _release(session)       # a phased plan holds one phase's components at a time
        _emit(event="cold_start", seconds=round(time.perf_counter() - t0, 4),
              threads=runtimes.threads_used(pipe.sessions.values()), expect_s=round(max(first_call.values()), 3))
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the parent writes the report
        _emit(event="error", error=f"load: {type(exc).__name__}: {exc}")
        return 1
    call_s = {}
    for name, session in pipe.sessions.items():
        times = []
        for i in range(warmup + runs):
            try:
                t = time.perf_counter()
                session.run(**feeds[name])
                times.append(time.perf_counter() - t)
                if i >= warmup:
                    _emit(event="run", component=name, ms=round(times[-1] * 1e3, 4))
            except Exception as exc:  # noqa: BLE001
                _emit(event="run", component=name, error=f"{type(exc).__name__}: {str(exc)[:300]}")
        call_s[name] = float(np.median(times)) if times else first_call[name]
        _release(session)
    try:
        kind = pipe.artifact.pipeline["kind"]
        per_image = 1 if kind == "stable-diffusion" else pipe.batch
        calls = calls_per_image(pipe.artifact.pipeline, config["steps"])
        _emit(event="expect", expect_s=round(per_image * sum(calls.get(n, 0) * s for n, s in call_s.items()), 3))
        t = time.perf_counter()
        if kind == "stable-diffusion":
            pipe("a photo of an astronaut riding a horse", num_inference_steps=config["steps"], seed=0)
        else:
            pipe(list(range(per_image)), num_inference_steps=config["steps"], seed=0)
        _emit(event="image", seconds=round((time.perf_counter() - t) / per_image, 4))
    except Exception as exc:  # noqa: BLE001
        _emit(event="error", error=f"end-to-end: {type(exc).__name__}: {str(exc)[:300]}")
    if device == "local":
        _emit(event="memory", rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
              note="peak resident set size of the process that loaded and ran the artifact")
    else:
        _emit(event="memory", rss_bytes=None,
              note="TVM's RPC server does not report its memory; read it on the device")
    return 0


if __name__ == "__main__":
    sys.exit(_worker(json.loads(sys.argv[1])))
