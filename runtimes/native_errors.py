"""Failures of a backend's native library (TVM, pyopencl, wgpu) turned into ArtifactErrors that
name the component and the file, instead of the library's own traceback."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from edgegen.core.errors import ArtifactError, EdgegenError

_DETAIL_CHARS = 300


def first_line(exc: BaseException) -> str:
    """The gist of an exception's message on one line: its first line, and the next ones while that
    is short (TVM's messages carry a C++ backtrace after the first line; wgpu's start with a title)."""
    lines = [ln.strip() for ln in str(exc).splitlines()
             if ln.strip() and not ln.strip().startswith(("File ", "Caused by", "│", "┌", "^"))]
    text = lines[0] if lines else type(exc).__name__
    for line in lines[1:4]:
        if len(text) >= 80:
            break
        text += "; " + line
    return text if len(text) <= _DETAIL_CHARS else text[:_DETAIL_CHARS] + "…"


@contextmanager
def wrapped(component: str, what: str, path: str | Path):
    """Run the body; any failure other than an EdgegenError becomes an ArtifactError saying that
    `what` (e.g. "loading the library") of `path` failed for `component`."""
    try:
        yield
    except EdgegenError:
        raise
    except Exception as exc:  # noqa: BLE001 - each native library raises its own types
        raise ArtifactError(f"component {component!r}: {what} {path} failed ({type(exc).__name__}: "
                            f"{first_line(exc)}); the file is corrupt or does not belong to this artifact: "
                            f"copy the artifact again or rebuild it.") from exc
