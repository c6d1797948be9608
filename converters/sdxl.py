"""Family plan: StableDiffusionXLPipeline (two CLIP text encoders, UNet2DCondition with SDXL's added
conditions, AutoencoderKL or AutoencoderTiny). No refiner.

The UNet takes the two encoders' penultimate hidden states concatenated, the second encoder's
pooled projection (text_embeds) and the six size-and-crop time_ids (original size, crop top-left,
target size) that runtimes/stable_diffusion_xl.py computes from the artifact's height and width.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import capture, source
from .plan import Plan
from .sd import (CALIBRATION_PROMPT, DISTILLED_SCHEDULERS, _image_size, _load_vae, _write_tokenizer,
                 guidance_mode, vae_tiling)

PIPELINE_CLASSES = ("StableDiffusionXLPipeline",)
KIND = "stable-diffusion-xl"
REQUIRED = {
    "unet": ("UNet2DConditionModel", "config.json"),
    "vae": ("AutoencoderKL or AutoencoderTiny", "config.json"),
    "text_encoder": ("CLIPTextModel", "config.json"),
    "text_encoder_2": ("CLIPTextModelWithProjection", "config.json"),
    "tokenizer": ("CLIPTokenizer", "vocab.json"),
    "tokenizer_2": ("CLIPTokenizer", "vocab.json"),
    "scheduler": ("a scheduler config", "scheduler_config.json"),
}


def plan(root: Path, index: dict, height: int | None = None, width: int | None = None,
         batch: int | None = None, guidance: str | None = None, vae: str | Path | None = None,
         vae_tile: int | None = None) -> Plan:
    """vae_tile: decode in tiles of this many latent pixels (converters/sd.py vae_tiling)."""
    import json

    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    if batch not in (None, 1):
        raise ValueError("SDXL artifacts are built for one image per call.")
    source.require_components(root, index, REQUIRED)
    kw = {"local_files_only": True, "low_cpu_mem_usage": False}
    unet = source.load_component(root, index, "unet", "UNet2DConditionModel",
                                 lambda p: UNet2DConditionModel.from_pretrained(p, **kw))
    vae_dir = vae
    vae = _load_vae(root, index, vae_dir)
    encoders = [source.load_component(root, index, "text_encoder", "CLIPTextModel",
                                      lambda p: CLIPTextModel.from_pretrained(p, local_files_only=True)),
                source.load_component(root, index, "text_encoder_2", "CLIPTextModelWithProjection",
                                      lambda p: CLIPTextModelWithProjection.from_pretrained(p, local_files_only=True))]
    toks = [source.load_component(root, index, name, "CLIPTokenizer",
                                  lambda p: CLIPTokenizer.from_pretrained(p, local_files_only=True))
            for name in ("tokenizer", "tokenizer_2")]
    factor, height, width = _image_size(unet, vae, height, width)

    scheduler_config = source.read_scheduler_config(root)
    mode = guidance_mode(scheduler_config, guidance)
    prompts = ["", CALIBRATION_PROMPT] if mode == "cfg" else [CALIBRATION_PROMPT]
    ids = [t(prompts, padding="max_length", max_length=t.model_max_length, truncation=True,
             return_tensors="np").input_ids for t in toks]
    with torch.no_grad():
        outs = [e(torch.from_numpy(i.astype(np.int64)), output_hidden_states=True) for e, i in zip(encoders, ids)]
    emb = np.concatenate([o.hidden_states[-2].numpy() for o in outs], axis=-1)
    pooled = outs[1].text_embeds.numpy()
    time_ids = np.tile(np.array([height, width, 0, 0, height, width], np.float32), (len(prompts), 1))
    rng = np.random.default_rng(0)
    latent = (1, unet.config.in_channels, height // factor, width // factor)
    decoded, tiling = vae_tiling(vae_tile, latent, factor)
    x = rng.standard_normal((len(prompts), *latent[1:]), dtype=np.float32)
    components = {
        "text_encoder": capture.clip_text_encoder_penultimate(encoders[0], ids[0]),
        "text_encoder_2": capture.clip_text_encoder_penultimate(encoders[1], ids[1]),
        "unet": capture.unet2d_condition_xl(unet, x, np.full(len(prompts), 500.0, np.float32), emb, pooled,
                                            time_ids),
        "vae_decoder": capture.vae_decoder(vae, rng.standard_normal(decoded, dtype=np.float32)),
    }
    for name, enc in zip(("text_encoder", "text_encoder_2"), encoders):
        components[name].ranges["input_ids"] = (0, enc.config.vocab_size - 1)
    force_zeros = bool(json.loads((root / "model_index.json").read_text()).get("force_zeros_for_empty_prompt", True))
    pipeline = {"kind": KIND, "height": height, "width": width, "latent_shape": list(latent),
                "vae_scaling_factor": float(vae.config.scaling_factor), "guidance": mode,
                "force_zeros_for_empty_prompt": force_zeros,
                "vae": {"class": type(vae).__name__, **({"source": str(Path(vae_dir).absolute())} if vae_dir else {})},
                **({"vae_tiling": tiling} if tiling else {})}
    if mode == "none":
        steps = DISTILLED_SCHEDULERS.get(scheduler_config.get("_class_name"))
        pipeline["sampling"] = {"guidance_scale": 1.0, **({"steps": steps} if steps else {})}
    return Plan(components=components, pipeline=pipeline, scheduler_config=scheduler_config,
                write_extra=lambda writer: {"tokenizer": _write_tokenizer(writer, toks[0]),
                                            "tokenizer_2": _write_tokenizer(writer, toks[1], "tokenizer_2")})
