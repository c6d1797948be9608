"""The portable seeded noise: its statistics, determinism, seed range, and the C copy's equality."""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgegen.runtimes.noise import normal, splitmix64, step_noise, step_seed

NATIVE = Path(__file__).resolve().parents[2] / "runtimes" / "native"


def test_splitmix64_reference_values():
    # SplitMix64 from state 0 (Vigna's splitmix64.c, first outputs).
    assert [int(v) for v in splitmix64(0, 3)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


@pytest.mark.parametrize("shape", [(4, 64, 64), (1, 4, 128, 128), (7,), (3, 5), ()])
def test_shape_dtype_and_determinism(shape):
    a = normal(11, shape)
    assert a.shape == shape and a.dtype == np.float32
    assert np.array_equal(a, normal(11, shape))
    assert np.all(np.isfinite(a))


def test_statistics_over_many_draws():
    x = normal(1234, 1_000_000).astype(np.float64)
    assert abs(x.mean()) < 5e-3 and abs(x.std() - 1) < 5e-3
    assert abs(np.mean(x**3)) < 2e-2 and abs(np.mean(x**4) - 3) < 5e-2  # skew 0, kurtosis 3
    assert abs(np.mean(np.abs(x) < 1) - 0.6827) < 3e-3
    assert abs(np.corrcoef(x[:-1], x[1:])[0, 1]) < 5e-3
    assert 4.0 < np.abs(x).max() < 7.0


def test_seeds_differ_and_prefixes_agree():
    draws = [normal(s, 64) for s in (0, 1, 2, 2**63, 2**64 - 1)]
    for i in range(len(draws)):
        for j in range(i):
            assert not np.array_equal(draws[i], draws[j])
    assert np.array_equal(normal(5, 9), normal(5, 10)[:9])  # an odd count drops only the last sine value
    assert np.array_equal(normal(np.uint64(2**63), (2, 3)).ravel(), normal(2**63, 6))


def test_seed_none_and_bad_seeds():
    assert not np.array_equal(normal(None, 16), normal(None, 16))
    for bad in (-1, 2**64):
        with pytest.raises(ValueError, match="seed"):
            normal(bad, 4)
    for bad in (1.5, "3", True):
        with pytest.raises(TypeError, match="seed"):
            normal(bad, 4)


def _native_program(name: str, tmp: Path) -> Path:
    """build/tests/<name> from the native Makefile when there is one, else compiled here by hand;
    EDGEGEN_NATIVE_TESTS=DIR takes it from DIR (e.g. runtimes/native/build-asan/tests)."""
    if os.environ.get("EDGEGEN_NATIVE_TESTS"):
        return Path(os.environ["EDGEGEN_NATIVE_TESTS"]).resolve() / name
    if (NATIVE / "Makefile").exists():
        subprocess.run(["make", "-s", "-C", str(NATIVE), f"build/tests/{name}"], check=True, timeout=600)
        return NATIVE / "build" / "tests" / name
    exe = tmp / name
    if exe.exists():
        return exe
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-O2", "-o", str(exe),
                    str(NATIVE / "tests" / f"{name}.c"), str(NATIVE / "src" / "rng.c"), "-lm"], check=True)
    return exe


@pytest.mark.parametrize("seed", [0, 1, 42, 2**63, 2**64 - 1])
def test_c_generator_draws_the_same_values(seed, tmp_path_factory):
    exe = _native_program("test_text_rng", tmp_path_factory.getbasetemp())
    n = 4 * 64 * 64 + 1
    c = np.frombuffer(subprocess.run([str(exe), str(seed), str(n)], check=True, capture_output=True).stdout,
                      dtype=np.float32)
    py = normal(seed, n)
    ulp = np.abs(c.view(np.int32).astype(np.int64) - py.view(np.int32).astype(np.int64))
    assert ulp.max() <= 1, f"max float32 ulp difference {ulp.max()}"
    assert np.array_equal(c, py), f"{np.count_nonzero(ulp)} of {n} values differ by one ulp"


@pytest.mark.parametrize("seed,step", [(0, 0), (42, 3), (2**64 - 1, 7)])
def test_c_step_noise_draws_the_same_values(seed, step, tmp_path_factory):
    exe = _native_program("test_text_rng", tmp_path_factory.getbasetemp())
    n = 4 * 8 * 8 + 1
    c = np.frombuffer(subprocess.run([str(exe), str(seed), str(n), str(step)], check=True,
                                     capture_output=True).stdout, dtype=np.float32)
    assert np.array_equal(c, step_noise(seed, step, n))


def test_step_noise_is_its_own_stream():
    steps = [step_noise(9, i, 256) for i in range(4)]
    assert all(not np.array_equal(steps[i], steps[j]) for i in range(4) for j in range(i))
    assert not np.array_equal(steps[0], normal(9, 256))     # not the initial latents again
    assert step_seed(9, 2) == step_seed(9, 2) != step_seed(10, 2)
