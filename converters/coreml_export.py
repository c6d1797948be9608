"""Core ML export: ML Program packages, the Swift package's names and layout, compression, chunking.

Apple's Swift `StableDiffusion` package (apple/ml-stable-diffusion) loads a
`Resources/` folder: TextEncoder (one input of float token ids [1, 77], output
`last_hidden_state`), Unet (`sample` [2, 4, h, w], `timestep` [2],
`encoder_hidden_states` [2, C, 1, 77], one output) or UnetChunk1 + UnetChunk2
(the second gets the first's outputs merged with the original inputs),
VAEDecoder (one input of latents already divided by 0.18215, one output image
in [-1, 1]), vocab.json and merges.txt. The app compiles each `.mlpackage` to
`.mlmodelc` (Xcode does this when the packages are added to a target, or
`xcrun coremlcompiler compile X.mlpackage OUTDIR`); compiling needs macOS.
"""

from __future__ import annotations

import copy
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from edgegen.core.errors import MissingDependencyError
from edgegen.core.quiet import log_records_hidden, verbose, warnings_hidden

from .capture import Captured, _wrap
from .lower import TORCH_LEAFSPEC_COPY

MIN_IOS = (16, 17, 18)
# The Swift package's file name and tensor names for each SD component.
SWIFT_NAMES = {"text_encoder": "TextEncoder", "unet": "Unet", "vae_decoder": "VAEDecoder"}


def import_coremltools():
    try:
        # on Linux: no native library (predictions need macOS), and untested torch and scikit-learn versions
        with log_records_hidden("coremltools", "Failed to load _ML", "Torch version", "scikit-learn version"):
            import coremltools as ct
    except ImportError as exc:
        raise MissingDependencyError("--target coreml needs coremltools: `pip install -c requirements/"
                                     "constraints.txt 'edgegen[coreml]'` (coremltools==9.0).") from exc
    from coremltools.converters.mil.frontend.torch import ops
    from coremltools.converters.mil.frontend.torch.torch_op_registry import _TORCH_OPS_REGISTRY, register_torch_op

    if "alias" not in _TORCH_OPS_REGISTRY:
        # torch.export emits aten.alias (CLIP's position-id buffer slice); coremltools 9 knows
        # alias_copy but not alias. Both are the identity on values.
        def alias(context, node):
            ops.noop(context, node)

        register_torch_op(alias)
    return ct


def swift_component(name: str, cap: Captured) -> Captured:
    """The component with the Swift package's inputs, outputs and layouts around the same module."""
    import torch

    if name == "text_encoder":
        wrapper = _wrap(lambda m, ids: m(ids.to(torch.int32)))
        ids = cap.inputs["input_ids"][-1:].astype(np.float32)        # one prompt per call, float ids
        return Captured(cap.family, wrapper(cap.module).eval(), {"input_ids": ids}, ["last_hidden_state"])
    if name == "unet":
        wrapper = _wrap(lambda m, x, t, e: m(x, t, e.squeeze(2).transpose(1, 2)))
        emb = cap.inputs["encoder_hidden_states"]
        inputs = {"sample": cap.inputs["sample"], "timestep": cap.inputs["timestep"],
                  "encoder_hidden_states": np.ascontiguousarray(emb.transpose(0, 2, 1)[:, :, None, :])}
        return Captured(cap.family, wrapper(cap.module).eval(), inputs, ["noise_pred"])
    if name == "vae_decoder":
        wrapper = _wrap(lambda m, z: m(z))
        return Captured(cap.family, wrapper(cap.module).eval(), {"z": cap.inputs["latent_sample"]}, ["image"])
    return cap


