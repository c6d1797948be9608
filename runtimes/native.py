"""Backend `native`: a launch-plan component run by edgegen's C runtime (runtimes/native,
libedgegen.so) through ctypes, instead of pyopencl. The same OpenCL device choice
(EDGEGEN_OPENCL_DEVICE), the same checks; torch and pyopencl are not needed.

`edgegen run|bench|validate --runtime native` (or EDGEGEN_RUNTIME=native) runs every OpenCL
component of an artifact this way."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

from edgegen.core.artifact import Artifact, Component
from edgegen.core.errors import ArtifactError, BackendUnavailableError, InputError
from edgegen.core.specs import check_inputs

LIBRARY = Path(__file__).resolve().parent / "native" / "build" / "libedgegen.so"
INSTALL_HINT = ("build the C runtime with `make native` (runtimes/native/build/libedgegen.so), and an OpenCL "
                "driver: the GPU vendor's, or PoCL on a CPU (apt-get install pocl-opencl-icd)")
DTYPES = ("float32", "float16", "int32", "int64", "uint8", "int8", "uint32")
(OK, ERR_ARGUMENT, ERR_IO, ERR_ARTIFACT, ERR_INPUT, ERR_UNAVAILABLE, ERR_DEVICE, ERR_MEMORY, ERR_CANCELLED,
 ERR_SIGNATURE) = range(10)
_ERRLEN = 2048


class _Options(ctypes.Structure):
    _fields_ = [("verify_checksums", ctypes.c_int), ("trusted_keys", ctypes.POINTER(ctypes.c_char_p)),
                ("n_trusted_keys", ctypes.c_size_t), ("cache_dir", ctypes.c_char_p),
                ("use_program_cache", ctypes.c_int), ("device", ctypes.c_char_p)]


def library_path() -> Path:
    return Path(os.environ.get("EDGEGEN_NATIVE_LIBRARY", LIBRARY))


def _lib():
    path = library_path()
    if not path.is_file():
        raise BackendUnavailableError(f"the native runtime is not built ({path} is missing); run `make native`")
    lib = ctypes.CDLL(str(path))
    vp, cp, sz, st = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int
    lib.eg_options_init.argtypes = [ctypes.POINTER(_Options)]
    lib.eg_artifact_open.argtypes = [cp, ctypes.POINTER(_Options), ctypes.POINTER(vp), cp, sz]
    lib.eg_artifact_open.restype = st
    lib.eg_artifact_close.argtypes = [vp]
    lib.eg_session_open.argtypes = [vp, cp, ctypes.POINTER(vp), cp, sz]
    lib.eg_session_open.restype = st
    lib.eg_session_close.argtypes = [vp]
    lib.eg_session_device_name.argtypes = [vp]
    lib.eg_session_device_name.restype = cp
    lib.eg_session_set_input.argtypes = [vp, cp, vp, sz, cp, sz]
    lib.eg_session_set_input.restype = st
    lib.eg_session_run.argtypes = [vp, cp, sz]
    lib.eg_session_run.restype = st
    lib.eg_session_launch_all.argtypes = [vp, cp, sz]
    lib.eg_session_launch_all.restype = st
    lib.eg_session_get_output.argtypes = [vp, cp, vp, sz, cp, sz]
    lib.eg_session_get_output.restype = st
    return lib


def is_available() -> bool:
    return library_path().is_file()


def _raise(status: int, err, what: str):
    msg = err.value.decode("utf-8", "replace")
    if status == ERR_INPUT:
        raise InputError(msg)
    if status in (ERR_UNAVAILABLE,):
        raise BackendUnavailableError(f"{what}: {msg}")
    raise ArtifactError(f"{what}: {msg}")


class Session:
    """A component on the OpenCL device through libedgegen: run(**inputs) -> {name: array}."""

    def __init__(self, artifact: Artifact, component: Component):
        self._lib = lib = _lib()
        self.component = component
        self._art = ctypes.c_void_p()
        self._session = ctypes.c_void_p()
        err = ctypes.create_string_buffer(_ERRLEN)
        opts = _Options()
        lib.eg_options_init(ctypes.byref(opts))
        opts.verify_checksums = 0     # Artifact.open has checked every file's SHA-256
        status = lib.eg_artifact_open(str(artifact.root).encode(), ctypes.byref(opts), ctypes.byref(self._art),
                                      err, _ERRLEN)
        if status:
            _raise(status, err, f"opening {artifact.root} with the native runtime")
        status = lib.eg_session_open(self._art, component.name.encode(), ctypes.byref(self._session), err, _ERRLEN)
        if status:
            lib.eg_artifact_close(self._art)
            self._art = None
            _raise(status, err, f"component {component.name!r}")
        self.device_name = f"native OpenCL: {lib.eg_session_device_name(self._session).decode()}"

    def run(self, **inputs) -> dict[str, np.ndarray]:
        arrays = check_inputs(self.component.inputs, inputs, f"component {self.component.name!r}")
        err = ctypes.create_string_buffer(_ERRLEN)
        for spec, arr in zip(self.component.inputs, arrays):
            arr = np.ascontiguousarray(arr, dtype=spec.dtype)
            status = self._lib.eg_session_set_input(self._session, spec.name.encode(), arr.ctypes.data, arr.nbytes,
                                                    err, _ERRLEN)
            if status:
                _raise(status, err, f"component {self.component.name!r}")
        status = self._lib.eg_session_run(self._session, err, _ERRLEN)
        if status:
            _raise(status, err, f"component {self.component.name!r}")
        out = {}
        for spec in self.component.outputs:
            arr = np.empty(spec.shape, dtype=spec.dtype)
            status = self._lib.eg_session_get_output(self._session, spec.name.encode(), arr.ctypes.data, arr.nbytes,
                                                     err, _ERRLEN)
            if status:
                _raise(status, err, f"component {self.component.name!r}")
            out[spec.name] = arr
        return out

    def launch_all(self) -> None:
        err = ctypes.create_string_buffer(_ERRLEN)
        status = self._lib.eg_session_launch_all(self._session, err, _ERRLEN)
        if status:
            _raise(status, err, f"component {self.component.name!r}")

    def close(self) -> None:
        if self._session:
            self._lib.eg_session_close(self._session)
            self._session = None
        if self._art:
            self._lib.eg_artifact_close(self._art)
            self._art = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def load(artifact: Artifact, component: Component) -> Session:
    return Session(artifact, component)
