"""Backend `metal`: a launch plan of Metal Shading Language kernels. Executing them needs
Apple's Metal framework (macOS or iOS), where an app runs the plan with MTLComputeCommandEncoder
exactly as the opencl backend does with OpenCL; this edgegen has no Python executor for it."""

from __future__ import annotations

INSTALL_HINT = ("Metal kernels run on macOS or iOS only: load the plan from a Swift/Objective-C app (see "
                "README, \"Launch plans\"), or build for opencl/webgpu to run here")


def is_available() -> bool:
    return False


def load(artifact, component):
    from edgegen.core.errors import BackendUnavailableError

    raise BackendUnavailableError(f"backend 'metal' cannot run on this machine; {INSTALL_HINT}")
