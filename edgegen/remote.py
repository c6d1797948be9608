"""On-device benches over ssh and adb: copy an artifact and the native `edgegen-run` to a phone or
board, run `edgegen-run ART --bench` there, and relay its JSON event lines.

`edgegen bench ART --device ssh://[user@]host[:port]` or `--device adb://SERIAL` runs this module as
its bench worker (`python -m edgegen.remote CONFIG`): the parent (edgegen/bench.py) reads the lines
it prints with the same per-line deadline and total limit as any bench, so a device that goes silent
ends the bench in bounded time. The steps:

1. check the connection (ssh: BatchMode, so a missing key fails at once instead of asking for a
   password) and read the device's architecture (`uname -m`);
2. pick the `edgegen-run` built for that architecture (runtimes/native/build for this machine's,
   build-aarch64 for aarch64; EDGEGEN_NATIVE_BINARY names another);
3. copy the artifact to REMOTE_DIR/artifacts/<key>/ and the binary to REMOTE_DIR/bin/<key>/, where
   <key> hashes the content (every file's SHA-256, from the manifest). A folder already there whose
   files have those SHA-256s (`sha256sum` there; their sizes where the device lacks it) is used as
   is. Copies land in a `.partial` folder that is renamed into place once complete;
4. run the bench there and relay its stdout lines; a dropped connection or a binary that dies without
   saying why becomes an `error` event.

REMOTE_DIR: ~/.cache/edgegen on ssh hosts, /data/local/tmp/edgegen on Android; EDGEGEN_REMOTE_DIR
overrides it. EDGEGEN_SSH_OPTIONS adds ssh options (e.g. "-i KEY -F CONFIG").
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

NATIVE_DIR = Path(__file__).resolve().parents[1] / "runtimes" / "native"
SSH_CONNECT_TIMEOUT_S = 10
PROBE_TIMEOUT_S = 60.0
PROGRESS_EVERY_S = 1.0
ADB_DIR = "/data/local/tmp/edgegen"

# ssh's exit status for its own failures (connection, authentication), as opposed to the remote command's
SSH_FAILED = 255


class RemoteError(Exception):
    """A device that cannot be used, with what to do about it."""


@dataclass(frozen=True)
class Device:
    scheme: str            # "ssh" or "adb"
    host: str = ""
    user: str | None = None
    port: int | None = None
    serial: str = ""

    @property
    def url(self) -> str:
        if self.scheme == "adb":
            return f"adb://{self.serial}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user + '@' if self.user else ''}{host}{f':{self.port}' if self.port else ''}"


def is_remote(device: str) -> bool:
    return device.startswith(("ssh://", "adb://"))


def parse_device(url: str) -> Device:
    """ssh://[user@]host[:port] or adb://SERIAL."""
    if url.startswith("adb://"):
        serial = url[len("adb://"):]
        if not serial or serial.startswith("-") or any(c.isspace() for c in serial):
            raise RemoteError(f"device {url!r}: expected adb://SERIAL, a serial as `adb devices` lists it")
        return Device("adb", serial=serial)
    if not url.startswith("ssh://"):
        raise RemoteError(f"device {url!r}: expected ssh://[user@]host[:port] or adb://SERIAL")
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise RemoteError(f"device {url!r}: the port is not a number from 1 to 65535") from None
    host = parts.hostname or ""
    if not host or host.startswith("-") or parts.path not in ("", "/") or parts.query or parts.fragment \
            or parts.password is not None or port == 0:
        raise RemoteError(f"device {url!r}: expected ssh://[user@]host[:port]")
    return Device("ssh", host=host, user=parts.username or None, port=port)


# ---- the binary for the device's architecture ----

_ELF_MACHINES = {3: "i686", 40: "armv7l", 62: "x86_64", 183: "aarch64"}
_ARCH_ALIASES = {"arm64": "aarch64", "armv8l": "armv7l", "amd64": "x86_64", "i386": "i686", "i586": "i686"}


def _norm_arch(arch: str) -> str:
    return _ARCH_ALIASES.get(arch, arch)


def _elf_arch(path: Path) -> str | None:
    """The machine an ELF file is built for, or None for anything else (a script)."""
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    return _ELF_MACHINES.get(machine, f"ELF machine {machine}")