class SplitEinsumAttention:
    """A diffusers attention processor in the layout the Apple Neural Engine prefers: activations
    as (batch, channels, 1, sequence) and one einsum pair per head, so no 4-D reshape or
    transpose of the heads is needed (the "split einsum" layout of Apple's converter)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        import torch

        if attention_mask is not None or attn.spatial_norm is not None or attn.group_norm is not None:
            raise NotImplementedError("split-einsum attention covers unmasked transformer attention only")
        residual = hidden_states
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        # (B, S, C) -> (B, C, 1, S)
        q = attn.to_q(hidden_states).transpose(1, 2).unsqueeze(2)
        k = attn.to_k(context).transpose(1, 2).unsqueeze(2)
        v = attn.to_v(context).transpose(1, 2).unsqueeze(2)
        d = q.shape[1] // attn.heads
        heads = []
        for h in range(attn.heads):
            qh, kh, vh = (t[:, h * d:(h + 1) * d] for t in (q, k, v))
            weights = torch.einsum("bchq,bchk->bkhq", qh, kh) * attn.scale
            weights = weights.softmax(dim=1)
            heads.append(torch.einsum("bkhq,bchk->bchq", weights, vh))
        out = torch.cat(heads, dim=1).squeeze(2).transpose(1, 2)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def with_split_einsum(cap: Captured) -> tuple[Captured, int]:
    """A copy of the component whose transformer attentions use SplitEinsumAttention; returns
    (copy, number of attention layers rewritten)."""
    from diffusers.models.attention_processor import Attention

    module = copy.deepcopy(cap.module)
    layers = [m for m in module.modules() if isinstance(m, Attention) and m.group_norm is None
              and m.spatial_norm is None]
    for m in layers:
        m.set_processor(SplitEinsumAttention())
    return Captured(cap.family, module, cap.inputs, cap.outputs), len(layers)


def convert(cap: Captured, minimum_ios: int = 16, fp16: bool = True):
    """torch.export the component and convert it to an ML Program (an in-memory MLModel)."""
    import torch

    ct = import_coremltools()
    check_options(None, minimum_ios)
    args = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in cap.inputs.values())
    with torch.no_grad(), warnings_hidden(TORCH_LEAFSPEC_COPY):
        program = torch.export.export(cap.module, args).run_decompositions({})
    # coremltools draws a bar per pass pipeline; it stores int64 constants as int32 (ML programs have no
    # int64), and folding the cast of CLIP's causal mask (float32's minimum) to float16 overflows to -inf, as meant
    with _bars_off(), warnings_hidden((RuntimeWarning, "overflow encountered in cast")), log_records_hidden(
            "coremltools", "Saving value type of int64 into a builtin type of int32"):
        return ct.convert(
            program, convert_to="mlprogram",
            inputs=[ct.TensorType(name=n, shape=a.shape, dtype=a.dtype) for n, a in cap.inputs.items()],
            outputs=[ct.TensorType(name=n, dtype=np.float32) for n in cap.outputs],
            minimum_deployment_target=getattr(ct.target, f"iOS{minimum_ios}"),
            compute_precision=ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32)


@contextmanager
def _bars_off():
    """coremltools' progress bars (one per pass pipeline, one over the torch ops) off during a
    conversion: it has no option for them, so its modules' tqdm is swapped for a disabled one."""
    from functools import partial

    from coremltools.converters.mil.frontend.torch import ops
    from coremltools.converters.mil.mil.passes import pass_pipeline

    saved = [(m, name, getattr(m, name)) for m, name in ((ops, "_tqdm"), (pass_pipeline, "tqdm"))
             if hasattr(m, name) and not verbose()]
    for module, name, bar in saved:
        setattr(module, name, partial(bar, disable=True))
    try:
        yield
    finally:
        for module, name, bar in saved:
            setattr(module, name, bar)


def check_options(scheme, minimum_ios: int) -> None:
    """Refuse, before any work, what the deployment target cannot hold."""
    if minimum_ios not in MIN_IOS:
        raise ValueError(f"minimum iOS must be one of {MIN_IOS}, got {minimum_ios}")
    if scheme is not None and scheme.kind == "linear" and scheme.group and minimum_ios < 18:
        raise ValueError(f"{scheme.name} uses Core ML's per-block int4, which needs iOS 18: pass --min-ios 18 "
                         f"(or choose pal4, which iOS 16 runs)")


