"""The onnx target: an ONNX model per component (optimum's layout where it covers the pipeline), run by onnxruntime."""

from __future__ import annotations

from .. import capture
from . import Emitted, EmitContext

BACKENDS = ("onnxruntime",)


def _same_interface(model, cap: capture.Captured) -> bool:
    """Whether an exported ONNX file takes the component's inputs and gives its outputs (among others:
    optimum's text encoder adds the pooled output), by name."""
    from .. import onnx_export

    sess = onnx_export.session(model)
    return ({i.name for i in sess.get_inputs()} == set(cap.inputs)
            and set(cap.outputs) <= {o.name for o in sess.get_outputs()})


def emit(ctx: EmitContext, name: str, cap: capture.Captured, calibration: list | None) -> Emitted:
    """Export to ONNX (unless optimum already wrote the component), quantize if asked."""
    from edgegen.runtimes.onnxruntime import adapt_feed

    from .. import onnx_export

    writer, stages, scheme = ctx.writer, ctx.stages, ctx.scheme
    model = writer.path(f"{name}/model.onnx")
    if model.is_file() and not _same_interface(model, cap):    # optimum's VAE encoder gives other outputs
        for f in model.parent.iterdir():
            f.unlink()
    info = {"opset": onnx_export.OPSET, "exporter": "optimum" if model.is_file() else "torch.onnx"}
    if not model.is_file():
        stages.run(f"{name}: export ONNX (torch.onnx)", onnx_export.export, cap, model)
    if scheme is not None:
        # activation scales (w8a8) come from real runs of the pipeline; weight-only schemes need none
        feeds = None
        if scheme.activations:
            sess = onnx_export.session(model)
            feeds = [adapt_feed(sess, inputs) for inputs in (calibration or [cap.inputs])]
        info["quant"] = stages.run(f"{name}: quantize {scheme.name} (onnxruntime)", onnx_export.quantize, model,
                                   scheme, feeds)
    sess = onnx_export.session(model)
    actual = stages.run(f"{name}: parity check", sess.run, list(cap.outputs), adapt_feed(sess, cap.inputs))
    files = {"model": f"{name}/model.onnx"}
    files.update({f"external_data_{i}": f"{name}/{n}" for i, n in enumerate(onnx_export.external_data_files(model))})
    return Emitted(files, [], info, actual)
