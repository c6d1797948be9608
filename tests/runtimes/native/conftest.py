import os
import subprocess
from pathlib import Path

import pytest

NATIVE = Path(__file__).resolve().parents[3] / "runtimes" / "native"


@pytest.fixture(scope="session")
def native_program():
    """name -> a C test program of runtimes/native/tests, built; EDGEGEN_NATIVE_TESTS=DIR takes it from DIR
    (e.g. runtimes/native/build-asan/tests)."""
    def program(name: str) -> Path:
        if os.environ.get("EDGEGEN_NATIVE_TESTS"):
            return Path(os.environ["EDGEGEN_NATIVE_TESTS"]).resolve() / name
        subprocess.run(["make", "-s", "-C", str(NATIVE), f"build/tests/{name}"], check=True, timeout=600)
        return NATIVE / "build" / "tests" / name

    return program
