"""A build killed (SIGKILL) at any moment leaves no half-written artifact: `edgegen run` refuses
the path with a clear message, and a rebuild into it succeeds."""

import signal
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.tvm, pytest.mark.torch, pytest.mark.slow]

# the progress line (stage start) at which each build is killed, and a delay after it
MOMENTS = [("load pipeline", 0.0), ("capture (torch.export)", 0.5), ("compile for cpu", 2.0),
           ("write library and weights", 0.0), ("parity check", 0.0)]


def _edgegen(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "edgegen", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _kill_at(model_dir, out, moment: str, delay: float) -> str:
    proc = _edgegen("build", str(model_dir), "--target", "cpu", "--out", str(out))
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if moment in line and "..." in line:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"the build ended before {moment!r}: {''.join(seen)[-1500:]}"
    return "".join(seen)


def test_killed_builds_leave_nothing_runnable_and_a_rebuild_works(digits_model_dir, tmp_path):
    out = tmp_path / "digits"
    for moment, delay in MOMENTS:
        _kill_at(digits_model_dir, out, moment, delay)
        run = subprocess.run([sys.executable, "-m", "edgegen", "run", str(out), "--label", "3", "--steps", "2",
                              "--out", str(tmp_path / "x.png")], capture_output=True, text=True, timeout=300)
        assert run.returncode != 0, moment
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
        assert "manifest.json is missing" in lines[0] and "has not finished" in lines[0], lines[0]
        assert not out.exists()
    build = subprocess.run([sys.executable, "-m", "edgegen", "build", str(digits_model_dir), "--target", "cpu",
                            "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    run = subprocess.run([sys.executable, "-m", "edgegen", "run", str(out), "--label", "3", "--steps", "2",
                          "--out", str(tmp_path / "three.png")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits", "three.png"]   # no partial folder left