def native_binary(arch: str, override: str | None = None, here: str | None = None) -> Path:
    """The edgegen-run that runs on `arch` (`uname -m` of the device)."""
    arch = _norm_arch(arch)
    if override:
        path = Path(override)
        if not path.is_file():
            raise RemoteError(f"EDGEGEN_NATIVE_BINARY={override}: no such file")
        built_for = _elf_arch(path)
        if built_for is not None and built_for != arch:
            raise RemoteError(f"{path} is built for {built_for}, the device is {arch}")
        return path
    candidates = []
    if _norm_arch(here or platform.machine()) == arch:
        candidates.append((NATIVE_DIR / "build" / "edgegen-run", "make -C runtimes/native"))
    if arch == "aarch64":
        candidates.append((NATIVE_DIR / "build-aarch64" / "edgegen-run",
                           "make native-aarch64` (or `make -C runtimes/native aarch64"))
    for path, _ in candidates:
        if path.is_file():
            return path
    if not candidates:
        raise RemoteError(f"the device is {arch}: edgegen builds edgegen-run for this machine "
                          f"({platform.machine()}) and aarch64 only; build it for {arch} yourself and name it "
                          f"with EDGEGEN_NATIVE_BINARY=PATH")
    path, make = candidates[-1]
    return_hint = "" if arch != "aarch64" else (" (on Android, a binary built with the NDK: see "
                                                 "runtimes/native/README.md)")
    raise RemoteError(f"no edgegen-run for the device's architecture ({arch}): {path} is missing. Build it "
                      f"with `{make}` in {NATIVE_DIR.parents[1]}, or name one with EDGEGEN_NATIVE_BINARY=PATH"
                      + return_hint)


# ---- what to copy, and how to know it is there already ----

def artifact_files(root: Path) -> list[tuple[Path, str, int]]:
    """Every plain file of the artifact folder: (path, relative posix path, bytes)."""
    return [(p, p.relative_to(root).as_posix(), p.stat().st_size)
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def artifact_digests(root: Path, files: list[tuple[Path, str, int]]) -> dict[str, str]:
    """Each file's SHA-256: the manifest's for the files it lists (the bench checked them before it
    started), computed here for the others (the manifest itself, a signature)."""
    listed = json.loads((root / "manifest.json").read_bytes()).get("files", {})
    return {rel: listed[rel]["sha256"] if rel in listed else _sha256(path) for path, rel, _ in files}


def artifact_key(digests: dict[str, str]) -> str:
    """The artifact's content key: its files' names and SHA-256s."""
    return hashlib.sha256(json.dumps(sorted(digests.items())).encode()).hexdigest()[:16]


def file_key(path: Path) -> str:
    return _sha256(path)[:16]


def _check_script(base: str, rels: list[str]) -> str:
    """Prints `SHA256 NAME` for each file that exists under `base`, or `SIZE NAME` where the device
    has no sha256sum (wc -c: POSIX, busybox and toybox)."""
    names = " ".join(shlex.quote(r) for r in rels)
    return (f"if cd {base} 2>/dev/null; then if command -v sha256sum >/dev/null 2>&1; then sha256sum {names} "
            f"2>/dev/null; else wc -c {names} 2>/dev/null; fi; fi; true")


def _parse_check(text: str) -> dict[str, str | int]:
    """NAME -> its SHA-256 (hex) or, from wc, its size."""
    found: dict[str, str | int] = {}
    for line in text.splitlines():
        fields = line.split(None, 1)
        if len(fields) != 2:
            continue
        name = fields[1].strip().lstrip("*")
        if len(fields[0]) == 64 and all(c in "0123456789abcdef" for c in fields[0]):
            found[name] = fields[0]
        elif fields[0].isdigit():
            found[name] = int(fields[0])
    return found


def _same(found: dict, rel: str, sha256: str, size: int) -> bool:
    got = found.get(rel)
    return got == sha256 if isinstance(got, str) else got == size


# ---- transports ----

def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip())


