"""`edgegen bench` here and on a device behind a real TVM RPC tracker and server on loopback,
including a server that dies or hangs mid-run."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from edgegen.bench import bench
from edgegen.core.cpus import available_cores

pytestmark = [pytest.mark.tvm, pytest.mark.torch, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Farm:
    """A tracker and one server registered under `key`, each in its own process group."""

    def __init__(self, key="loopback"):
        self.key, self.port = key, _free_port()
        self.tracker = self._start("tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(self.port),
                                   "--port-end", str(self.port + 1))
        self.server = None

    @staticmethod
    def _start(module, *args):
        return subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)

    def start_server(self):
        port = _free_port()
        self.server = self._start("tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{self.port}", "--key", self.key,
                                  "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 50))
        from tvm import rpc

        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if rpc.connect_tracker("127.0.0.1", self.port).summary()["queue_info"].get(self.key, {}).get("free"):
                    return
            except Exception:  # noqa: BLE001 - the tracker is still starting
                pass
            time.sleep(0.5)
        raise RuntimeError("the RPC server did not register with the tracker")

    @property
    def url(self):
        return f"rpc://127.0.0.1:{self.port}/{self.key}"

    def signal_server(self, sig):
        os.killpg(self.server.pid, sig)

    def close(self):
        for p in (self.server, self.tracker):
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


@pytest.fixture
def farm():
    f = Farm()
    f.start_server()
    yield f
    f.close()


def test_local(tiny_artifact):
    report = bench(str(tiny_artifact), runs=3, warmup=1, steps=2)
    data = report.to_json()
    assert data["ok"], data
    assert set(data["components"]) == {"text_encoder", "unet", "vae_decoder"}
    for comp in data["components"].values():
        assert comp["runs_ok"] == 3 and 0 < comp["min_ms"] <= comp["median_ms"] <= comp["max_ms"]
    assert report.cold_start_s > 0 and report.image_s > 0 and report.peak_rss_bytes > 10e6
    assert report.threads == int(os.environ.get("TVM_NUM_THREADS", available_cores()))
    assert bench(str(tiny_artifact), runs=1, warmup=0, steps=1, threads=1).threads == 1


@pytest.mark.rpc
def test_rpc_device(tiny_artifact, farm):
    report = bench(str(tiny_artifact), device=farm.url, runs=3, warmup=1, steps=2, run_timeout_s=60)
    data = report.to_json()
    assert data["ok"], data
    assert all(c["runs_ok"] == 3 for c in data["components"].values())
    assert report.image_s > 0 and report.peak_rss_bytes is None and "RPC" in report.memory_note


def _signal_after_first_unet_run(farm, sig, when: list):
    """An on_event callback that sends `sig` to the server once the first UNet run has come back."""
    def on_event(event):
        if event.get("component") == "unet" and not when:
            farm.signal_server(sig)
            when.append(time.perf_counter())
    return on_event


@pytest.mark.rpc
def test_rpc_server_killed_mid_run(tiny_artifact, farm):
    killed = []
    report = bench(str(tiny_artifact), device=farm.url, runs=20, warmup=0, steps=2, run_timeout_s=20,
                   on_event=_signal_after_first_unet_run(farm, signal.SIGKILL, killed))
    unet = report.components["unet"]
    assert killed and report.failed
    assert 1 <= len(unet["ms"]) < 20 and len(unet["ms"]) + len(unet["errors"]) == 20
    assert len(report.components["vae_decoder"]["errors"]) == 20       # never ran: the device is gone
    assert time.perf_counter() - killed[0] < 60                         # bounded, no hang


@pytest.mark.rpc
def test_rpc_server_hangs(tiny_artifact, farm):
    stopped = []
    report = bench(str(tiny_artifact), device=farm.url, runs=10, warmup=0, steps=2, run_timeout_s=5,
                   on_event=_signal_after_first_unet_run(farm, signal.SIGSTOP, stopped))
    farm.signal_server(signal.SIGCONT)
    assert stopped and report.failed
    assert any("no result from the device" in e for e in report.errors)
    assert len(report.components["unet"]["ms"]) + len(report.components["unet"]["errors"]) == 10
    assert time.perf_counter() - stopped[0] < 30


def test_no_such_device(tiny_artifact):
    report = bench(str(tiny_artifact), device=f"rpc://127.0.0.1:{_free_port()}/nobody", runs=2, run_timeout_s=60)
    assert report.failed and "no device" in report.errors[0]


def test_local_limits_name_their_flag(tiny_artifact):
    """A local worker that is still working is slow, not dead: the message names the limit and its flag."""
    slow = bench(str(tiny_artifact), runs=1, warmup=0, steps=2, run_timeout_s=0.01)
    assert slow.failed and "--run-timeout" in slow.errors[0] and "still running" in slow.errors[0]
    assert "device" not in slow.errors[0]
    whole = bench(str(tiny_artifact), runs=1, warmup=0, steps=2, total_timeout_s=0.5)
    assert whole.failed and "--total-timeout" in whole.errors[0]
