"""Export a captured component to ONNX with torch.onnx (dynamo exporter)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgegen.core.errors import MissingDependencyError
from edgegen.core.quiet import log_records_hidden, verbose, warnings_hidden

from .lower import TORCH_LEAFSPEC_COPY

OPSET = 18


def export(captured, path: str | Path) -> None:
    """Write `captured.module` as an ONNX model with the component's input and output names.
    Weights over 2 GB go to an external-data file beside it, as ONNX requires."""
    import torch

    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("ONNX export needs onnx and onnxscript: `pip install 'edgegen[onnx]'`.") from exc
    args = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in captured.inputs.values())
    big = sum(p.numel() * p.element_size() for p in captured.module.parameters()) > (2 << 30) - (64 << 20)
    # the exporter's registry notes each torchvision op it cannot register (torchvision is not a
    # dependency), and copying its tree specs warns that LeafSpec is deprecated: neither is the user's
    with torch.no_grad(), warnings_hidden(TORCH_LEAFSPEC_COPY), log_records_hidden(
            "torch.onnx._internal.exporter._registration", "torchvision is not installed"):
        torch.onnx.export(captured.module, args, str(path), input_names=list(captured.inputs),
                          output_names=list(captured.outputs), opset_version=OPSET, dynamo=True,
                          optimize=True, external_data=big, verbose=False)


def session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session for a model file."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingDependencyError("running ONNX needs onnxruntime: `pip install 'edgegen[onnx]'`.") from exc
    opts = ort.SessionOptions()
    opts.log_severity_level = 2 if verbose() else 3     # 2: onnxruntime's default, warnings
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def export_pipeline(model_dir: str | Path, out_dir: str | Path, task: str) -> None:
    """Export a whole diffusers pipeline folder with optimum, in the layout that
    `optimum.onnxruntime.ORTDiffusionPipeline.from_pretrained(out_dir)` loads as it is
    (one folder per component with model.onnx and config.json, plus tokenizer/,
    scheduler/ and model_index.json; optimum writes external data above 2 GB)."""
    try:
        from optimum.exporters.onnx import main_export
    except ImportError as exc:
        raise MissingDependencyError(
            "the ONNX pipeline export needs optimum: `pip install -c requirements/constraints.txt "
            "'edgegen[onnx]'` (optimum==2.1.0, optimum-onnx==0.1.0).") from exc
    from torch.jit import TracerWarning

    from .source import loading_bars_off

    # optimum loads the pipeline passing subfolder="" and without low_cpu_mem_usage=False (edgegen needs no
    # accelerate); torch's TorchScript exporter warns of shape-dependent branches (fixed by the export for its
    # shapes), of advanced indexing with negative indices (CLIP's pooled token index is not), and of strided
    # slices it leaves unfolded
    with loading_bars_off(), warnings_hidden(
            (TracerWarning, ""), (UserWarning, "Exporting aten::index operator of advanced indexing"),
            (UserWarning, "Constant folding - Only steps=1 can be constant folded")), log_records_hidden(
            "diffusers.pipelines.pipeline_utils", "Keyword arguments {'subfolder': ''} are not expected",
            "Cannot initialize model with low cpu memory usage because `accelerate` was not found"):
        main_export(str(model_dir), str(out_dir), task=task, library_name="diffusers", device="cpu",
                    do_validation=False)


def external_data_files(path: str | Path) -> list[str]:
    """Names of the external-data files a model refers to, relative to its folder."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    return sorted({e.value for t in _get_all_tensors(model) if uses_external_data(t)
                   for e in t.external_data if e.key == "location"})


def weight_stats(path: str | Path) -> tuple[int, int]:
    """(bytes held by the model's initializers, elements of its float32 initializers)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    nbytes = elements = 0
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        nbytes += a.nbytes
        if a.dtype == np.float32:
            elements += a.size
    return nbytes, elements


# Schemes with no ONNX operator of their own, and what is applied instead.
FALLBACKS = {
    "pal4": ("w4g32", "ONNX and onnxruntime have no lookup-table (palettized) weight operator; "
                      "int4 MatMulNBits at block 32 stores the same 4 bits per weight"),
    "pal6": ("w8", "ONNX and onnxruntime have no lookup-table (palettized) weight operator; "
                   "int8 is the nearest precision at or above 6 bits"),
    "mixed": ("w8", "mixed:<dB> picks bits per layer from measured sensitivity, and onnxruntime's "
                    "quantizers take one setting per model; int8 on every MatMul/Gemm is applied instead"),
}


def quantize(path: str | Path, scheme, calibration: list[dict] | None = None) -> dict:
    """Quantize the model at `path` in place with onnxruntime's tools; return what was applied.

    fp16 -> float16 conversion (inputs and outputs stay float32); w8 -> dynamic int8 on
    MatMul/Gemm, per channel; w4gN -> MatMulNBits (4 bits, block N, symmetric); ternary ->
    MatMulNBits with 2 bits (the nearest ONNX grid to {-1, 0, +1}); w8a8 -> static QDQ int8 on
    MatMul/Gemm/Conv with activation scales from `calibration` feeds; pal4/pal6/mixed fall back
    as FALLBACKS says, with the reason recorded."""
    import onnx

    path = Path(path)
    fp32_bytes, elements = weight_stats(path)
    applied, reason = scheme.name, None
    if scheme.kind in ("palette", "mixed"):
        applied, reason = FALLBACKS["mixed" if scheme.kind == "mixed" else scheme.name]
    big = bool(external_data_files(path))
    tmp = path.with_name(path.stem + ".quant.onnx")
    # the quantizers re-run shape inference, which rejects some shapes the dynamo exporter recorded
    # (DiT: "Inferred shape and existing shape differ"); they are annotations only, so drop them
    model = onnx.load(str(path))
    if model.graph.value_info:
        del model.graph.value_info[:]
        onnx.save(model, str(path), save_as_external_data=big)
    del model
    if applied == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
        onnx.save(model, str(tmp), save_as_external_data=big)
    elif applied == "w8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(path), str(tmp), op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
                         weight_type=QuantType.QInt8, use_external_data_format=big)
    elif applied.startswith("w4g") or applied == "ternary":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        if applied == "ternary":
            applied, reason = "w2g64", ("onnxruntime has no ternary weight type; MatMulNBits with 2 bits "
                                        "(symmetric grid {-2, -1, 0, 1} x scale, block 64) is the nearest")
        bits, block = int(applied[1]), int(applied[3:])
        q = MatMulNBitsQuantizer(onnx.load(str(path)), bits=bits, block_size=block, is_symmetric=True)
        q.process()
        q.model.save_model_to_file(str(tmp), use_external_data_format=big)
    elif applied == "w8a8":
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

        if not calibration:
            raise ValueError("w8a8 needs calibration inputs")

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.feeds = iter(calibration)

            def get_next(self):
                return next(self.feeds, None)

        quantize_static(str(path), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        op_types_to_quantize=["MatMul", "Gemm", "Conv"], use_external_data_format=big)
    else:
        raise ValueError(f"no ONNX mapping for scheme {scheme.name!r}")
    os.replace(tmp, path)
    q_bytes, left_fp32 = weight_stats(path)
    return {"scheme": scheme.name, "applied": applied, "fallback_reason": reason,
            "bits_per_weight": round(8 * q_bytes / max(elements, 1), 3),
            # onnxruntime's weight quantizers touch MatMul/Gemm (and Conv for w8a8) only
            "quantized_weight_fraction": round(1 - left_fp32 / max(elements, 1), 4),
            "weight_bytes": q_bytes, "fp32_weight_bytes": fp32_bytes}