class Transport:
    """Runs shell scripts on the device and copies files there."""

    device: Device
    default_dir: str

    def argv(self, script: str) -> list[str]:
        raise NotImplementedError

    def explain(self, rc: int, stderr: str) -> str | None:
        """What a failed call means, when it is the connection's failure and not the script's."""
        raise NotImplementedError

    def push(self, files: list[tuple[Path, str, int]], dest: str, progress, executable: str | None = None) -> None:
        """Copy `files` (path, name there, bytes) into the folder `dest`, which appears only once complete;
        `executable`: the name of one to make executable."""
        raise NotImplementedError

    def run(self, script: str, timeout: float = PROBE_TIMEOUT_S) -> str:
        """The script's stdout; RemoteError when the connection or the script fails."""
        try:
            proc = subprocess.run(self.argv(script), input=b"", capture_output=True, timeout=timeout)
        except FileNotFoundError:
            raise RemoteError(self.missing_client()) from None
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{self.device.url} did not answer within {timeout:.0f} s") from None
        stderr = proc.stderr.decode(errors="replace")
        if proc.returncode != 0:
            raise RemoteError(self.explain(proc.returncode, stderr)
                              or f"{self.device.url}: a command failed there (exit {proc.returncode}): "
                                 f"{_tail(stderr)}")
        return proc.stdout.decode(errors="replace")

    def start(self, script: str) -> subprocess.Popen:
        try:
            return subprocess.Popen(self.argv(script), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise RemoteError(self.missing_client()) from None

    def missing_client(self) -> str:
        raise NotImplementedError

    def lost(self, rc: int, stderr: str) -> bool:
        """Whether a streaming call ended because the connection dropped."""
        raise NotImplementedError


class SSH(Transport):
    default_dir = '"$HOME"/.cache/edgegen'

    def __init__(self, device: Device):
        self.device = device
        self.extra = shlex.split(os.environ.get("EDGEGEN_SSH_OPTIONS", ""))

    def argv(self, script: str) -> list[str]:
        d = self.device
        return ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT_S}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR",
                *self.extra, *(["-p", str(d.port)] if d.port else []), *(["-l", d.user] if d.user else []),
                "--", d.host, "sh -c " + shlex.quote(script)]

    def missing_client(self) -> str:
        return "no ssh client here: install OpenSSH's (Debian: apt-get install openssh-client)"

    def _login(self) -> str:
        d = self.device
        return f"ssh {f'-p {d.port} ' if d.port else ''}{d.user + '@' if d.user else ''}{d.host}"

    def explain(self, rc: int, stderr: str) -> str | None:
        if rc != SSH_FAILED:
            return None
        d, text = self.device, stderr.strip()
        where = f"{d.host}:{d.port or 22}"
        if "Permission denied" in text or "Too many authentication failures" in text:
            return (f"{d.url}: ssh refused the login ({_tail(text, 1)}). edgegen logs in with keys only "
                    f"(BatchMode, it types no password): install your public key there (ssh-copy-id "
                    f"{'-p ' + str(d.port) + ' ' if d.port else ''}{d.user + '@' if d.user else ''}{d.host}), or "
                    f"name the key in ~/.ssh/config or EDGEGEN_SSH_OPTIONS='-i KEY'")
        if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
            return (f"{d.url}: its host key is not in known_hosts, or it changed. Connect once by hand to "
                    f"check and accept it: {self._login()}")
        for sign in ("Connection refused", "timed out", "No route to host", "Could not resolve hostname",
                     "Network is unreachable", "Name or service not known", "Connection reset",
                     "Connection closed"):
            if sign in text:
                return (f"cannot reach {d.url}: {_tail(text, 1)}. Is the host up, and sshd listening on "
                        f"{where}?")
        return f"ssh to {d.url} failed: {_tail(text) or 'exit 255, nothing said'}"

    def lost(self, rc: int, stderr: str) -> bool:
        return rc == SSH_FAILED and any(s in stderr for s in (
            "closed by remote host", "Connection to", "not responding", "Broken pipe", "Connection reset",
            "Connection closed", "client_loop"))

    def push(self, files, dest, progress, executable=None) -> None:
        """One tar stream through one connection into DEST.partial-PID, renamed to DEST when complete."""
        total = sum(size for _, _, size in files)
        chmod = f"chmod 755 \"$t\"/{shlex.quote(executable)}; " if executable else ""
        script = (f"set -e; d={dest}; t=\"$d.partial-$$\"; rm -rf \"$t\"; mkdir -p \"$t\"; "
                  f"tar -C \"$t\" -xf -; {chmod}rm -rf \"$d\"; mv \"$t\" \"$d\"")
        proc = self.start(script)
        sent, last = [0], [0.0]

        class Counting:
            def write(_self, data):
                proc.stdin.write(data)
                sent[0] += len(data)
                now = time.perf_counter()
                if now - last[0] >= PROGRESS_EVERY_S:
                    last[0] = now
                    progress(min(sent[0], total), total)
                return len(data)

        stderr = []
        reader = threading.Thread(target=lambda: stderr.append(proc.stderr.read()), daemon=True)
        reader.start()
        try:
            with tarfile.open(fileobj=Counting(), mode="w|", format=tarfile.USTAR_FORMAT) as tar:
                for path, rel, _ in files:
                    info = tar.gettarinfo(str(path), arcname=rel)
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        rc = proc.wait()
        reader.join()
        text = stderr[0].decode(errors="replace") if stderr else ""
        if rc != 0:
            raise RemoteError(self.explain(rc, text) or f"copying to {self.device.url}:{dest} failed: {_tail(text)}")
        progress(total, total)


