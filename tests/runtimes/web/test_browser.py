"""The browser runtime (runtimes/web) in a real headless Chromium with WebGPU on its software adapter
(SwiftShader): the demo page written by `edgegen web` generates digits, and the pixels read back from its
canvas are checked with the digits classifier and against the Python webgpu runtime (wgpu on lavapipe) from
the same seed, on the same GPU (SwiftShader). Software GPUs take seconds per denoising step of the batch-10
DiT, so the page runs few steps (the trained model draws all ten digits in two DDIM steps)."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from chromium_cdp import Chromium, chromium_binary
from conftest import edgegen_cli

pytestmark = [pytest.mark.tvm, pytest.mark.torch, pytest.mark.webgpu, pytest.mark.slow]

STEPS = 2
SEED = 0
ACCURACY_GATE = 0.9
PSNR_GATE_DB = 60.0
TILE, GAP, COLUMNS = 16, 1, 10
SWIFTSHADER_ICD = Path("/usr/lib/chromium/vk_swiftshader_icd.json")


@pytest.fixture(scope="module")
def digits_webgpu(digits_model_dir, tmp_path_factory):
    """The committed digits generator built for the webgpu target (batch 10), kernels not executed at build."""
    import edgegen

    out = tmp_path_factory.mktemp("web") / "digits-webgpu"
    edgegen.build(digits_model_dir, out, target="webgpu", execute=False)
    return out


def _over_the_limits(artifact, dest):
    """A copy of `artifact` whose plan needs a 2 GiB storage binding (an intermediate tensor grown, the
    arena with it), its manifest checksums updated: what a page on a device with smaller limits sees."""
    from edgegen.core.artifact import sha256_file

    shutil.copytree(artifact, dest)
    plan_path = dest / "transformer" / "plan.json"
    plan = json.loads(plan_path.read_text())
    io = set(plan["inputs"].values()) | set(plan["outputs"].values())
    name = next(n for n, t in plan["tensors"].items() if t["storage"] == "arena" and n not in io)
    plan["tensors"][name].update(shape=[1, 1 << 29], bytes=1 << 31, offset=0)
    plan["arena_bytes"] = 1 << 31
    plan_path.write_text(json.dumps(plan))
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["files"]["transformer/plan.json"] = {"sha256": sha256_file(plan_path), "bytes": plan_path.stat().st_size}
    (dest / "manifest.json").write_text(json.dumps(manifest))


class _Recording(http.server.SimpleHTTPRequestHandler):
    """The standard library's static file server, remembering each path it was asked for."""

    def log_message(self, format, *args):    # noqa: A002
        self.server.requested.append(self.path)


@pytest.fixture(scope="module")
def site(digits_webgpu, tmp_path_factory):
    """`edgegen web ART --out DIR`, plus an artifact over the adapter's limits in DIR/big/, served by a plain
    static file server: (base URL, the list of requested paths)."""
    out = tmp_path_factory.mktemp("site") / "digits"
    proc = edgegen_cli("web", digits_webgpu, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert (out / "index.html").is_file() and (out / "artifact" / "manifest.json").is_file()
    _over_the_limits(out / "artifact", out / "big")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Recording, directory=str(out)))
    server.requested = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/", server.requested
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    if chromium_binary() is None:
        pytest.skip("needs chromium: apt-get install chromium (scripts/install_system_deps.sh)")
    with Chromium() as chromium:
        yield chromium


