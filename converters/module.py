"""Build any torch module (a VAE, a ControlNet, a custom decoder) into a one-component artifact.

The module goes through the same capture -> quantize -> compile -> parity path as a pipeline's
components (build._build_component), with the same gates and files; the manifest's pipeline is
kind "module" and names the inputs and outputs, which edgegen.runtimes.load_module reads.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from pathlib import Path

import numpy as np

from edgegen.core.artifact import ArtifactWriter
from edgegen.core.errors import InputError, ModelError
from edgegen.core.quant import parse as parse_scheme
from edgegen.core.targets import GPU_BACKENDS, get_target

from . import build as _build
from . import capture, lower

KIND = "module"          # the manifest's pipeline kind (runtimes/module.py reads it)
COMPONENT = "module"     # the one component's name
SUPPORTED_BACKENDS = ("tvm_vm", "onnxruntime", *GPU_BACKENDS)


def _output_names(out) -> list[str]:
    """Names for what forward returns: a dict's keys, `output` for one tensor, output_<i> for a
    tuple or list."""
    import torch

    if isinstance(out, torch.Tensor):
        return ["output"]
    if isinstance(out, dict) and all(isinstance(v, torch.Tensor) for v in out.values()):
        return [str(k) for k in out]
    if isinstance(out, (tuple, list)) and out and all(isinstance(v, torch.Tensor) for v in out):
        return [f"output_{i}" for i in range(len(out))]
    raise ModelError(f"build_module: forward returned {type(out).__name__}; it must return a tensor, a tuple or "
                     f"list of tensors, or a dict of tensors (wrap the module to return one of those).")


def _check_inputs(module, example_inputs: dict) -> dict[str, np.ndarray]:
    """The example inputs as contiguous arrays, named as forward's parameters."""
    if not isinstance(example_inputs, dict) or not example_inputs:
        raise InputError("build_module: example_inputs must be a non-empty dict {forward parameter name: array}.")
    params = inspect.signature(module.forward).parameters
    takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in params.values())
    unknown = [n for n in example_inputs if n not in params and not takes_kwargs]
    if unknown:
        raise InputError(f"build_module: example input(s) {unknown} are not parameters of "
                         f"{type(module).__name__}.forward {list(params)}; name them as forward does.")
    arrays = {}
    for name, value in example_inputs.items():
        arr = np.ascontiguousarray(value)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        if arr.dtype == np.int64:
            arr = arr.astype(np.int32)
        if arr.dtype.kind not in "fiu":
            raise InputError(f"build_module: example input {name!r} has dtype {arr.dtype}; pass float or integer "
                             f"arrays.")
        arrays[name] = arr
    return arrays


def capture_module(module, example_inputs: dict) -> capture.Captured:
    """A Captured wrapper around `module`: positional tensors in example_inputs' order, passed to forward
    by name; a flat tuple of tensors out (named by _output_names)."""
    import torch

    module = module.eval()
    inputs = _check_inputs(module, example_inputs)
    names = list(inputs)
    with torch.no_grad():
        probe = module(**{n: torch.from_numpy(a) for n, a in inputs.items()})
    outputs = _output_names(probe)
    keyed = isinstance(probe, dict)

    class ModuleWrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            out = self.inner(**dict(zip(names, args)))
            if isinstance(out, torch.Tensor):
                return out
            return tuple(out[k] for k in outputs) if keyed else tuple(out)

    return capture.Captured(f"module:{type(module).__name__}", ModuleWrapper(module).eval(), inputs, outputs)


