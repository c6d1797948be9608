"""`edgegen bench --device ssh://...` against a real sshd on loopback (a temporary config, host key
and client key; root may log in with that key only), and what of adb:// runs without a phone.

The transport tests copy a small shell script in place of edgegen-run: it prints the bench's event
lines on a schedule the test sets (then goes silent, or keeps going while the connection is cut).
The full bench runs the real native edgegen-run on a digits GPU artifact."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgegen import remote
from edgegen.bench import bench

SSHD = "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgegen-test", "-f", str(path)],
                   check=True, capture_output=True)
    return path


class Sshd:
    def __init__(self, tmp: Path):
        self.tmp, self.port = tmp, _free_port()
        host_key = _keygen(tmp / "host_key")
        self.client_key = _keygen(tmp / "client_key")
        (tmp / "authorized_keys").write_text((tmp / "client_key.pub").read_text())
        (tmp / "known_hosts").write_text(f"[127.0.0.1]:{self.port} " + (tmp / "host_key.pub").read_text())
        self.config = tmp / "sshd_config"
        self.config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {tmp / 'sshd.pid'}",
            f"AuthorizedKeysFile {tmp / 'authorized_keys'}", "AllowUsers root", "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "X11Forwarding no", "LogLevel ERROR", ""]))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)   # sshd's privilege separation directory
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdout=subprocess.DEVNULL,
                                     stderr=open(tmp / "sshd.log", "w"))
        deadline = time.time() + 10
        while time.time() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.close()
        raise RuntimeError(f"sshd did not start: {(tmp / 'sshd.log').read_text()[-500:]}")

    @property
    def url(self) -> str:
        return f"ssh://root@127.0.0.1:{self.port}"

    def options(self, key: Path | None = None) -> str:
        return (f"-i {key or self.client_key} -o IdentitiesOnly=yes -o UserKnownHostsFile={self.tmp / 'known_hosts'} "
                f"-o StrictHostKeyChecking=yes -F /dev/null")

    def sessions(self) -> list[int]:
        """The per-connection sshd processes under this server (children of its listener)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                found.append(int(stat.parent.name))
        return found

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("a loopback sshd for the test needs root")
    if not Path(SSHD).is_file() or not shutil.which("ssh-keygen"):
        pytest.skip("needs openssh-server (apt-get install openssh-server)")
    try:
        server = Sshd(tmp_path_factory.mktemp("sshd"))
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"sshd cannot start here: {exc}")
    yield server
    server.close()


@pytest.fixture
def on_sshd(sshd, tmp_path, monkeypatch):
    """ssh options for the loopback server and a fresh remote cache folder for this test."""
    monkeypatch.setenv("EDGEGEN_SSH_OPTIONS", sshd.options())
    monkeypatch.setenv("EDGEGEN_REMOTE_DIR", str(tmp_path / "remote"))
    monkeypatch.delenv("EDGEGEN_NATIVE_BINARY", raising=False)
    return sshd


def _fake_run(path: Path, components: list[str], runs_before_silence: int, pause_s: float, then: str,
              pidfile: Path) -> Path:
    """A stand-in for edgegen-run --bench: cold start, then run events `pause_s` apart, then `then`."""
    lines = ['{"event": "cold_start", "seconds": 0.5, "expect_s": 0.01}']
    lines += [f'{{"event": "run", "component": "{c}", "ms": {1.5 + i}}}' for c in components
              for i in range(runs_before_silence)]
    body = "\n".join(f"echo '{line}'; sleep {pause_s}" for line in lines)
    path.write_text(f"#!/bin/sh\necho $$ > {pidfile}\necho 'loading' >&2\n{body}\n{then}\n")
    path.chmod(0o755)
    return path


def _finish() -> str:
    return ("echo '{\"event\": \"expect\", \"expect_s\": 0.1}'; echo '{\"event\": \"image\", \"seconds\": 0.2}'; "
            "echo '{\"event\": \"memory\", \"rss_bytes\": 12345678, \"note\": \"peak RSS of edgegen-run\"}'")


