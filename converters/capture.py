"""Capture wrappers, one per model family: a torch module with plain tensor inputs
and outputs, example inputs, and the output names, ready for `torch.export`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Captured:
    family: str
    module: object                 # torch.nn.Module whose forward takes `inputs` in order
    inputs: dict[str, np.ndarray]  # example inputs, which also fix the static shapes
    outputs: list[str]
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)   # integer inputs that index a table


def _wrap(fn):
    import torch

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *args):
            return fn(self.inner, *args)

    return Wrapper


def clip_text_encoder(model, input_ids: np.ndarray) -> Captured:
    wrapper = _wrap(lambda m, ids: m(ids, return_dict=False)[0])
    return Captured(type(model).__name__, wrapper(model).eval(),
                    {"input_ids": input_ids.astype(np.int32)}, ["last_hidden_state"])


def unet2d_condition(model, sample: np.ndarray, timestep: np.ndarray, embeddings: np.ndarray) -> Captured:
    wrapper = _wrap(lambda m, x, t, e: m(x, t, encoder_hidden_states=e, return_dict=False)[0])
    return Captured(type(model).__name__, wrapper(model).eval(),
                    {"sample": sample.astype(np.float32), "timestep": timestep.astype(np.float32),
                     "encoder_hidden_states": embeddings.astype(np.float32)}, ["out_sample"])


def vae_decoder(model, latents: np.ndarray) -> Captured:
    wrapper = _wrap(lambda m, z: m.decode(z, return_dict=False)[0])
    return Captured(type(model).__name__ + ".decoder", wrapper(model).eval(),
                    {"latent_sample": latents.astype(np.float32)}, ["sample"])


def vae_encoder(model, image: np.ndarray) -> Captured:
    """AutoencoderKL's encoder to its posterior's moments [N, 2C, h, w] (mean, then log-variance): the
    runtime samples the posterior itself, from the seed."""
    wrapper = _wrap(lambda m, x: m.encode(x, return_dict=False)[0].parameters)
    return Captured(type(model).__name__ + ".encoder", wrapper(model).eval(), {"sample": image.astype(np.float32)},
                    ["moments"])


def run_torch(captured: Captured) -> dict[str, np.ndarray]:
    """The reference outputs: the captured module run eagerly in fp32 torch."""
    import torch

    with torch.no_grad():
        out = captured.module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in captured.inputs.values()))
    outs = out if isinstance(out, (tuple, list)) else [out]
    return {n: o.detach().numpy() for n, o in zip(captured.outputs, outs)}


def export(captured: Captured):
    """torch.export the wrapper on its example inputs."""
    import torch

    args = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in captured.inputs.values())
    with torch.no_grad():
        return torch.export.export(captured.module, args)


def dit_transformer(model, sample: np.ndarray, timestep: np.ndarray, class_labels: np.ndarray) -> Captured:
    wrapper = _wrap(lambda m, x, t, y: m(x, timestep=t, class_labels=y, return_dict=False)[0])
    return Captured(type(model).__name__, wrapper(model).eval(),
                    {"sample": sample.astype(np.float32), "timestep": timestep.astype(np.float32),
                     "class_labels": class_labels.astype(np.int32)}, ["noise_pred"])
