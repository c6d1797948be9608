"""Find the first layer or kernel where an artifact's denoiser parts from its reference.

ONNX artifacts exported by optimum keep each torch module's path in their node
names ("/down_blocks.0/resnets.0/conv1/Conv"), so every leaf module's output can
be read on both sides from the same inputs: torch through forward hooks,
onnxruntime by exposing the module's last node output as a graph output. The
layers are compared in graph order; the first under the threshold is reported.

TVM artifacts run fused kernels that no torch module matches one to one. Their
reference is the same component lowered by the same graph passes and fusion but
with TVM's plain loops and precise math instead of edgegen's schedule rule and
fast math; both run with every kernel's output kept, and kernels are paired in
call order by output shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgegen.core.metrics import psnr


def onnx_module_outputs(model) -> dict[str, str]:
    """Module path -> the tensor its last node writes, ordered by where that last node sits, for
    nodes named by scope. A module called twice gets a second scope ("nonlinearity_1"), so a
    path names its first call."""
    outputs: dict[str, str] = {}
    for node in model.graph.node:
        if node.name.startswith("/") and node.output:
            scope = node.name.strip("/").rsplit("/", 1)[0]
            if scope and scope != node.name.strip("/"):
                outputs.pop(scope.replace("/", "."), None)
                outputs[scope.replace("/", ".")] = node.output[0]
    return outputs


def describe(entry: dict) -> str:
    """One line for a bisection entry: an ONNX layer or a TVM kernel, and its PSNR."""
    what = (f"layer {entry['layer']} ({entry['module']})" if "layer" in entry
            else f"kernel {entry['kernel']} (call {entry['call']})")
    return f"{what}, {entry['psnr_db']:.2f} dB"


def bisect(artifact_dir, model_dir, component: str, inputs: dict, threshold_db: float = 40.0) -> dict:
    """Bisect one component on `inputs` with the method its backend allows."""
    from edgegen.core import Artifact

    comp = Artifact.open(artifact_dir).component(component)
    if comp.backend == "tvm_vm":
        return bisect_tvm(artifact_dir, model_dir, component, inputs, threshold_db)
    if comp.backend == "onnxruntime" and comp.info.get("exporter") == "optimum" and component == "unet":
        return bisect_unet(artifact_dir, model_dir, inputs, threshold_db)
    return {"supported": False,
            "reason": f"no layer bisection for {component!r} on {comp.backend} ({comp.info.get('exporter', '')}): "
                      f"it needs module-scoped ONNX nodes (optimum's UNet export) or a TVM artifact"}


def bisect_tvm(artifact_dir, model_dir, component: str, inputs: dict, threshold_db: float = 40.0) -> dict:
    """Compare every kernel of a TVM artifact's component with the reference lowering of the same
    component from the source model."""
    import difflib
    import tempfile

    from edgegen.converters import capture, lower, source
    from edgegen.converters.build import FAMILIES
    from edgegen.core import Artifact, safetensors_io
    from edgegen.runtimes import load_component
    from edgegen.runtimes.tvm_vm import kernel_outputs

    art = Artifact.open(artifact_dir)
    comp = art.component(component)
    index = source.read_model_index(Path(model_dir))
    p = art.pipeline
    plan = FAMILIES[index["_class_name"]].plan(Path(model_dir), index, height=p.get("height"), width=p.get("width"),
                                               batch=p.get("batch"))
    cap = plan.components[component]
    lowered = lower.to_relax(capture.export(cap), len(cap.inputs), f"component {component!r}")
    lowered = lower.cpu_weight_layouts(lowered)   # the artifact's weights are stored in the kernels' layouts
    executable = lower.compile_module(lowered.module, art.manifest["target"]["tvm_target"], reference=True)
    tvm = lower.import_tvm_compiler()
    from tvm import relax

    feed = [np.ascontiguousarray(inputs[s.name]) for s in comp.inputs]
    weights = safetensors_io.load(art.file(comp.files["weights"]))
    with tempfile.TemporaryDirectory() as tmp:
        executable.export_library(f"{tmp}/reference.so")
        vm = relax.VirtualMachine(tvm.runtime.load_module(f"{tmp}/reference.so"), tvm.cpu())
        args = [tvm.runtime.tensor(a) for a in feed + [np.asarray(weights[s.name]) for s in comp.weights]]
        reference = kernel_outputs(vm, args)
    session = load_component(art, component)
    actual = session.kernel_outputs(**{s.name: a for s, a in zip(comp.inputs, feed)})
    session.close()
    signature = lambda outs: [f"{o.dtype}{o.shape}" for _, o in outs]  # noqa: E731
    pairs = []
    for block in difflib.SequenceMatcher(None, signature(actual), signature(reference), autojunk=False).get_matching_blocks():
        pairs += [(block.a + i, block.b + i) for i in range(block.size)]
    kernels = []
    for a, b in pairs:
        (name, out), (ref_name, ref) = actual[a], reference[b]
        if out.dtype.kind == "f" and out.size:
            kernels.append({"kernel": name, "reference_kernel": ref_name, "call": a,
                            "psnr_db": round(float(psnr(ref, out)), 2)})
    first = next((k for k in kernels if k["psnr_db"] < threshold_db), None)
    return {"supported": True, "method": "TVM kernels vs the reference lowering (plain loops, precise math)",
            "threshold_db": threshold_db, "layers_compared": len(kernels), "kernel_calls": len(actual),
            "first_divergent": first, "worst": sorted(kernels, key=lambda k: k["psnr_db"])[:5]}


def bisect_unet(artifact_dir, model_dir, inputs: dict, threshold_db: float = 40.0, component: str = "unet") -> dict:
    """Compare every leaf module of the UNet on `inputs` (sample, timestep, encoder_hidden_states)."""
    import onnx
    import onnxruntime as ort
    import torch
    from diffusers import UNet2DConditionModel

    from edgegen.core import Artifact
    from edgegen.runtimes.onnxruntime import adapt_feed

    art = Artifact.open(artifact_dir)
    comp = art.component(component)
    model = onnx.load(str(art.file(comp.files["model"])))
    wanted = onnx_module_outputs(model)
    reference = UNet2DConditionModel.from_pretrained(Path(model_dir) / "unet", local_files_only=True).eval()
    leaves = {name: m for name, m in reference.named_modules() if name in wanted and not list(m.children())}
    captured: dict[str, np.ndarray] = {}

    def keep(name):
        def hook(module, args, out):          # returns None: the module's output stays as it is
            captured.setdefault(name, out.detach().numpy())
        return hook

    hooks = [m.register_forward_hook(keep(n)) for n, m in leaves.items()]
    try:
        with torch.no_grad():
            reference(torch.from_numpy(inputs["sample"]), torch.from_numpy(inputs["timestep"]),
                      encoder_hidden_states=torch.from_numpy(inputs["encoder_hidden_states"]))
    finally:
        for h in hooks:
            h.remove()
    names = [n for n in wanted if n in captured]
    graph_outputs = {o.name for o in model.graph.output}
    for n in names:
        if wanted[n] not in graph_outputs:
            model.graph.output.append(onnx.helper.make_tensor_value_info(wanted[n], onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    values = sess.run([wanted[n] for n in names], adapt_feed(sess, inputs))
    layers = [{"layer": n, "module": type(leaves[n]).__name__, "psnr_db": round(float(psnr(captured[n], v)), 2)}
              for n, v in zip(names, values)]
    first = next((entry for entry in layers if entry["psnr_db"] < threshold_db), None)
    return {"supported": True, "method": "torch leaf modules vs module-scoped ONNX outputs",
            "threshold_db": threshold_db, "layers_compared": len(layers),
            "first_divergent": first, "worst": sorted(layers, key=lambda e: e["psnr_db"])[:5]}
