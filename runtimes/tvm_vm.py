"""Backend `tvm_vm`: a library compiled by TVM, run by the Relax virtual machine."""

from __future__ import annotations

import importlib.util

import numpy as np

from edgegen.core import safetensors_io
from edgegen.core.artifact import Artifact, Component
from edgegen.core.errors import ArtifactError
from edgegen.core.specs import check_inputs

from .elf_check import check_elf
from .native_errors import wrapped

INSTALL_HINT = "pip install 'edgegen[runtime]' (apache-tvm==0.27.0.post1, apache-tvm-ffi==0.1.14.post0)"


def is_available() -> bool:
    return importlib.util.find_spec("tvm") is not None


class Session:
    """A component on this CPU, or on a remote device when given a TVM RPC session (the library
    is uploaded there; weights and inputs are copied to the device). `threads`: how many of the
    pool's threads its calls use (default all; the pool holds every core this process may use,
    see tvm_import); `self.threads` is the count TVM reports."""

    def __init__(self, artifact: Artifact, component: Component, remote=None, threads: int | None = None):
        from .tvm_import import import_tvm

        tvm = import_tvm()
        from tvm.runtime.vm import VirtualMachine

        self.component = component
        self._tvm = tvm
        for role in ("library", "weights"):
            if role not in component.files:
                raise ArtifactError(f"component {component.name!r}: the manifest names no {role} file "
                                    f"(files/{role}); rebuild the artifact.")
        library = str(artifact.file(component.files["library"]))
        self._library = library
        check_elf(library, component.name)
        with wrapped(component.name, "loading the library", library):
            if remote is None:
                self._device, lib = tvm.cpu(), tvm.runtime.load_module(library)
            else:
                remote.upload(library, f"{component.name}.so")
                self._device, lib = remote.cpu(), remote.load_module(f"{component.name}.so")
            self._vm = VirtualMachine(lib, self._device)
            self._main = self._vm["main"]
        weights = safetensors_io.load(artifact.file(component.files["weights"]))
        absent = [s.name for s in component.weights if s.name not in weights]
        if absent:
            raise ArtifactError(f"component {component.name!r}: weights file lacks {absent[:3]}; rebuild the artifact.")
        self._params = [tvm.runtime.tensor(np.asarray(weights[s.name]), self._device)
                        for s in component.weights]
        self._local = remote is None
        self._pool = ThreadPool(tvm.get_global_func if self._local else remote.get_function)
        self._threads_asked = threads
        self.threads = self._pool.use(threads)

    def _args(self, inputs: dict) -> list:
        """The VM's arguments: the checked inputs on the device, then the weights."""
        arrays = check_inputs(self.component.inputs, inputs, f"component {self.component.name!r}")
        return [*(self._tvm.runtime.tensor(np.ascontiguousarray(a), self._device) for a in arrays), *self._params]

    def run(self, **inputs) -> dict[str, np.ndarray]:
        if self._local and self._pool.size() != self.threads:     # another session here resized the pool
            self._pool.use(self._threads_asked)
        args = self._args(inputs)
        with wrapped(self.component.name, "running the library", self._library):
            result = self._main(*args)
            outs = [result] if len(self.component.outputs) == 1 else list(result)
            got = {spec.name: out.numpy() for spec, out in zip(self.component.outputs, outs)}
        for spec in self.component.outputs:
            if spec.name not in got or got[spec.name].shape != spec.shape:
                raise ArtifactError(f"component {self.component.name!r}: the library {self._library} returned "
                                    f"no {spec.dtype}{list(spec.shape)} {spec.name!r}; rebuild the artifact.")
        return got

    def set_instrument(self, instrument) -> None:
        """Call instrument(func, symbol, before_run, ret_value, *args) around every VM call
        (the Relax VM's hook; None removes it)."""
        self._vm.set_instrument(instrument)

    def trace(self, limit: float = 65504.0, **inputs) -> dict:
        """Run once and check every kernel's output: the first kernel (in call order) whose output
        holds NaN/Inf, and the first whose magnitude exceeds `limit` (float16's largest finite
        value by default: what would overflow if the artifact ran in float16)."""
        found = {"first_nonfinite": None, "first_over_limit": None, "kernels_checked": 0, "limit": limit}

        def check(symbol: str, out: np.ndarray) -> None:
            if out.dtype.kind != "f":
                return
            found["kernels_checked"] += 1
            if found["first_nonfinite"] is None and not np.all(np.isfinite(out)):
                found["first_nonfinite"] = symbol
            # +-float32 max is the fill value of attention masks, not an overflow
            values = np.abs(out[np.isfinite(out)])
            values = values[values < np.finfo(np.float32).max]
            big = float(values.max()) if values.size else 0.0
            if found["first_over_limit"] is None and big > limit:
                found["first_over_limit"] = {"kernel": symbol, "max_abs": big}

        each_kernel_output(self._vm, self._args(inputs), check)
        return found

    def kernel_outputs(self, **inputs) -> list[tuple[str, np.ndarray]]:
        """Run once and keep every kernel's output, in call order (for layer bisection)."""
        return kernel_outputs(self._vm, self._args(inputs))

    def close(self) -> None:
        self._params = []
        self._vm = None
        self._main = None


def load(artifact: Artifact, component: Component, threads: int | None = None) -> Session:
    return Session(artifact, component, threads=threads)


class ThreadPool:
    """TVM's CPU thread pool, here or on a remote device: one per process (per calling thread),
    shared by every session there. Its size is fixed when it starts (see tvm_import); use() picks
    how many of its threads the calls use."""

    def __init__(self, get_function):
        self._configure = get_function("runtime.config_threadpool")
        self._size = get_function("runtime.NumThreads")

    def use(self, threads: int | None) -> int:
        """Use `threads` threads (None: all the pool holds); returns how many it uses."""
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self._configure(1, threads or 0)     # 1: TVM's "big cores" affinity mode; 0: every thread
        return self.size()

    def size(self) -> int:
        return int(self._size())


def each_kernel_output(vm, args: list, visit) -> None:
    """Run `main` of a Relax VM on `args`, calling visit(kernel, output) after every kernel call
    (VM builtins skipped; kernels are destination-passing, so the output is the last argument)."""
    def instrument(func, symbol, before_run, ret_value, *call_args):
        if not before_run and not symbol.startswith("vm.builtin") and call_args and hasattr(call_args[-1], "numpy"):
            visit(symbol, call_args[-1].numpy())
        return 0

    vm.set_instrument(instrument)
    try:
        vm["main"](*args)
    finally:
        vm.set_instrument(None)


def kernel_outputs(vm, args: list) -> list[tuple[str, np.ndarray]]:
    """(kernel, output) for every kernel call of `main` on `args`."""
    found: list[tuple[str, np.ndarray]] = []
    each_kernel_output(vm, args, lambda symbol, out: found.append((symbol, out)))
    return found