def _wait(browser, expression: str, until, timeout: float, seen: list | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = browser.evaluate(expression)
        if seen is not None and (not seen or seen[-1] != value):
            seen.append(value)
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{expression} is still {value!r} after {timeout} s; console: {browser.console[-5:]}")
        time.sleep(0.1)


def _open_demo(browser, url: str):
    browser.navigate(url)
    state = _wait(browser, "edgegenDemo.state", lambda s: s != "loading", 180)
    error = browser.evaluate("edgegenDemo.error")
    if state == "error" and "DeviceError: navigator.gpu" in (error or ""):
        pytest.skip(f"headless chromium has no WebGPU adapter here: {error}")
    return state, error


def _canvas_tiles(browser, count: int) -> np.ndarray:
    """The demo's grid canvas read back (getImageData), cut into its 16x16 tiles: [count, 16, 16] uint8."""
    width, height, data = browser.evaluate("""(() => { const c = document.getElementById('grid');
        return [c.width, c.height, Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)]; })()""")
    rgba = np.asarray(data, np.uint8).reshape(height, width, 4)
    assert (rgba[..., 3] == 255).all() and (rgba[..., 0] == rgba[..., 1]).all()      # opaque gray tiles
    tiles = []
    for i in range(count):
        y, x = (i // COLUMNS) * (TILE + GAP), (i % COLUMNS) * (TILE + GAP)
        tiles.append(rgba[y:y + TILE, x:x + TILE, 0])
    return np.stack(tiles)


def _python_webgpu_reference(artifact, labels, tmp_path):
    """The Python webgpu runtime's images and samples for the page's labels, seed and steps, run on the page's
    GPU: wgpu on the SwiftShader Vulkan driver that the chromium package ships (in its own process, since
    wgpu picks its driver once). On another GPU (lavapipe) the float32 results differ in the last bits, and
    the digits model's first DDIM step (t=999, alphas_cumprod ~1e-9) divides the predicted noise by ~3e-5:
    a few pixels then differ visibly (~54 dB measured), whichever runtime runs the kernels."""
    if not SWIFTSHADER_ICD.is_file():
        pytest.skip(f"{SWIFTSHADER_ICD} (chromium's SwiftShader Vulkan driver) is missing: the Python runtime "
                    f"cannot run on the page's GPU")
    script = (f"import numpy as np, edgegen; p = edgegen.runtimes.load({str(artifact)!r}); "
              f"print(p.transformer.device_name); "
              f"o = p({labels!r}, num_inference_steps={STEPS}, seed={SEED}, output_type='np'); "
              f"np.savez({str(tmp_path / 'ref.npz')!r}, images=o.images, samples=o.latents)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "VK_ICD_FILENAMES": str(SWIFTSHADER_ICD)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SwiftShader" in proc.stdout, proc.stdout
    ref = np.load(tmp_path / "ref.npz")
    return ref["images"], ref["samples"]


def test_page_generates_the_digits_asked_for(browser, site, digits_webgpu, tmp_path):
    import edgegen
    from edgegen.digits import DigitClassifier

    url, requested = site
    state, error = _open_demo(browser, url + "index.html")
    assert state == "ready", error
    adapter = browser.evaluate("edgegenDemo.adapter")
    assert adapter and adapter in browser.evaluate("document.getElementById('info').textContent")
    browser.evaluate(f"""document.getElementById('steps').value = {STEPS};
        document.getElementById('seed').value = '{SEED}';
        document.getElementById('digit').value = 'all';
        document.getElementById('generate').click()""")
    seen = []      # the status line counts the steps while the page generates
    _wait(browser, "document.getElementById('status').textContent", lambda s: "images in" in s or s == "failed", 240, seen)
    assert browser.evaluate("edgegenDemo.state") == "done", browser.evaluate("edgegenDemo.error")
    assert f"step 1 / {STEPS}" in seen and seen[-1].startswith("10 images in"), seen
    result = browser.evaluate("edgegenDemo.result")
    page = _canvas_tiles(browser, 10)
    labels = list(range(10))
    assert result["labels"] == labels and result["shape"] == [10, 16, 16, 1]
    assert result["timings"]["per_image_s"] > 0
    assert f"ms per image on {adapter}" in browser.evaluate("document.getElementById('info').textContent")

    accuracy = DigitClassifier.load().accuracy(page, labels)
    assert accuracy >= ACCURACY_GATE, DigitClassifier.load().predict(page)

    ref_images, ref_samples = _python_webgpu_reference(digits_webgpu, labels, tmp_path)
    assert edgegen.core.psnr(ref_images[..., 0], page, peak=255.0) >= PSNR_GATE_DB
    samples = np.asarray(result["samples"], np.float32).reshape(ref_samples.shape)
    assert edgegen.core.psnr((ref_samples + 1) / 2, (samples + 1) / 2, peak=1.0) >= PSNR_GATE_DB

    # the weights came over the network once; a second load takes them from the Cache API by their sha256
    stats = browser.evaluate("""import('./edgegen.js').then(async (m) => {
        const pipe = await m.load('./artifact/'); const s = pipe.stats; pipe.close(); return s; })""", timeout=180)
    weights = [p for p in requested if p.endswith("/artifact/transformer/weights.safetensors")]
    assert len(weights) == 1, requested
    assert stats["weightBytesDownloaded"] == 0 and stats["weightBytesFromCache"] == (
        digits_webgpu / "transformer" / "weights.safetensors").stat().st_size


def test_plan_over_the_adapter_limits_fails_before_weights(browser, site):
    url, requested = site
    state, error = _open_demo(browser, url + "index.html?artifact=big/")
    assert state == "error"
    assert "DeviceError" in error and "maxStorageBufferBindingSize: needs 2147483648" in error, error
    assert "does not fit this WebGPU adapter" in browser.evaluate("document.getElementById('error').textContent")
    assert any(p.startswith("/big/transformer/plan.json") for p in requested)
    assert not any(p.startswith("/big/transformer/weights") for p in requested), requested


def test_cli_refuses_what_the_page_cannot_run_and_serves(digits_webgpu, tmp_path):
    import urllib.request

    art = shutil.copytree(digits_webgpu, tmp_path / "opencl")
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["components"]["transformer"]["backend"] = "opencl"
    (art / "manifest.json").write_text(json.dumps(manifest))
    proc = edgegen_cli("web", art, "--out", tmp_path / "site")
    assert proc.returncode == 2 and "rebuild with `edgegen build MODEL --target webgpu`" in proc.stderr
    proc = edgegen_cli("web", digits_webgpu)
    assert proc.returncode == 2 and "pass --out DIR" in proc.stderr

    server = subprocess.Popen([sys.executable, "-m", "edgegen", "web", str(digits_webgpu), "--serve", "--port", "0"],
                              stdout=subprocess.PIPE, text=True)
    try:
        first = server.stdout.readline()
        url = first.split(" on ")[1].split()[0]
        with urllib.request.urlopen(url + "edgegen.js", timeout=10) as r:
            assert r.headers["Content-Type"] == "text/javascript" and b"export async function load" in r.read()
        with urllib.request.urlopen(url + "artifact/manifest.json", timeout=10) as r:
            assert json.load(r)["pipeline"]["kind"] == "class-conditional-dit"
    finally:
        server.terminate()
        server.wait(10)


def test_text_encoder_kernels_compile_in_chrome(browser, site, tiny_sd_dir):
    """Chrome's WGSL compiler (Tint) refuses a constant infinity ("value inf cannot be represented as
    'f32'"), which wgpu's accepts: the text encoder's masked softmax needs one. Every program of the tiny
    SD text encoder's webgpu plan must compile in the page."""
    from edgegen.converters import capture, gpu, lower, sd, source
    from edgegen.core.targets import get_target
    from edgegen.runtimes.launch_plan import split_programs

    index = source.read_model_index(tiny_sd_dir)
    cap = sd.plan(tiny_sd_dir, index).components["text_encoder"]
    target = get_target("webgpu")
    lowered = lower.to_relax(capture.export(cap), len(cap.inputs), "text_encoder")
    built = gpu.lower_to_plan(lowered, list(cap.inputs), cap.outputs, lower.resolve_target(target.tvm_target),
                              gpu.limits_of(target.profile), target.backend, precision="fp32")
    programs = split_programs(built.source)
    assert any("edgegen_inf_bits" in p for p in programs.values())     # the case this test is about
    url, _ = site
    browser.navigate(url + "index.html")
    errors = browser.evaluate(f"""(async () => {{
        const adapter = await navigator.gpu.requestAdapter(); const device = await adapter.requestDevice();
        const programs = {json.dumps(programs)}; const errors = {{}};
        for (const [name, code] of Object.entries(programs)) {{
            const info = await device.createShaderModule({{code}}).getCompilationInfo();
            const bad = info.messages.filter(m => m.type === 'error').map(m => m.message);
            if (bad.length) errors[name] = bad;
        }}
        return errors; }})()""", timeout=120)
    assert errors == {}, errors
