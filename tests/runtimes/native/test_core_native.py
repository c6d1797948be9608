"""The native C runtime (runtimes/native): its build (here and for aarch64), edgegen-run's images
equal to the Python opencl runtime's, refusal of corrupt artifacts (never a signal), the fuzz
under ASan/UBSan, the bench event lines and the ctypes backend."""

import ctypes
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

NATIVE = Path(__file__).resolve().parents[3] / "runtimes" / "native"
BUILD = NATIVE / "build"
RUN = BUILD / "edgegen-run"
FUZZ_CASES = 500


@pytest.fixture(scope="session")
def native_build():
    """make -C runtimes/native: libedgegen.{a,so}, edgegen-run and the C tests."""
    if not shutil.which("make") or not shutil.which("cc"):
        pytest.skip("needs make and a C compiler (apt-get install gcc make)")
    subprocess.run(["make", "-s", "-C", str(NATIVE)], check=True, timeout=600)
    return BUILD


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One program binary cache for the session: PoCL compiles each program once."""
    return tmp_path_factory.mktemp("native-cache")


def run(args, cache_dir, timeout=600, **kw):
    env = dict(os.environ, EDGEGEN_CACHE_DIR=str(cache_dir))
    env.pop("EDGEGEN_RUNTIME", None)
    return subprocess.run([str(RUN), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env, **kw)


def read_png(path):
    from PIL import Image

    return np.asarray(Image.open(path))


def rehash(artifact: Path, rel: str) -> None:
    """Make the manifest agree with an edited file, so the edit reaches the parsers behind the checksums."""
    manifest = json.loads((artifact / "manifest.json").read_text())
    data = (artifact / rel).read_bytes()
    manifest["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (artifact / "manifest.json").write_text(json.dumps(manifest, indent=1))


@pytest.mark.parametrize("program", ["test_core_json", "test_core_units"])
def test_c_unit_tests_pass(native_build, program):
    out = subprocess.run([str(native_build / "tests" / program)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_float16_conversion_equals_numpy(native_build, tmp_path):
    """The host-side float32 -> float16 of fp16 plans rounds as numpy's astype does (nearest, ties to even)."""
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, 400_000, dtype=np.uint64).astype(np.uint32)
    special = np.array([0.0, -0.0, 1.0, 65504.0, 65519.99, 65520.0, 6.1e-5, 5.96e-8, 2.98e-8, 2.99e-8, 1e-10,
                        np.inf, -np.inf], np.float32)
    near = (rng.standard_normal(200_000) * 10.0 ** rng.integers(-8, 5, 200_000)).astype(np.float32)
    values = np.concatenate([bits.view(np.float32), special, near])
    values = values[~np.isnan(values)]
    values.tofile(tmp_path / "in.bin")
    proc = subprocess.run([str(native_build / "tests" / "test_core_units"), str(tmp_path / "in.bin"),
                           str(tmp_path / "out.bin")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = np.fromfile(tmp_path / "out.bin", dtype=np.uint16)
    with np.errstate(over="ignore"):
        want = values.astype(np.float16).view(np.uint16)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, [(float(values[i]), hex(got[i]), hex(want[i])) for i in bad[:5]]


@pytest.mark.opencl
def test_digits_images_equal_the_python_opencl_runtime(native_build, digits_mali_small, cache_dir, tmp_path):
    from edgegen import runtimes
    from edgegen.core.metrics import psnr

    labels, steps, seed = [3, 7, 1], 4, 11      # 3 labels on a batch-2 artifact: two calls, one padded
    pipe = runtimes.load(digits_mali_small)
    try:
        ref = pipe(labels, num_inference_steps=steps, seed=seed, output_type="np").images
    finally:
        pipe.close()
    out = tmp_path / "native.png"
    proc = run([digits_mali_small, "--label", ",".join(map(str, labels)), "--steps", steps, "--seed", seed,
                "--out", out, "--quiet"], cache_dir)
    assert proc.returncode == 0, proc.stderr
    got = read_png(out)
    want = np.concatenate(list(ref[..., 0]), axis=1)     # edgegen-run tiles the images in a row
    assert got.shape == want.shape
    db = psnr(want.astype(np.float64) / 255, got.astype(np.float64) / 255, peak=1.0)
    assert db >= 60, db


@pytest.mark.opencl
def test_out_of_range_label_is_refused(native_build, digits_mali_small, cache_dir, tmp_path):
    proc = run([digits_mali_small, "--label", "10", "--steps", 1, "--out", tmp_path / "x.png"], cache_dir)
    assert proc.returncode == 1 and "out of range 0..9" in proc.stderr, proc.stderr
    proc = run([digits_mali_small, "--label", "eleven", "--steps", 1, "--out", tmp_path / "x.png"], cache_dir)
    assert proc.returncode == 1 and "unknown class label 'eleven'" in proc.stderr, proc.stderr
    proc = run([digits_mali_small, "--label", "seven, 3", "--steps", 1, "--out", tmp_path / "x.png"], cache_dir)
    assert proc.returncode == 0, proc.stderr


def test_truncated_plan_is_an_error_not_a_signal(native_build, digits_mali_small, tmp_path):
    art = tmp_path / "art"
    shutil.copytree(digits_mali_small, art)
    plan = art / "transformer" / "plan.json"
    plan.write_bytes(plan.read_bytes()[:5000])
    proc = subprocess.run([str(RUN), str(art), "--check"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "transformer/plan.json" in proc.stderr and "truncated" in proc.stderr, proc.stderr
    rehash(art, "transformer/plan.json")        # past the size and checksum: the JSON parser sees it
    proc = subprocess.run([str(RUN), str(art), "--label", "1", "--out", str(tmp_path / "x.png")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "not valid JSON" in proc.stderr, proc.stderr


def test_fuzz_under_asan(native_build, digits_mali_small, tmp_path):
    """FUZZ_CASES mutations of plan.json, weights, kernels and manifest, each an error with a message
    or a success; no ASan/UBSan report (leak detection is on: these paths open no driver)."""
    subprocess.run(["make", "-s", "-C", str(NATIVE), "asan"], check=True, timeout=900)
    shutil.copytree(digits_mali_small, tmp_path / "art")
    env = dict(os.environ, ASAN_OPTIONS="abort_on_error=0:exitcode=99", UBSAN_OPTIONS="halt_on_error=1:exitcode=98")
    proc = subprocess.run([str(NATIVE / "build-asan" / "tests" / "test_core_fuzz"), str(digits_mali_small),
                           str(tmp_path), str(FUZZ_CASES), "1"], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "AddressSanitizer" not in proc.stderr and "runtime error" not in proc.stderr, proc.stderr[-3000:]
    counts = dict(zip(proc.stdout.split()[::2], map(int, proc.stdout.split()[1::2])))
    assert counts["cases"] == FUZZ_CASES and counts["without-message"] == 0 and counts["errors"] > FUZZ_CASES // 2


@pytest.mark.opencl
@pytest.mark.parametrize("edit", ["kernel syntax", "launch loses an argument", "scalar out of range"])
def test_corrupt_artifacts_on_the_device_end_in_errors(native_build, digits_mali_small, cache_dir, tmp_path, edit):
    art = tmp_path / "art"
    shutil.copytree(digits_mali_small, art)
    if edit == "kernel syntax":   # in the kernels PoCL runs: the float32-arithmetic ones (it lacks cl_khr_fp16)
        rel = "transformer/kernels_fp32_arithmetic.cl"
        text = (art / rel).read_text()
        (art / rel).write_text(text.replace("{", "{ this is not C;", 1))
        expect = "building the program failed"
    else:
        rel = "transformer/plan.json"
        plan = json.loads((art / rel).read_text())
        if edit == "launch loses an argument":
            plan["launches"][0]["args"].pop()
            expect = "launch 0"
        else:
            plan["launches"][0]["scalars"] = [{"dtype": "int8", "value": 300}]
            expect = "scalar 300 is not a int8"
        (art / rel).write_text(json.dumps(plan))
    rehash(art, rel)
    proc = run([art, "--label", "1", "--steps", 1, "--out", tmp_path / "x.png", "--quiet"], cache_dir)
    assert proc.returncode == 1 and expect in proc.stderr, proc.stderr
    assert "edgegen-run:" in proc.stderr


@pytest.mark.opencl
def test_bench_prints_the_worker_event_lines(native_build, digits_mali_small, cache_dir):
    proc = run([digits_mali_small, "--bench", "--runs", 2, "--warmup", 1, "--steps", 2], cache_dir)
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds == ["cold_start", "run", "run", "expect", "image", "memory"], kinds
    assert events[0]["seconds"] > 0 and events[1]["component"] == "transformer" and events[1]["ms"] > 0
    assert events[4]["seconds"] > 0 and events[5]["rss_bytes"] > 0


@pytest.mark.opencl
def test_python_native_backend_matches_pyopencl(native_build, digits_mali_small, cache_dir, monkeypatch):
    from edgegen.core.artifact import Artifact
    from edgegen.core.errors import InputError
    from edgegen.runtimes import native, opencl

    monkeypatch.setenv("EDGEGEN_CACHE_DIR", str(cache_dir))
    art = Artifact.open(digits_mali_small)
    comp = art.component("transformer")
    rng = np.random.default_rng(0)
    n = comp.inputs[0].shape[0]
    feeds = {"sample": rng.standard_normal(comp.inputs[0].shape).astype(np.float32),
             "timestep": np.full(n, 321, np.float32), "class_labels": np.arange(n, dtype=np.int32) % 11}
    ref_session, nat_session = opencl.load(art, comp), native.load(art, comp)
    try:
        ref = ref_session.run(**feeds)["noise_pred"]
        got = nat_session.run(**feeds)["noise_pred"]
        # mali computes in float16; PoCL lacks cl_khr_fp16, so both ran the plan's float32-arithmetic twins
        assert "float32-arithmetic kernels" in ref_session.device_name
        assert "float32-arithmetic kernels" in nat_session.device_name
        assert got.dtype == np.float32 and got.shape == ref.shape
        np.testing.assert_array_equal(got, ref)
        # the C library checks input ranges itself, not only the Python specs in front of it
        labels = np.full(n, 11, np.int32)
        err = ctypes.create_string_buffer(512)
        status = nat_session._lib.eg_session_set_input(nat_session._session, b"class_labels", labels.ctypes.data,
                                                        labels.nbytes, err, 512)
        assert status == native.ERR_INPUT and b"outside its valid range 0..10" in err.value
        with pytest.raises(InputError):
            nat_session.run(**{**feeds, "class_labels": labels})
    finally:
        ref_session.close()
        nat_session.close()


@pytest.mark.opencl
def test_cli_runtime_native(native_build, digits_mali_small, cache_dir, tmp_path, monkeypatch):
    from edgegen.cli import main

    monkeypatch.setenv("EDGEGEN_CACHE_DIR", str(cache_dir))
    out = tmp_path / "cli.png"
    assert main(["run", str(digits_mali_small), "--label", "4", "--steps", "2", "--out", str(out),
                 "--runtime", "native"]) == 0
    assert read_png(out).shape == (16, 16)
    assert "EDGEGEN_RUNTIME" not in os.environ
    from edgegen import runtimes
    from edgegen.runtimes import native

    monkeypatch.setenv("EDGEGEN_RUNTIME", "native")     # what --runtime native sets for run, bench and validate
    pipe = runtimes.load(digits_mali_small)
    try:
        assert isinstance(pipe.sessions["transformer"], native.Session)
    finally:
        pipe.close()


def test_missing_library_names_make_native(monkeypatch, tmp_path):
    from edgegen.core.errors import BackendUnavailableError
    from edgegen.runtimes import native

    monkeypatch.setenv("EDGEGEN_NATIVE_LIBRARY", str(tmp_path / "absent.so"))
    with pytest.raises(BackendUnavailableError, match="make native"):
        native._lib()


def aarch64_build():
    if not shutil.which("aarch64-linux-gnu-gcc"):
        pytest.skip("needs aarch64-linux-gnu-gcc (apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross)")
    subprocess.run(["make", "-s", "-C", str(NATIVE), "aarch64"], check=True, timeout=900)
    return NATIVE / "build-aarch64" / "edgegen-run"


def qemu_aarch64():
    qemu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if not qemu or not Path("/usr/aarch64-linux-gnu").is_dir():
        pytest.skip("needs qemu-user-static and libc6-dev-arm64-cross to run aarch64 binaries here")
    return [qemu, "-L", "/usr/aarch64-linux-gnu"]


def test_aarch64_cross_build():
    binary = aarch64_build()
    header = binary.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and header[4] == 2          # 64-bit
    assert int.from_bytes(header[18:20], "little") == 183        # e_machine EM_AARCH64
    proc = subprocess.run([*qemu_aarch64(), str(binary), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "usage: edgegen-run" in proc.stdout, proc.stderr


def test_aarch64_binary_checks_an_artifact_under_qemu(digits_mali_small):
    binary, qemu = aarch64_build(), qemu_aarch64()
    proc = subprocess.run([*qemu, str(binary), str(digits_mali_small), "--check"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "class-conditional-dit" in proc.stdout, proc.stderr


def test_signed_artifacts_against_trusted_keys(native_build, digits_mali_small, tmp_path):
    """The Ed25519 signature of `edgegen sign`, checked by the C runtime through libsodium."""
    pytest.importorskip("cryptography", reason="needs cryptography to sign artifacts (edgegen sign)")
    import ctypes.util

    if not ctypes.util.find_library("sodium"):
        pytest.skip("needs libsodium (apt-get install libsodium23)")
    from edgegen.core.signing import keygen, sign

    art = tmp_path / "art"
    shutil.copytree(digits_mali_small, art)
    _, good = keygen(tmp_path / "good")
    _, other = keygen(tmp_path / "other")

    def check(*keys):
        args = [str(RUN), str(art), "--check"] + [a for k in keys for a in ("--trusted-key", str(k))]
        return subprocess.run(args, capture_output=True, text=True, timeout=60)

    assert "manifest.sig is missing" in check(good).stderr
    sign(art, tmp_path / "good")
    assert check(good).returncode == 0
    assert check(other, good).returncode == 0
    proc = check(other)
    assert proc.returncode == 1 and "not trusted here" in proc.stderr
    (art / "extra.bin").write_bytes(b"x")
    assert "added after signing" in check(good).stderr
    (art / "extra.bin").unlink()
    manifest = art / "manifest.json"
    manifest.write_text(manifest.read_text() + "\n")
    proc = check(good)
    assert proc.returncode == 1 and "changed after signing" in proc.stderr


@pytest.mark.opencl
def test_tiny_sd_text_encoder_matches_pyopencl(native_build, tiny_sd_adreno, cache_dir, monkeypatch):
    """The text encoder of the tiny Stable Diffusion artifact (adreno target) on the C runtime equals
    pyopencl's, for the ids runtimes/tokenizer.py makes of a prompt."""
    from edgegen.core.artifact import Artifact
    from edgegen.runtimes import native, opencl
    from edgegen.runtimes.stable_diffusion import StableDiffusionPipeline

    monkeypatch.setenv("EDGEGEN_CACHE_DIR", str(cache_dir))
    art = Artifact.open(tiny_sd_adreno)
    ids = StableDiffusionPipeline(art, {}).tokenizer(["", "a photo of a cat"])
    comp = art.component("text_encoder")
    ref_session, nat_session = opencl.load(art, comp), native.load(art, comp)
    try:
        ref = ref_session.run(input_ids=ids)["last_hidden_state"]
        got = nat_session.run(input_ids=ids)["last_hidden_state"]
    finally:
        ref_session.close()
        nat_session.close()
    np.testing.assert_array_equal(got, ref)


@pytest.mark.opencl
def test_tiny_sd_image_equals_the_python_opencl_runtime(native_build, tiny_sd_adreno, cache_dir, tmp_path):
    """Text-to-image end to end. PoCL compiles the tiny UNet's and VAE's kernels for minutes, once for
    pyopencl and once for the C runtime, so this runs when EDGEGEN_NATIVE_SD=1."""
    if os.environ.get("EDGEGEN_NATIVE_SD") != "1":
        pytest.skip("set EDGEGEN_NATIVE_SD=1: compiles the tiny UNet and VAE on PoCL twice (about 7 minutes here)")
    from edgegen import runtimes
    from edgegen.core.metrics import psnr

    pipe = runtimes.load(tiny_sd_adreno)
    try:
        ref = pipe("a photo of a cat", negative_prompt="blurry", num_inference_steps=4, seed=3, guidance_scale=5.0,
                   output_type="np").images[0]
    finally:
        pipe.close()
    out = tmp_path / "sd.png"
    proc = run([tiny_sd_adreno, "--prompt", "a photo of a cat", "--negative-prompt", "blurry", "--steps", 4,
                "--seed", 3, "--guidance", 5, "--out", out, "--quiet"], cache_dir, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    got = read_png(out)
    assert got.shape == ref.shape
    assert psnr(ref / 255.0, got / 255.0, peak=1.0) >= 60


@pytest.mark.opencl
def test_session_in_caller_arena_memory(native_build, digits_mali_small, cache_dir, monkeypatch):
    """eg_session_open_arena: the arena in the caller's (aligned) memory gives the same outputs; a
    misaligned or short buffer is refused."""
    from edgegen.core.artifact import Artifact
    from edgegen.runtimes import native

    monkeypatch.setenv("EDGEGEN_CACHE_DIR", str(cache_dir))
    art = Artifact.open(digits_mali_small)
    comp = art.component("transformer")
    n = comp.inputs[0].shape[0]
    feeds = {"sample": np.random.default_rng(1).standard_normal(comp.inputs[0].shape).astype(np.float32),
             "timestep": np.full(n, 77, np.float32), "class_labels": np.arange(n, dtype=np.int32)}
    plain = native.load(art, comp)
    try:
        want = plain.run(**feeds)["noise_pred"]
    finally:
        plain.close()
    lib = native._lib()
    vp, sz = ctypes.c_void_p, ctypes.c_size_t
    lib.eg_artifact_arena_bytes.argtypes = [vp, ctypes.c_char_p, ctypes.POINTER(sz), ctypes.c_char_p, sz]
    lib.eg_session_open_arena.argtypes = [vp, ctypes.c_char_p, vp, sz, ctypes.POINTER(vp), ctypes.c_char_p, sz]
    err = ctypes.create_string_buffer(1024)
    handle, session, size = vp(), vp(), sz()
    opts = native._Options()
    lib.eg_options_init(ctypes.byref(opts))
    assert lib.eg_artifact_open(str(digits_mali_small).encode(), ctypes.byref(opts), ctypes.byref(handle), err, 1024) == 0
    try:
        assert lib.eg_artifact_arena_bytes(handle, b"transformer", ctypes.byref(size), err, 1024) == 0
        backing = np.zeros(size.value + 8192, np.uint8)
        start = -backing.ctypes.data % 4096
        status = lib.eg_session_open_arena(handle, b"transformer", backing.ctypes.data + start + 8, size.value,
                                           ctypes.byref(session), err, 1024)
        assert status == native.ERR_ARGUMENT and b"aligned to 4096" in err.value
        assert lib.eg_session_open_arena(handle, b"transformer", backing.ctypes.data + start, size.value,
                                         ctypes.byref(session), err, 1024) == 0, err.value
        for spec in comp.inputs:
            arr = np.ascontiguousarray(feeds[spec.name])
            assert lib.eg_session_set_input(session, spec.name.encode(), arr.ctypes.data, arr.nbytes, err, 1024) == 0
        assert lib.eg_session_run(session, err, 1024) == 0, err.value
        got = np.empty_like(want)
        assert lib.eg_session_get_output(session, b"noise_pred", got.ctypes.data, got.nbytes, err, 1024) == 0
        np.testing.assert_array_equal(got, want)
    finally:
        if session:
            lib.eg_session_close(session)
        lib.eg_artifact_close(handle)


@pytest.mark.opencl
def test_pipeline_api_callbacks_cancel_and_checks_under_asan(native_build, digits_mali_small, cache_dir):
    """tests/test_core_pipeline.c on the ASan/UBSan build, running on PoCL. detect_leaks=0: LeakSanitizer's
    tracer itself crashes among PoCL's worker threads (the fuzz, which opens no driver, keeps leak checks on)."""
    subprocess.run(["make", "-s", "-C", str(NATIVE), "asan"], check=True, timeout=900)
    env = dict(os.environ, EDGEGEN_CACHE_DIR=str(cache_dir), ASAN_OPTIONS="detect_leaks=0:exitcode=99")
    proc = subprocess.run([str(NATIVE / "build-asan" / "tests" / "test_core_pipeline"), str(digits_mali_small)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0 and "pipeline ok" in proc.stdout, proc.stderr[-3000:]
    assert "AddressSanitizer" not in proc.stderr and "runtime error" not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.opencl
def test_corrupt_program_cache_entries_are_rebuilt(native_build, digits_mali_small, tmp_path):
    """Cached binaries that are truncated, bit-flipped or swapped are rebuilt from source, never trusted."""
    # an empty cache, filled by the first run: every entry is one this run reads again (a cache shared with
    # other tests holds entries of other artifacts, which the second run would never rebuild)
    cache = tmp_path / "cache"
    args = [digits_mali_small, "--label", "5", "--steps", 2, "--seed", 1, "--quiet"]
    first = run([*args, "--out", tmp_path / "a.png"], cache)
    assert first.returncode == 0, first.stderr
    entries = sorted((cache / "opencl").glob("*.bin"))
    assert len(entries) >= 3
    sizes = {p: p.stat().st_size for p in entries}
    entries[0].write_bytes(entries[0].read_bytes()[:100])                    # truncated
    data = bytearray(entries[1].read_bytes())
    data[len(data) // 2] ^= 0x40                                            # one bit of the binary
    entries[1].write_bytes(bytes(data))
    entries[2].write_bytes(entries[-1].read_bytes())                        # another program's entry
    second = run([*args, "--out", tmp_path / "b.png"], cache)
    assert second.returncode == 0, second.stderr
    assert np.array_equal(read_png(tmp_path / "a.png"), read_png(tmp_path / "b.png"))
    assert all(p.stat().st_size == sizes[p] for p in entries[:3])            # rewritten whole
    assert not list((cache / "opencl").glob("*.tmp.*"))