def _gone(pidfile: Path, within_s: float) -> bool:
    pid = int(pidfile.read_text())
    deadline = time.time() + within_s
    while time.time() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.1)
    return False


# ---- without a server ----

def test_device_urls():
    d = remote.parse_device("ssh://pi@board.local:2222")
    assert (d.scheme, d.user, d.host, d.port) == ("ssh", "pi", "board.local", 2222)
    assert d.url == "ssh://pi@board.local:2222"
    d = remote.parse_device("ssh://[::1]")
    assert (d.host, d.user, d.port) == ("::1", None, None) and d.url == "ssh://[::1]"
    assert remote.parse_device("adb://192.168.1.5:5555").serial == "192.168.1.5:5555"
    for bad in ("ssh://", "ssh://host:99999", "ssh://host/path", "ssh://-oProxyCommand=x", "adb://", "adb://-d",
                "scp://host", "ssh://u:pw@host"):
        with pytest.raises(remote.RemoteError):
            remote.parse_device(bad)
    assert remote.is_remote("adb://x") and not remote.is_remote("rpc://h:1/k") and not remote.is_remote("local")


def test_missing_binary_names_the_make_command(tmp_path, monkeypatch):
    monkeypatch.setattr(remote, "NATIVE_DIR", tmp_path / "native")
    with pytest.raises(remote.RemoteError, match=r"make native-aarch64"):
        remote.native_binary("arm64", here="x86_64")
    with pytest.raises(remote.RemoteError, match=r"make -C runtimes/native"):
        remote.native_binary("x86_64", here="x86_64")
    with pytest.raises(remote.RemoteError, match="EDGEGEN_NATIVE_BINARY"):
        remote.native_binary("riscv64", here="x86_64")
    exe = tmp_path / "native" / "build-aarch64" / "edgegen-run"
    exe.parent.mkdir(parents=True)
    exe.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(11) + (183).to_bytes(2, "little") + bytes(44))
    assert remote.native_binary("aarch64", here="x86_64") == exe
    with pytest.raises(remote.RemoteError, match="built for aarch64, the device is x86_64"):
        remote.native_binary("x86_64", override=str(exe))


# ---- ssh, on loopback ----

@pytest.mark.slow
def test_copy_stream_and_cache(on_sshd, digits_mali_small, tmp_path):
    comps = list(json.loads((digits_mali_small / "manifest.json").read_text())["components"])
    fake = _fake_run(tmp_path / "fake-run", comps, 3, 0.2, _finish(), tmp_path / "pid")
    seen = []
    first = bench(str(digits_mali_small), device=on_sshd.url, runs=3, warmup=0, steps=2, run_timeout_s=30,
                  native_binary=str(fake), on_event=lambda e: seen.append((time.perf_counter(), e)))
    data = first.to_json()
    assert data["ok"], data
    assert data["device"] == on_sshd.url and all(c["runs_ok"] == 3 for c in data["components"].values())
    assert first.cold_start_s == 0.5 and first.image_s == 0.2 and first.peak_rss_bytes == 12345678
    info = data["remote"]
    assert info["arch"] == os.uname().machine and not info["artifact_cached"]
    remote_art = Path(info["remote_artifact"])
    assert remote_art.parent.parent == tmp_path / "remote"
    local_files = {p.relative_to(digits_mali_small) for p in digits_mali_small.rglob("*") if p.is_file()}
    assert {p.relative_to(remote_art) for p in remote_art.rglob("*") if p.is_file()} == local_files
    assert info["copied_bytes"] == sum(p.stat().st_size for p in digits_mali_small.rglob("*") if p.is_file()) \
        + fake.stat().st_size
    assert any(e["event"] == "copy" and e["what"] == "artifact" for _, e in seen)
    runs = [t for t, e in seen if e["event"] == "run"]
    assert runs[-1] - runs[0] > 0.2 * (len(runs) - 2)       # streamed as they came, not at the end

    second = bench(str(digits_mali_small), device=on_sshd.url, runs=3, warmup=0, steps=2, run_timeout_s=30,
                   native_binary=str(fake))
    assert second.to_json()["ok"]
    assert second.remote["artifact_cached"] and second.remote["copied_bytes"] == 0
    assert second.remote["remote_artifact"] == info["remote_artifact"]

    assert second.remote["cache_check"] == "sha256"
    weights = max(remote_art.rglob("*.safetensors"), key=lambda p: p.stat().st_size)
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x40                             # a damaged copy, same size, is copied again
    weights.write_bytes(bytes(data))
    third = bench(str(digits_mali_small), device=on_sshd.url, runs=1, warmup=0, steps=2, run_timeout_s=30,
                  native_binary=str(fake))
    assert not third.remote["artifact_cached"] and third.to_json()["ok"]
    local = digits_mali_small / weights.relative_to(remote_art)
    assert weights.read_bytes() == local.read_bytes()


