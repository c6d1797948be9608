"""A clean console: every line the commands print, run as a user runs them, is one of edgegen's
own formats (edgegen.console.LINES, which the CLI prints through), whatever the libraries
underneath say; --verbose still shows what they say."""

import io
import json

import pytest
from conftest import edgegen_cli

from edgegen.console import Progress, is_edgegen_line


def builds(test):
    """Marks a test that builds or runs artifacts."""
    return pytest.mark.slow(pytest.mark.tvm(pytest.mark.torch(test)))


def _foreign(proc, json_stdout: bool = False) -> list[str]:
    """The lines of a finished command that edgegen did not write (stdout holding one JSON document
    with --json, which must parse)."""
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    if json_stdout:
        json.loads(proc.stdout)
    else:
        lines += proc.stdout.splitlines()
    return [line for line in lines if line.strip() and not is_edgegen_line(line)]


def test_formats_match_what_they_format():
    from edgegen.console import LINES, line

    assert is_edgegen_line(line("stage_done", elapsed=12.25, stage="unet: compile for cpu", seconds=3.5))
    assert is_edgegen_line(line("validate_component", name="unet", db=128.96))
    assert not is_edgegen_line("[09:14:34] /project/include/tvm/topi/transform.h:1261: Warning: Fast mode")
    assert not is_edgegen_line("/usr/lib/python3.11/copyreg.py:105: FutureWarning: deprecated")
    assert not is_edgegen_line("  return cls.__new__(cls, *args)")
    assert len(LINES) == len(set(LINES.values()))


@pytest.mark.parametrize("bar", [False, True])
def test_progress_of_a_stepped_stage(bar):
    stream = io.StringIO()
    progress = Progress(stream=stream, bar=bar)
    progress("steps", "denoise", 4)
    for done in range(1, 5):
        progress("step", "denoise", done)
    text = stream.getvalue()
    last = text.splitlines()[-1]
    assert last.startswith("[") and "denoise: 4 steps in" in last and is_edgegen_line(last)
    assert ("0/4 [" in text) == bar          # the bar was drawn, or only the line written
    quiet = io.StringIO()
    Progress(stream=quiet, quiet=True)("start", "load")
    assert quiet.getvalue() == ""


@builds
def test_cpu_build(tiny_build_process):
    assert _foreign(tiny_build_process[1], json_stdout=True) == []


@builds
@pytest.mark.parametrize("target", ["adreno", pytest.param("onnx", marks=[pytest.mark.onnx, pytest.mark.optimum]),
                                    pytest.param("coreml", marks=pytest.mark.coreml)])
def test_build(tiny_sd_dir, tmp_path, target):
    assert _foreign(edgegen_cli("build", tiny_sd_dir, "--target", target, "--out", tmp_path / target)) == []


@builds
def test_validate_and_run(tiny_artifact, tiny_sd_dir, tmp_path):
    validate = edgegen_cli("validate", tiny_artifact, tiny_sd_dir, "--steps", "3")
    assert _foreign(validate) == [] and "PASS" in validate.stdout
    run = edgegen_cli("run", tiny_artifact, "--prompt", "a cat", "--steps", "3", "--out", tmp_path / "cat.png")
    assert _foreign(run) == [] and "denoise: 3 steps in" in run.stderr


@builds
def test_demo(digits_artifact, tmp_path):
    # the cached build of the committed model is current, so this is the sampling part of the demo;
    # the build part is the CPU build checked above
    demo = edgegen_cli("demo", "--cache", digits_artifact.parent, "--out", tmp_path / "demo.png")
    assert _foreign(demo) == [] and "class accuracy" in demo.stdout


@builds
def test_verbose_shows_the_libraries_lines(tiny_artifact, tiny_sd_dir):
    # diffusers' bar while it loads the reference pipeline, at least
    assert _foreign(edgegen_cli("validate", tiny_artifact, tiny_sd_dir, "--steps", "1", "--verbose"))
