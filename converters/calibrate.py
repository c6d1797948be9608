"""Calibration inputs from real runs of the source pipeline (prompts or labels x seeds x timesteps).

Each family's runs use the torch reference sampler: `calibration()` records what each
component is called with, in the component's captured form (batch with guidance,
dtypes), at a few timesteps spread over each run; w8a8 takes its activation ranges
from these and `mixed:<dB>` its layer sensitivities. `end_output(component, replaced)`
samples again with some of a component's weights replaced by their quantized values:
the end-output PSNR that `mixed:<dB>` must meet.
"""

from __future__ import annotations

import contextlib

import numpy as np

PROMPTS = ("a photo of an astronaut riding a horse on the moon",
           "a watercolor painting of a lighthouse at dusk",
           "a close-up photo of a red fox in the snow",
           "an isometric drawing of a small city with trees")
STEPS = 10            # sampling steps of each calibration run
KEEP_STEPS = 3        # denoiser calls kept per run, spread over the trajectory


def _kept(steps: int, keep: int) -> set:
    return {int(i) for i in np.linspace(0, steps - 1, keep).round()}


def _record_calls(module, keep: set, into: list, to_inputs) -> object:
    """A forward pre-hook that stores to_inputs(args, kwargs) for the calls numbered in `keep`."""
    count = [0]

    def hook(_module, args, kwargs):
        if count[0] in keep:
            into.append(to_inputs(args, kwargs))
        count[0] += 1

    return module.register_forward_pre_hook(hook, with_kwargs=True)


@contextlib.contextmanager
def swapped(module, replaced: dict[str, np.ndarray] | None):
    """`module` with some parameters (by name) replaced for the duration; restored afterwards."""
    import torch

    params = dict(module.named_parameters())
    saved = {n: params[n].detach().clone() for n in (replaced or {})}
    try:
        with torch.no_grad():
            for n, value in (replaced or {}).items():
                params[n].copy_(torch.from_numpy(np.asarray(value, np.float32)).to(params[n].dtype))
        yield module
    finally:
        with torch.no_grad():
            for n, value in saved.items():
                params[n].copy_(value)


def to_image(x: np.ndarray) -> np.ndarray:
    """Samples in [-1, 1] as images in [0, 1] (what final-output PSNR is measured on)."""
    return np.clip(np.asarray(x) / 2 + 0.5, 0, 1)


class StableDiffusionRuns:
    """Real runs of a Stable Diffusion folder in torch: calibration inputs for every component, and
    the final images with some of a component's weights replaced (a layer's end-output sensitivity)."""

    def __init__(self, model_dir, height: int, width: int, prompts: int = 2, seeds: int = 1,
                 guidance_scale: float = 7.5):
        self.model_dir, self.height, self.width = model_dir, height, width
        self.prompts, self.seeds, self.guidance_scale = PROMPTS[:prompts], seeds, guidance_scale
        self._pipe = None
        self._float32: dict[bool, np.ndarray] = {}   # end_output with nothing replaced, by `quick`

    def _pipeline(self):
        if self._pipe is None:
            from .reference import sd_pipeline

            self._pipe = sd_pipeline(self.model_dir)
        return self._pipe

    def _sample(self, prompt: str, seed: int, output_type: str):
        import torch

        pipe, device = self._pipeline()
        with torch.no_grad():
            return pipe(prompt, num_inference_steps=STEPS, guidance_scale=self.guidance_scale, height=self.height,
                        width=self.width, output_type=output_type,
                        generator=torch.Generator(device).manual_seed(seed)).images

    def calibration(self) -> dict[str, list[dict]]:
        """Inputs of text_encoder, unet and vae_decoder from prompts x seeds runs."""
        import torch

        pipe, _ = self._pipeline()
        out: dict[str, list[dict]] = {"text_encoder": [], "unet": [], "vae_decoder": []}

        def numpy(x):
            return x.detach().cpu().numpy()

        def unet_inputs(args, kwargs):
            sample = numpy(args[0]).astype(np.float32)
            t = np.broadcast_to(numpy(torch.as_tensor(args[1])).astype(np.float32), (sample.shape[0],)).copy()
            return {"sample": sample, "timestep": t, "encoder_hidden_states": numpy(kwargs["encoder_hidden_states"])}

        for prompt in self.prompts:
            ids = pipe.tokenizer(["", prompt], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                                 truncation=True, return_tensors="np").input_ids
            out["text_encoder"].append({"input_ids": ids.astype(np.int32)})
            for seed in range(self.seeds):
                handle = _record_calls(pipe.unet, _kept(STEPS, KEEP_STEPS), out["unet"], unet_inputs)
                try:
                    latents = self._sample(prompt, seed, "latent")
                finally:
                    handle.remove()
                z = numpy(latents) / pipe.vae.config.scaling_factor
                out["vae_decoder"].append({"latent_sample": z.astype(np.float32)})
        return out

    def end_output(self, component: str, replaced: dict[str, np.ndarray] | None = None,
                   quick: bool = False) -> np.ndarray:
        """Final images in [0, 1] of every calibration run (`quick`: the first one), with `replaced`
        parameters in `component`."""
        if not replaced and quick in self._float32:   # the float32 reference is the same for every component
            return self._float32[quick]
        pipe, _ = self._pipeline()
        module = {"text_encoder": pipe.text_encoder, "unet": pipe.unet, "vae_decoder": pipe.vae}[component]
        runs = [(p, s) for p in self.prompts for s in range(self.seeds)][:1 if quick else None]
        with swapped(module, replaced):
            out = np.concatenate([self._sample(p, s, "np") for p, s in runs])
        if not replaced:
            self._float32[quick] = out
        return out


class DiTRuns:
    """Real runs of a class-conditional DiT in torch: calibration inputs (every class in turn, a few
    seeds) and final samples with some weights replaced."""

    def __init__(self, model, scheduler_config: dict, batch: int, steps: int, guidance_scale: float,
                 seeds: int = 3):
        self.model, self.scheduler_config, self.batch = model, scheduler_config, batch
        self.steps, self.guidance_scale, self.seeds = steps, guidance_scale, seeds

    def _run(self, seed: int, callback=None):
        from .reference import dit_sample

        cfg = self.model.config
        labels = (np.arange(self.batch) + seed * self.batch) % cfg.num_embeds_ada_norm
        noise = np.random.default_rng(1000 + seed).standard_normal(
            (self.batch, cfg.in_channels, cfg.sample_size, cfg.sample_size), dtype=np.float32)
        return dit_sample(self.model, self.scheduler_config, labels, noise, self.steps, self.guidance_scale)

    def calibration(self) -> dict[str, list[dict]]:
        calls: list[dict] = []

        def inputs(args, kwargs):
            return {"sample": args[0].detach().numpy().astype(np.float32),
                    "timestep": kwargs["timestep"].detach().numpy().astype(np.float32),
                    "class_labels": kwargs["class_labels"].detach().numpy().astype(np.int32)}

        for seed in range(self.seeds):
            handle = _record_calls(self.model, _kept(self.steps, KEEP_STEPS), calls, inputs)
            try:
                self._run(seed)
            finally:
                handle.remove()
        return {"transformer": calls}

    def end_output(self, component: str, replaced: dict[str, np.ndarray] | None = None,
                   quick: bool = False) -> np.ndarray:
        """Final samples in [0, 1] of every seed (`quick`: the first), with `replaced` parameters."""
        with swapped(self.model, replaced):
            return np.concatenate([to_image(self._run(seed)) for seed in range(1 if quick else self.seeds)])