@pytest.mark.slow
def test_silent_device_ends_at_the_limit(on_sshd, digits_mali_small, tmp_path):
    comps = list(json.loads((digits_mali_small / "manifest.json").read_text())["components"])
    fake = _fake_run(tmp_path / "fake-run", comps[:1], 1, 0,
                     f"sleep 600 & echo $! > {tmp_path / 'child'}; wait", tmp_path / "pid")
    t0 = time.perf_counter()
    report = bench(str(digits_mali_small), device=on_sshd.url, runs=4, warmup=0, steps=2, run_timeout_s=3,
                   native_binary=str(fake))
    assert time.perf_counter() - t0 < 25, report.to_json()
    assert report.failed and "no result from the device for 3 s" in report.errors[0], report.errors
    first = report.components[comps[0]]
    # the run came in the same read as the cold start: it counts, and is not left in a buffer
    assert len(first["ms"]) == 1 and len(first["errors"]) == 3 and "--run-timeout" in first["errors"][0], first
    assert _gone(tmp_path / "pid", 10) and _gone(tmp_path / "child", 5)   # nothing outlives the bench there


@pytest.mark.slow
def test_dropped_connection_is_an_error_event(on_sshd, digits_mali_small, tmp_path):
    comps = list(json.loads((digits_mali_small / "manifest.json").read_text())["components"])
    fake = _fake_run(tmp_path / "fake-run", comps, 5, 0.3, _finish(), tmp_path / "pid")
    cut = []

    def on_event(event):
        if event["event"] == "run" and not cut:
            for pid in on_sshd.sessions():
                os.kill(pid, signal.SIGKILL)
            cut.append(time.perf_counter())

    report = bench(str(digits_mali_small), device=on_sshd.url, runs=5, warmup=0, steps=2, run_timeout_s=30,
                   native_binary=str(fake), on_event=on_event)
    assert cut and time.perf_counter() - cut[0] < 10
    assert report.failed and any("lost the connection to " + on_sshd.url in e for e in report.errors), report.errors
    ran = report.components[comps[0]]
    assert 1 <= len(ran["ms"]) < 5 and len(ran["ms"]) + len(ran["errors"]) == 5
    assert _gone(tmp_path / "pid", 10)


@pytest.mark.slow
def test_unreachable_port_fails_fast(digits_mali_small, on_sshd):
    t0 = time.perf_counter()
    report = bench(str(digits_mali_small), device=f"ssh://root@127.0.0.1:{_free_port()}", runs=2)
    assert time.perf_counter() - t0 < 15
    assert report.failed and "cannot reach" in report.errors[0] and "Connection refused" in report.errors[0]
    assert all(len(c["errors"]) == 2 for c in report.components.values())