def _state_hash(module) -> str:
    """sha256 over the module's parameters and buffers (names, dtypes, shapes, bytes): the source's
    identity, where a pipeline build hashes its folder."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        arr = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name}:{arr.dtype}:{arr.shape};".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def _check_calibration(calibration, inputs: dict) -> list[dict] | None:
    if calibration is None:
        return None
    samples = []
    for i, sample in enumerate(calibration):
        if set(sample) != set(inputs):
            raise InputError(f"build_module: calibration sample {i} has inputs {sorted(sample)}; each sample needs "
                             f"exactly the example inputs {sorted(inputs)}.")
        arrays = {}
        for name, ref in inputs.items():    # in the example's order: the compiled main takes them positionally
            arr = np.asarray(sample[name])
            if arr.shape != ref.shape:
                raise InputError(f"build_module: calibration sample {i} input {name!r} has shape {arr.shape}; the "
                                 f"build fixes {ref.shape} from the example inputs.")
            arrays[name] = np.ascontiguousarray(arr, ref.dtype)
        samples.append(arrays)
    return samples


def build_module(module, example_inputs: dict, out: str | Path, target: str = "cpu", quant: str | None = None,
                 calibration: list[dict] | None = None, overwrite: bool = False, progress=None,
                 parity_db: float = _build.COMPONENT_PSNR_DB, precision: str | None = None,
                 execute: bool = True) -> _build.BuildReport:
    """Build a torch module into an artifact at `out` (one component, named "module").

    example_inputs: {forward parameter name: array}, which also fix the static shapes.
    quant: a scheme of edgegen.core.quant. calibration: inputs from real runs ({name: array} each, the
    example's shapes), which w8a8 and mixed:<dB> need; the example inputs alone are used otherwise.
    The compiled module must match torch at `parity_db` (fp32) or QUANT_FLOOR_DB (quantized), as a
    pipeline's components do. Load the artifact with edgegen.runtimes.load_module(out)."""
    t_start = time.perf_counter()
    tgt = get_target(target)
    if tgt.backend not in SUPPORTED_BACKENDS:
        raise ValueError(f"build_module: target {tgt.name!r} (backend {tgt.backend}) is not supported for arbitrary "
                         f"modules; the Core ML export maps the diffusers components onto Apple's Swift package. "
                         f"Pick one of the cpu, onnx or GPU targets.")
    scheme = parse_scheme(quant) if quant else None
    if scheme is not None and scheme.activations and tgt.backend in GPU_BACKENDS:
        raise ValueError(f"--quant {scheme.name} on the {tgt.name} target: the GPU plans have no int8-activation "
                         f"kernels; use w8, which stores the same int8 weights.")
    if precision is not None and tgt.backend not in GPU_BACKENDS:
        raise ValueError(f"precision applies to the GPU targets; {tgt.name} builds float32 kernels.")
    cap = capture_module(module, example_inputs)
    samples = _check_calibration(calibration, cap.inputs)
    if scheme is not None and (scheme.activations or scheme.kind == "mixed") and not samples:
        samples = [cap.inputs]     # the example is a real input: at least it calibrates
    options = {"execute": execute, "precision": precision or tgt.profile.default_precision}
    stages = _build._Stages(progress)
    tvm_target = lower.resolve_target(tgt.tvm_target) if tgt.tvm_target else {}
    with ArtifactWriter(out, overwrite=overwrite) as writer:
        info = _build._build_component(writer, COMPONENT, cap, tgt, tvm_target, stages, parity_db, scheme, options,
                                       samples)
        source_hash = stages.run("hash module state", _state_hash, module)
        dest = writer.commit(
            pipeline={"kind": KIND, "component": COMPONENT, "inputs": list(cap.inputs), "outputs": cap.outputs},
            source={"class": f"{type(module).__module__}.{type(module).__qualname__}", "sha256": source_hash},
            target={"name": tgt.name, "backend": tgt.backend, "tvm_target": tvm_target,
                    "device_profile": vars(tgt.profile), **({"quant": scheme.name} if scheme else {})},
            toolchain=_build.toolchain_versions(),
        )
    size = sum(p.stat().st_size for p in Path(dest).rglob("*") if p.is_file())
    info["bytes"] = size
    return _build.BuildReport(artifact=str(dest), target=tgt.name, seconds=time.perf_counter() - t_start,
                              bytes=size, components={COMPONENT: info}, stages=stages.done)


def load_factory(spec: str):
    """`file.py:factory` -> (module, example_inputs[, calibration]) from calling factory(): the CLI's way
    to name a module. The factory returns a torch module and its example inputs (a dict of arrays),
    optionally a list of calibration inputs as a third item."""
    import importlib.util

    path, _, name = spec.rpartition(":")
    if not path or not name:
        raise InputError(f"{spec!r}: name the module as FILE.py:FACTORY (a function returning (module, "
                         f"example_inputs[, calibration])).")
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{spec!r}: {file} is not a file.")
    loaded = importlib.util.spec_from_file_location(f"edgegen_user_{file.stem}", file)
    user = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(user)
    factory = getattr(user, name, None)
    if not callable(factory):
        raise InputError(f"{spec!r}: {file} defines no function {name!r}.")
    made = factory()
    if not isinstance(made, tuple) or len(made) not in (2, 3):
        raise InputError(f"{spec!r}: {name}() returned {type(made).__name__}; return (module, example_inputs) or "
                         f"(module, example_inputs, calibration).")
    return made if len(made) == 3 else (*made, None)
