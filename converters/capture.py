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

    def release(self) -> None:
        """Drop the torch module once its component is built, so the build holds one component's
        torch weights at a time (an SD 1.5 UNet is 3.4 GB in float32); the wrapper's other
        references are the plan's, which this clears."""
        import gc

        self.module = None
        gc.collect()


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


def clip_text_encoder_penultimate(model, input_ids: np.ndarray) -> Captured:
    """SDXL's text encoders: the penultimate layer's hidden states, and with a projection
    (CLIPTextModelWithProjection) the pooled, projected text embeddings too."""
    projected = hasattr(model, "text_projection")

    def run(m, ids):
        out = m(ids, output_hidden_states=True, return_dict=True)
        return (out.hidden_states[-2], out.text_embeds) if projected else out.hidden_states[-2]

    return Captured(type(model).__name__, _wrap(run)(model).eval(), {"input_ids": input_ids.astype(np.int32)},
                    ["hidden_states", "text_embeds"] if projected else ["hidden_states"])


def unet2d_condition_xl(model, sample: np.ndarray, timestep: np.ndarray, embeddings: np.ndarray,
                        text_embeds: np.ndarray, time_ids: np.ndarray) -> Captured:
    """SDXL's UNet: the added conditions (pooled text embeddings, size and crop time ids) as inputs."""
    wrapper = _wrap(lambda m, x, t, e, te, ti: m(x, t, encoder_hidden_states=e, return_dict=False,
                                                  added_cond_kwargs={"text_embeds": te, "time_ids": ti})[0])
    inputs = {"sample": sample, "timestep": timestep, "encoder_hidden_states": embeddings, "text_embeds": text_embeds,
              "time_ids": time_ids}
    return Captured(type(model).__name__, wrapper(model).eval(), {k: v.astype(np.float32) for k, v in inputs.items()},
                    ["out_sample"])


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


def _check_held(captured: Captured) -> None:
    if captured.module is None:
        raise RuntimeError(f"the {captured.family} module was released after its component was built "
                           f"(Captured.release); capture it again to use it.")


def run_torch(captured: Captured) -> dict[str, np.ndarray]:
    """The reference outputs: the captured module run eagerly in fp32 torch."""
    import torch

    _check_held(captured)

    with torch.no_grad():
        out = captured.module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in captured.inputs.values()))
    outs = out if isinstance(out, (tuple, list)) else [out]
    return {n: o.detach().numpy() for n, o in zip(captured.outputs, outs)}


def export(captured: Captured):
    """torch.export the wrapper on its example inputs."""
    import torch

    _check_held(captured)

    args = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in captured.inputs.values())
    with torch.no_grad():
        return torch.export.export(captured.module, args)


def dit_transformer(model, sample: np.ndarray, timestep: np.ndarray, class_labels: np.ndarray) -> Captured:
    wrapper = _wrap(lambda m, x, t, y: m(x, timestep=t, class_labels=y, return_dict=False)[0])
    return Captured(type(model).__name__, wrapper(model).eval(),
                    {"sample": sample.astype(np.float32), "timestep": timestep.astype(np.float32),
                     "class_labels": class_labels.astype(np.int32)}, ["noise_pred"])