def compress(model, scheme, minimum_ios: int):
    """Map a quantization scheme onto coremltools.optimize.coreml; returns (model, applied, reason)."""
    from coremltools.optimize import coreml as cto

    if scheme.kind == "float16":
        return model, "fp16", None
    applied, reason = scheme.name, None
    if scheme.kind == "mixed":
        applied, reason = "pal6", ("mixed:<dB> picks bits per layer from measured sensitivity, which needs "
                                   "predictions of the converted model; on Linux 6-bit palettization is applied")
    elif scheme.activations:
        applied, reason = "w8", ("Core ML activation quantization calibrates with Core ML predictions, which "
                                 "need macOS; weights-only int8 is applied")
    if applied == "w8":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
        return cto.linear_quantize_weights(model, _weights_of_layers(op)), applied, reason
    if applied.startswith("w4g"):
        check_options(scheme, minimum_ios)
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block",
                                         block_size=int(applied[3:]))
        return cto.linear_quantize_weights(model, _weights_of_layers(op)), applied, reason
    nbits = {"pal4": 4, "pal6": 6, "ternary": 2}[applied]
    if applied == "ternary":
        reason = "Core ML has no ternary type; a 2-bit k-means lookup table (4 entries) holds {-s, 0, +s}"
    if minimum_ios >= 18:
        op = cto.OpPalettizerConfig(mode="kmeans", nbits=nbits, granularity="per_grouped_channel", group_size=16)
    else:
        op = cto.OpPalettizerConfig(mode="kmeans", nbits=nbits, granularity="per_tensor")
        reason = (reason + "; " if reason else "") + ("one lookup table per weight tensor: per-channel-group "
                                                      "tables need iOS 18 (--min-ios 18)")
    return cto.palettize_weights(model, _weights_of_layers(op)), applied, reason


def _weights_of_layers(op):
    """Compress the weights of convolutions and linear layers; embeddings, norms and constants
    such as attention masks stay float16."""
    from coremltools.optimize import coreml as cto

    return cto.OptimizationConfig(op_type_configs={"conv": op, "linear": op, "matmul": op})


def float_weight_elements(model) -> int:
    """Elements of the float constants (the weights) in a converted, uncompressed model."""
    total = 0
    for fn in model._mil_program.functions.values():
        for op in fn.operations:
            val = op.outputs[0].val if op.op_type == "const" else None
            if isinstance(val, np.ndarray) and val.dtype.kind == "f":
                total += val.size
    return total


def bisect(package: Path, first: Path, second: Path) -> None:
    """Cut a package in two of about equal weight size (coremltools' bisect_model)."""
    ct = import_coremltools()
    tmp = package.parent / f".{package.stem}-chunks"
    ct.models.utils.bisect_model(str(package), str(tmp), merge_chunks_to_pipeline=False,
                                 check_output_correctness=False)
    shutil.move(str(tmp / f"{package.stem}_chunk1.mlpackage"), str(first))
    shutil.move(str(tmp / f"{package.stem}_chunk2.mlpackage"), str(second))
    shutil.rmtree(tmp)
    shutil.rmtree(package)


def package_files(package: Path, root: Path) -> dict[str, str]:
    """The files of an .mlpackage, keyed for the manifest: `model` is the package's Manifest.json."""
    files = {"model": (package / "Manifest.json").relative_to(root).as_posix()}
    for i, p in enumerate(sorted(q for q in package.rglob("*") if q.is_file() and q.name != "Manifest.json")):
        files[f"package_{i}"] = p.relative_to(root).as_posix()
    return files


def weight_bytes(package: Path) -> int:
    return sum(p.stat().st_size for p in package.rglob("weight*.bin"))


def op_counts(package: Path) -> dict[str, int]:
    """How many of each MIL operation the package's main function holds."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(package))
    counts: dict[str, int] = {}

    def walk(block):
        for op in block.operations:
            counts[op.type] = counts.get(op.type, 0) + 1
            for inner in op.blocks:
                walk(inner)

    for fn in spec.mlProgram.functions.values():
        for block in fn.block_specializations.values():
            walk(block)
    return counts
