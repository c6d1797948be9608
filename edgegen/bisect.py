"""Find the first layer where an artifact's UNet parts from the torch reference.

ONNX artifacts exported by optimum keep each torch module's path in their node
names ("/down_blocks.0/resnets.0/conv1/Conv"), so every leaf module's output can
be read on both sides from the same inputs: torch through forward hooks,
onnxruntime by exposing the module's last node output as a graph output. The
layers are compared in graph order; the first under the threshold is reported.
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
    if comp.backend != "onnxruntime" or comp.info.get("exporter") != "optimum":
        return {"supported": False,
                "reason": f"layer bisection reads per-module outputs, which {comp.backend} artifacts built by "
                          f"{comp.info.get('exporter', 'TVM')} do not expose (kernels are fused); use --trace "
                          f"for NaN/Inf and float16 overflow, or build --target onnx to bisect"}
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
    layers = [{"layer": n, "module": type(leaves[n]).__name__, "psnr_db": round(psnr(captured[n], v), 2)}
              for n, v in zip(names, values)]
    first = next((entry for entry in layers if entry["psnr_db"] < threshold_db), None)
    return {"supported": True, "threshold_db": threshold_db, "layers_compared": len(layers),
            "first_divergent": first, "worst": sorted(layers, key=lambda e: e["psnr_db"])[:5]}
