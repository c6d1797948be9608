"""Reference samplers in torch + diffusers: the baseline artifacts are compared with, and the
real runs that calibration data comes from.

`dit_sample` follows diffusers' DiTPipeline loop (classifier-free guidance with the
batch [conditional, null-class], guidance on the first `in_channels` channels,
the scheduler stepping both halves), in pixel space: it has no VAE.
"""

from __future__ import annotations

import numpy as np

SCHEDULER_CLASSES = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler", "lcm": "LCMScheduler",
                     "euler_a": "EulerAncestralDiscreteScheduler", "dpm": "DPMSolverMultistepScheduler"}


def make_torch_scheduler(config: dict, override: str | None = None):
    import diffusers

    name = SCHEDULER_CLASSES[override] if override else config["_class_name"]
    return getattr(diffusers, name).from_config(config)


def dit_sample(transformer, scheduler_config: dict, labels, noise: np.ndarray, steps: int,
               guidance_scale: float, scheduler: str | None = None, callback=None) -> np.ndarray:
    """Denoise `noise` [N, C, H, W] for class `labels` [N]; returns samples in [-1, 1] space."""
    import torch

    sched = make_torch_scheduler(scheduler_config, scheduler)
    sched.set_timesteps(steps)
    c = transformer.config.in_channels
    null = transformer.config.num_embeds_ada_norm
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    n = len(labels)
    y = torch.cat([labels, torch.full((n,), null, dtype=torch.int64)])
    x = torch.from_numpy(np.asarray(noise, np.float32)) * sched.init_noise_sigma
    x = torch.cat([x, x])
    with torch.no_grad():
        for i, t in enumerate(sched.timesteps):
            half = x[:n]
            inp = sched.scale_model_input(torch.cat([half, half]), t)
            out = transformer(inp, timestep=t.expand(2 * n).float(), class_labels=y).sample
            eps = out[:, :c]
            cond, uncond = eps[:n], eps[n:]
            guided = uncond + guidance_scale * (cond - uncond) if guidance_scale > 1 else cond
            x = sched.step(torch.cat([guided, guided]), t, x).prev_sample
            if callback is not None:
                callback(i, t, x[:n].numpy())
    return x[:n].numpy()


def sd_pipeline(model_dir, scheduler: str | None = None, vae_dir=None):
    """diffusers' pipeline for a local Stable Diffusion (or SDXL) folder, float32, on CUDA when there is
    one; returns (pipeline, device). `vae_dir`: a saved VAE (AutoencoderTiny/KL) in place of the folder's."""
    import json
    from pathlib import Path

    import diffusers
    import torch
    from diffusers import StableDiffusionPipeline

    from edgegen.core.quiet import log_records_hidden

    from .source import loading_bars_off, tiny_vae_config_note_hidden

    device = "cuda" if torch.cuda.is_available() else "cpu"
    # a swapped-in VAE is the point of the artifact: diffusers' note that the pipeline class expected
    # another VAE class is not news
    with loading_bars_off(), tiny_vae_config_note_hidden(), log_records_hidden(
            "diffusers.pipelines.pipeline_utils", "Expected types for vae"):
        swap = {}
        if vae_dir is not None:
            cls = json.loads((Path(vae_dir) / "config.json").read_text())["_class_name"]
            swap["vae"] = getattr(diffusers, cls).from_pretrained(vae_dir, torch_dtype=torch.float32,
                                                                   local_files_only=True, low_cpu_mem_usage=False)
        cls = json.loads((Path(model_dir) / "model_index.json").read_text()).get("_class_name")
        if cls == "StableDiffusionXLPipeline":
            pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(
                model_dir, torch_dtype=torch.float32, local_files_only=True, low_cpu_mem_usage=False, **swap)
        else:
            pipe = StableDiffusionPipeline.from_pretrained(
                model_dir, torch_dtype=torch.float32, local_files_only=True, safety_checker=None,
                requires_safety_checker=False, low_cpu_mem_usage=False, **swap)
    pipe.set_progress_bar_config(disable=True)
    if scheduler is not None:
        pipe.scheduler = make_torch_scheduler(pipe.scheduler.config, scheduler)
    return pipe.to(device), device
