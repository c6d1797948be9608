"""What edgegen writes on the console. Every line format the commands print is defined here
(the CLI prints through `line`; the console test checks a command's output against the same
formats), with the progress display: stage lines, and a bar per stepped stage on a terminal."""

from __future__ import annotations

import re
import string
import sys
import time

LINES = {
    # progress, on stderr
    "stage_start": "[{elapsed:6.1f}s] {stage} ...",
    "stage_done": "[{elapsed:6.1f}s] {stage}: done in {seconds:.1f}s",
    "stage_detail": "           {detail}",
    "steps_done": "[{elapsed:6.1f}s] {stage}: {steps:d} steps in {seconds:.1f}s, {rate:.1f} steps/s",
    "error": "edgegen {command}: error: {message}",
    # build
    "built": "built {artifact} for {target} in {seconds:.1f}s, {mb:.2f} MB",
    "built_component": "  {name:14s} {mb:8.2f} MB  {measured}{quant}",
    "built_rss": "  build peak RSS {mib:.0f} MiB",
    "built_fallback": "  {blank:14s} {scheme}: {reason}",
    "built_memory": "  memory plan: {mode}, planned peak {peak} for a budget of {budget}{chunks}",
    "built_note": "  ({note})",
    "built_final_check": "  final output vs {reference}, {steps:d} steps: {db:.2f} dB (gate {gate:.0f} dB)",
    "final_not_measured": "final output not measured: {reason}",
    # run
    "wrote": "wrote {image} (load {load:.2f}s, denoise {denoise:.2f}s)",
    # validate
    "validate_reference": "reference: diffusers in torch on {device}",
    "validate_tokens": "tokenizer ids match: {match}",
    "validate_component": "  {name:14s} {db:7.2f} dB",
    "validate_steps": "  per-step latent PSNR (dB): {values}",
    "validate_image": "  final image    {db:7.2f} dB (gate {gate} dB)",
    "validate_trace": "  {name}: first NaN/Inf kernel {kernel}; first float16 overflow {overflow} "
                      "({checked:d} kernels checked)",
    "validate_bisect_reason": "  bisect: {reason}",
    "validate_bisect": "  bisect {component}: {compared:d} outputs compared, first under {gate:g} dB: {first}",
    "validate_report": "  report: {path}/report.md",
    "validate_pass": "PASS",
    "validate_fail": "FAIL: {failures}",
    # demo
    "demo_image": "wrote {image}: 10x10 digits (one digit per row), {steps:d} steps, guidance {guidance}",
    "demo_accuracy": "class accuracy {accuracy:.1%} over {images:d} images; {ms:.1f} ms per image on this CPU "
                     "({threads} threads)",
    # web
    "web_site": "wrote the site {folder}: serve it with any static file server and open index.html",
    "web_serving": "serving {folder} on {url} (Ctrl-C stops)",
}

_NUMBER = r"\s*[-+]?(?:\d[\d,]*\.?\d*(?:e[-+]?\d+)?|nan|inf)%?"


def line(kind: str, /, **fields) -> str:
    return LINES[kind].format(**fields)


def _pattern(template: str) -> re.Pattern:
    parts = []
    for literal, field, spec, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field is not None:
            kind = spec[-1:] if spec else ""
            parts.append(_NUMBER if kind in "efg%" and kind else r"\s*-?\d+" if kind == "d" else r".*?")
    return re.compile("".join(parts))


PATTERNS = {name: _pattern(t) for name, t in LINES.items()}


def is_edgegen_line(text: str) -> bool:
    """Whether `text` is a line of one of edgegen's formats."""
    return any(p.fullmatch(text) for p in PATTERNS.values())


class Progress:
    """The progress callback of builds, pipelines, validate and the demo: event "start" / "end" /
    "log" (a stage begins, ends after `value` seconds, a line of detail), "steps" (a stage of
    `value` steps begins) and "step" (`value` of its steps are done). Stage lines go to `stream`
    (stderr); a stepped stage shows a bar with steps per second and time left there when it is a
    terminal, and one line when it ends otherwise. Nothing with quiet."""

    def __init__(self, stream=None, quiet: bool = False, bar: bool | None = None):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.bar = _isatty(self.stream) if bar is None else bar
        self.t0 = time.perf_counter()
        self._stepped: dict = {}

    def _write(self, kind: str, **fields) -> None:
        print(line(kind, elapsed=time.perf_counter() - self.t0, **fields), file=self.stream, flush=True)

    def __call__(self, event: str, stage: str, value: float = 0.0) -> None:
        if self.quiet:
            return
        if event == "start":
            self._write("stage_start", stage=stage)
        elif event == "end":
            self._write("stage_done", stage=stage, seconds=value)
        elif event == "log":
            print(line("stage_detail", detail=stage), file=self.stream, flush=True)
        elif event == "steps":
            self._begin(stage, int(value))
        elif event == "step":
            self._advance(stage, int(value))

    def _begin(self, stage: str, total: int) -> None:
        bar = None
        if self.bar:
            try:
                from tqdm import tqdm
            except ImportError:    # without tqdm: the line at the end, as off a terminal
                tqdm = None
            if tqdm is not None:
                bar = tqdm(total=total, desc=stage, unit="step", file=self.stream, leave=False, dynamic_ncols=True)
        self._stepped[stage] = {"total": total, "done": 0, "t0": time.perf_counter(), "bar": bar}

    def _advance(self, stage: str, done: int) -> None:
        s = self._stepped.get(stage)
        if s is None:
            return
        if s["bar"] is not None:
            s["bar"].update(done - s["done"])
        s["done"] = done
        if done >= s["total"]:
            del self._stepped[stage]
            if s["bar"] is not None:
                s["bar"].close()
            seconds = time.perf_counter() - s["t0"]
            self._write("steps_done", stage=stage, steps=done, seconds=seconds, rate=done / max(seconds, 1e-9))


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
