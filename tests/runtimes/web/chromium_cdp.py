"""Headless Chromium driven over the Chrome DevTools Protocol (a websocket), for the browser tests.

Chromium gets WebGPU on its software adapter (SwiftShader) only with --enable-unsafe-webgpu on Linux;
--remote-debugging-port=0 picks a free port, which Chromium writes to DevToolsActivePort in its profile.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

FLAGS = ["--headless=new", "--no-sandbox", "--enable-unsafe-webgpu", "--disable-gpu-sandbox",
         "--use-webgpu-adapter=swiftshader", "--no-first-run", "--no-default-browser-check",
         "--disable-extensions", "--disable-background-networking", "--mute-audio"]


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Chromium:
    """One headless browser with one page; `evaluate` runs an expression in it (awaiting promises)."""

    def __init__(self, extra_flags: tuple[str, ...] = (), timeout: float = 30):
        import websocket

        binary = chromium_binary()
        if binary is None:
            raise RuntimeError("no chromium binary; apt-get install chromium (scripts/install_system_deps.sh)")
        self._profile = tempfile.mkdtemp(prefix="edgegen-chromium-")
        self.log_path = Path(self._profile) / "chromium.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary, *FLAGS, *extra_flags, f"--user-data-dir={self._profile}",
                                      "--remote-debugging-port=0", "about:blank"],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        port_file = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not port_file.is_file() or len(port_file.read_text().splitlines()) < 2:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"chromium did not open its DevTools port: {self.log()[-2000:]}")
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        pages = []
        while not pages:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as r:
                pages = [t for t in json.load(r) if t["type"] == "page"]
            if not pages:
                time.sleep(0.1)
        self._ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=timeout,
                                               suppress_origin=True)
        self._id = 0
        self.console: list[str] = []
        self.call("Runtime.enable")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def call(self, method: str, timeout: float = 60, **params) -> dict:
        self._id += 1
        self._ws.settimeout(timeout)
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("method") == "Runtime.consoleAPICalled":
                args = message["params"]["args"]
                self.console.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
            elif message.get("method") == "Runtime.exceptionThrown":
                self.console.append(str(message["params"]["exceptionDetails"]))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str, timeout: float = 60):
        """The value of `expression` (awaited, returned by value); a thrown error raises RuntimeError."""
        result = self.call("Runtime.evaluate", timeout=timeout, expression=expression, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise RuntimeError(f"in the page: {text}")
        return result["result"].get("value")

    def navigate(self, url: str, timeout: float = 30) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while self.evaluate("document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not load in {timeout} s")
            time.sleep(0.1)

    def close(self) -> None:
        try:
            if getattr(self, "_ws", None) is not None:
                self._ws.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self._log.close()
            shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
