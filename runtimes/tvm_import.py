"""Import TVM for running artifacts, with neither the compiler nor torch.

`tvm_ffi` imports torch when it can (for DLPack interop). A deploy runtime
must not pay for that, so torch is made unimportable while TVM loads, and
TVM is asked for its runtime library alone (TVM_USE_RUNTIME_LIB=1), unless
TVM is already imported in this process (a build ran first) or
EDGEGEN_TVM_RUNTIME_ONLY=0 asks for the full library.
"""

from __future__ import annotations

import os
import sys

from edgegen.core.errors import MissingDependencyError


def import_tvm():
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
