"""Import TVM for running artifacts, with neither the compiler nor torch.

`tvm_ffi` imports torch when it can (for DLPack interop). A deploy runtime
must not pay for that, so torch is made unimportable while TVM loads, and
TVM is asked for its runtime library alone (TVM_USE_RUNTIME_LIB=1), unless
TVM is already imported in this process (a build ran first) or
EDGEGEN_TVM_RUNTIME_ONLY=0 asks for the full library.

TVM sizes its CPU thread pool once, when it starts it (at the first parallel
call), from TVM_NUM_THREADS, else half the logical cores on x86; a pool cannot
grow later (runtime.config_threadpool only picks fewer threads). So before TVM
is used, TVM_NUM_THREADS is set to every core this process may use, unless the
user set it.
"""

from __future__ import annotations

import os
import sys

from edgegen.core.cpus import available_cores
from edgegen.core.errors import MissingDependencyError


def size_thread_pool() -> None:
    os.environ.setdefault("TVM_NUM_THREADS", str(available_cores()))


def import_tvm():
    size_thread_pool()
    if "tvm" in sys.modules:
        return sys.modules["tvm"]
    runtime_only = os.environ.get("EDGEGEN_TVM_RUNTIME_ONLY", "1") != "0"
    blocked = runtime_only and "torch" not in sys.modules
    previous = os.environ.get("TVM_USE_RUNTIME_LIB")
    if runtime_only:
        os.environ["TVM_USE_RUNTIME_LIB"] = "1"
    if blocked:
        sys.modules["torch"] = None  # makes `import torch` raise ImportError
    try:
        import tvm
    except ImportError as exc:
        raise MissingDependencyError(
            "the TVM runtime is not installed; artifacts built for TVM targets need it. "
            "Install it with `pip install 'edgegen[runtime]'` (apache-tvm and apache-tvm-ffi==0.1.14.post0)."
        ) from exc
    finally:
        if blocked:
            del sys.modules["torch"]
        if previous is None:
            os.environ.pop("TVM_USE_RUNTIME_LIB", None)
        else:
            os.environ["TVM_USE_RUNTIME_LIB"] = previous
    return tvm


def is_runtime_only(tvm) -> bool:
    from tvm.base import _RUNTIME_ONLY

    return bool(_RUNTIME_ONLY)