@pytest.mark.slow
def test_refused_key_says_how_to_install_one(digits_mali_small, on_sshd, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEGEN_SSH_OPTIONS", on_sshd.options(_keygen(tmp_path / "stranger")))
    report = bench(str(digits_mali_small), device=on_sshd.url, runs=1)
    assert report.failed and "refused the login" in report.errors[0] and "ssh-copy-id" in report.errors[0]


@pytest.mark.slow
def test_no_ssh_client(digits_mali_small, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    report = bench(str(digits_mali_small), device="ssh://root@127.0.0.1:1", runs=1)
    assert report.failed and "no ssh client" in report.errors[0]


@pytest.mark.slow
def test_binary_for_another_architecture(digits_mali_small, on_sshd, tmp_path):
    exe = tmp_path / "edgegen-run"
    exe.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(11) + (183).to_bytes(2, "little") + bytes(44))
    report = bench(str(digits_mali_small), device=on_sshd.url, runs=1, native_binary=str(exe))
    if os.uname().machine == "aarch64":
        pytest.skip("this machine is aarch64: the aarch64 stand-in matches it")
    assert report.failed and "built for aarch64, the device is" in report.errors[0]


@pytest.fixture(scope="module")
def edgegen_run():
    """The native edgegen-run for this machine, built by its Makefile (a no-op when up to date)."""
    native = remote.NATIVE_DIR
    if not (native / "Makefile").is_file():
        pytest.skip("runtimes/native/Makefile is missing")
    proc = subprocess.run(["make", "-C", str(native), "build/edgegen-run"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"make -C runtimes/native failed: {proc.stderr[-500:]}")
    exe = native / "build" / "edgegen-run"
    if b"--bench" not in exe.read_bytes():
        pytest.skip("this edgegen-run has no --bench yet")
    return exe


@pytest.mark.slow
@pytest.mark.opencl
def test_native_bench_over_ssh(on_sshd, digits_mali_small, edgegen_run):
    report = bench(str(digits_mali_small), device=on_sshd.url, runs=3, warmup=1, steps=2, run_timeout_s=60)
    data = report.to_json()
    assert data["ok"], data
    assert data["remote"]["binary"] == str(edgegen_run)
    for comp in data["components"].values():
        assert comp["runs_ok"] == 3 and 0 < comp["min_ms"] <= comp["median_ms"] <= comp["max_ms"]
    assert report.cold_start_s > 0 and report.image_s > 0 and report.peak_rss_bytes > 1e6


@pytest.mark.slow
def test_cli_over_ssh(on_sshd, digits_mali_small, tmp_path):
    comps = list(json.loads((digits_mali_small / "manifest.json").read_text())["components"])
    fake = _fake_run(tmp_path / "fake-run", comps, 2, 0, _finish(), tmp_path / "pid")
    proc = subprocess.run([sys.executable, "-m", "edgegen", "bench", str(digits_mali_small), "--device",
                           on_sshd.url, "--runs", "2", "--warmup", "0", "--json"], capture_output=True, text=True,
                          env={**os.environ, "EDGEGEN_NATIVE_BINARY": str(fake)}, timeout=120)
    data = json.loads(proc.stdout)
    assert data["device"] == on_sshd.url and data["remote"]["binary"] == str(fake)


# ---- adb: what runs without a phone ----

@pytest.fixture
def adb_server(monkeypatch):
    """adb's server on a port of its own, killed after the test."""
    if not shutil.which("adb"):
        pytest.skip("needs adb (apt-get install adb)")
    port = _free_port()
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(port))
    yield port
    subprocess.run(["adb", "kill-server"], capture_output=True, timeout=30)


@pytest.mark.slow
def test_adb_missing(digits_mali_small, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    report = bench(str(digits_mali_small), device="adb://emulator-5554", runs=1)
    assert report.failed and "no adb here" in report.errors[0] and "apt-get install adb" in report.errors[0]


@pytest.mark.slow
def test_adb_no_such_device(digits_mali_small, adb_server):
    t0 = time.perf_counter()
    report = bench(str(digits_mali_small), device="adb://no-such-phone", runs=1, run_timeout_s=30)
    assert time.perf_counter() - t0 < 30
    assert report.failed and "no Android device no-such-phone" in report.errors[0], report.errors


@pytest.mark.skip(reason="needs a phone: adb push, adb shell and edgegen-run --bench on an Android device "
                         "(an NDK build of edgegen-run, which cannot be built here)")
def test_adb_bench_on_a_phone():
    pass