class ADB(Transport):
    default_dir = ADB_DIR

    def __init__(self, device: Device):
        self.device = device

    def _adb(self) -> list[str]:
        return ["adb", "-s", self.device.serial]

    def argv(self, script: str) -> list[str]:
        return [*self._adb(), "shell", script]

    def missing_client(self) -> str:
        return "no adb here: install Android's platform tools (Debian: apt-get install adb)"

    def explain(self, rc: int, stderr: str) -> str | None:
        text, serial = stderr.strip(), self.device.serial
        if "not found" in text and serial in text or "no devices" in text:
            return f"no Android device {serial}: adb sees {self._listed()}. " \
                   f"Plug it in with USB debugging on, or `adb connect HOST:PORT` for one on the network"
        if "unauthorized" in text:
            return f"{self.device.url}: the device has not authorized this computer: accept the prompt on its screen"
        if "offline" in text:
            return f"{self.device.url}: the device is offline (adb devices): reconnect it"
        if rc == 255 or text.startswith(("error:", "adb:")):
            return f"adb on {self.device.url} failed: {_tail(text)}"
        return None

    def _listed(self) -> str:
        try:
            out = subprocess.run(["adb", "devices"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            return "nothing (adb devices failed)"
        serials = [line.split()[0] for line in out.splitlines()[1:] if line.strip() and "\t" in line]
        return ", ".join(serials) if serials else "no device"

    def lost(self, rc: int, stderr: str) -> bool:
        return any(s in stderr for s in ("device offline", "not found", "no devices", "connection reset",
                                         "protocol fault", "closed"))

    def push(self, files, dest, progress, executable=None) -> None:
        """File by file with `adb push` into DEST.partial, renamed to DEST when complete."""
        total, sent = sum(size for _, _, size in files), 0
        tmp = f"{dest}.partial"
        dirs = sorted({str(Path(rel).parent) for _, rel, _ in files} - {"."})
        self.run(f"rm -rf {tmp} && mkdir -p {tmp} " + "".join(f"{tmp}/{shlex.quote(d)} " for d in dirs))
        for path, rel, size in files:
            try:
                proc = subprocess.run([*self._adb(), "push", str(path), f"{shlex.split(tmp)[0]}/{rel}"],
                                      capture_output=True, text=True)
            except FileNotFoundError:
                raise RemoteError(self.missing_client()) from None
            if proc.returncode != 0:
                raise RemoteError(self.explain(proc.returncode, proc.stderr + proc.stdout)
                                  or f"adb push {rel} failed: {_tail(proc.stderr + proc.stdout)}")
            sent += size
            progress(sent, total)
        chmod = f"chmod 755 {tmp}/{shlex.quote(executable)} && " if executable else ""
        self.run(f"{chmod}rm -rf {dest} && mv {tmp} {dest}")


def transport(device: Device) -> Transport:
    return SSH(device) if device.scheme == "ssh" else ADB(device)


# ---- the bench worker ----

# Runs the bench in the background and waits for it; a watcher kills it when the connection's stdin
# closes (the bench was stopped here, or the connection dropped), so no bench outlives its caller.
# sshd and adbd start the script as a process group leader: the watcher ends that whole group (what
# the bench started too), or the bench alone elsewhere.
_RUN = """exec 3<&0
{cmd} 3<&- </dev/null &
p=$!
(cat <&3 >/dev/null 2>&1; kill $p; kill -TERM -$$) >/dev/null 2>&1 </dev/null &
w=$!
exec 3<&-
wait $p; s=$?
kill $w 2>/dev/null
exit $s"""


def _emit(**event) -> None:
    print(json.dumps(event), flush=True)


def prepare(t: Transport, root: Path, override: str | None) -> dict:
    """Check the connection, pick the binary, copy what the device lacks; the `remote` event's fields."""
    base = os.environ.get("EDGEGEN_REMOTE_DIR")
    base_q = shlex.quote(base) if base else t.default_dir   # the default may expand $HOME there
    files = artifact_files(root)
    digests = artifact_digests(root, files)
    art_key = artifact_key(digests)
    here = platform.machine()
    binaries = {}
    for arch in {_norm_arch(here), "aarch64"}:
        try:
            binaries[arch] = native_binary(arch, override, here)
        except RemoteError:
            pass
    probe = "; ".join([
        "uname -m", f'echo "@base $(mkdir -p {base_q} && cd {base_q} && pwd)"',
        "echo @art", _check_script(f"{base_q}/artifacts/{art_key}", [rel for _, rel, _ in files]),
        "echo @bin", _check_script(f"{base_q}/bin", [f"{file_key(p)}/edgegen-run" for p in set(binaries.values())])])
    out = t.run(probe)
    arch, _, rest = out.partition("\n")
    arch = _norm_arch(arch.strip())
    abs_base = rest.split("@base ", 1)[1].split("\n", 1)[0].strip() if "@base " in rest else ""
    if not abs_base:
        raise RemoteError(f"{t.device.url}: cannot create or enter {base or t.default_dir} there")
    art_found = _parse_check(rest.split("@art", 1)[1].split("@bin", 1)[0])
    bin_found = _parse_check(rest.split("@bin", 1)[1])
    binary = native_binary(arch, override, here)
    bin_dir = f"{base_q}/bin/{file_key(binary)}"
    art_dir = f"{base_q}/artifacts/{art_key}"
    info = {"device": t.device.url, "arch": arch, "binary": str(binary),
            "remote_binary": f"{abs_base}/bin/{file_key(binary)}/edgegen-run",
            "remote_artifact": f"{abs_base}/artifacts/{art_key}", "copied_bytes": 0}
    t0 = time.perf_counter()

    def progress(what):
        return lambda done, total: _emit(event="copy", what=what, bytes=done, total=total)

    if not _same(bin_found, f"{file_key(binary)}/edgegen-run", _sha256(binary), binary.stat().st_size):
        t.push([(binary, "edgegen-run", binary.stat().st_size)], bin_dir, progress("binary"), "edgegen-run")
        info["copied_bytes"] += binary.stat().st_size
    info["artifact_cached"] = all(_same(art_found, rel, digests[rel], size) for _, rel, size in files)
    kinds = {type(v) for v in art_found.values()}
    info["cache_check"] = "sha256" if str in kinds else "size" if int in kinds else "nothing there"
    if not info["artifact_cached"]:
        t.push(files, art_dir, progress("artifact"))
        info["copied_bytes"] += sum(size for _, _, size in files)
    info["copy_s"] = round(time.perf_counter() - t0, 3)
    return info


def relay(config: dict) -> int:
    """The bench worker for ssh:// and adb:// devices: prepares the device, then prints the remote
    bench's event lines as they come, and an error event for what ends it otherwise."""
    try:
        device = parse_device(config["device"])
        t = transport(device)
        info = prepare(t, Path(config["artifact"]), config.get("native_binary")
                       or os.environ.get("EDGEGEN_NATIVE_BINARY"))
    except RemoteError as exc:
        _emit(event="error", error=str(exc))
        return 0
    _emit(event="remote", **info)
    cmd = " ".join(shlex.quote(a) for a in (info["remote_binary"], info["remote_artifact"], "--bench", "--runs",
                                             str(config["runs"]), "--warmup", str(config["warmup"]),
                                             "--steps", str(config["steps"])))
    try:
        proc = t.start(_RUN.format(cmd=cmd))
    except RemoteError as exc:
        _emit(event="error", error=str(exc))
        return 0
    stderr = collections.deque(maxlen=20)
    reader = threading.Thread(target=lambda: stderr.extend(proc.stderr.read().decode(errors="replace")
                                                           .splitlines()), daemon=True)
    reader.start()
    results, errors, stray = 0, 0, []
    for raw in proc.stdout:
        line = raw.decode(errors="replace").strip()
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict) or not isinstance(event.get("event"), str):
            if line:
                stray.append(line[:200])
            continue
        results += 1
        errors += event["event"] == "error"
        print(json.dumps(event), flush=True)
    rc = proc.wait()
    reader.join(timeout=5)
    said = " | ".join(list(stderr)[-3:])
    if rc != 0 and t.lost(rc, said):
        _emit(event="error", error=f"lost the connection to {device.url} after {results} results: {said}")
    elif rc == 0 and not results:
        _emit(event="error", error=f"edgegen-run on {device.url} printed no result and exited"
                                   + (f": {said}" if said else ""))
    elif rc != 0 and not errors:
        signal = f" (signal {rc - 128})" if 128 < rc < 160 else ""
        _emit(event="error", error=f"edgegen-run on {device.url} exited with code {rc}{signal} after {results} "
                                   f"results" + (f": {said}" if said else "")
                                   + (f"; it printed lines that are not events: {stray[0]!r}" if stray else ""))
    return 0


if __name__ == "__main__":
    sys.exit(relay(json.loads(sys.argv[1])))
