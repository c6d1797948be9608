"""Family plan: Stable-Diffusion-shaped pipelines (CLIP text encoder, UNet2DCondition, AutoencoderKL or
AutoencoderTiny (TAESD) as the VAE, the folder's own or one swapped in at build time)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import calibrate, capture, source
from edgegen.core.errors import ModelError

from .plan import Plan

PIPELINE_CLASSES = ("StableDiffusionPipeline",)
KIND = "stable-diffusion"
OPTIMUM_TASK = "text-to-image"   # --target onnx exports the folder with optimum, in its layout
CALIBRATION_PROMPT = "a photo of an astronaut riding a horse on the moon"
REQUIRED = {
    "unet": ("UNet2DConditionModel", "config.json"),
    "vae": ("AutoencoderKL or AutoencoderTiny", "config.json"),
    "text_encoder": ("CLIPTextModel", "config.json"),
    "tokenizer": ("CLIPTokenizer", "vocab.json"),
    "scheduler": ("a scheduler config", "scheduler_config.json"),
}


def _write_tokenizer(writer, tok, folder: str = "tokenizer") -> dict:
    with open(writer.path(f"{folder}/vocab.json"), "w", encoding="utf-8") as f:
        json.dump(tok.encoder, f, ensure_ascii=False)
    with open(writer.path(f"{folder}/merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in sorted(tok.bpe_ranks, key=tok.bpe_ranks.get):
            f.write(f"{a} {b}\n")
    return {"vocab": f"{folder}/vocab.json", "merges": f"{folder}/merges.txt",
            "max_length": int(tok.model_max_length), "bos_token": str(tok.bos_token),
            "eos_token": str(tok.eos_token), "pad_token": str(tok.pad_token), "unk_token": str(tok.unk_token)}


GUIDANCE_MODES = ("cfg", "none")
DISTILLED_SCHEDULERS = {"LCMScheduler": 4}   # few-step samplers whose folders default to no CFG: class -> steps


def guidance_mode(scheduler_config: dict, guidance: str | None) -> str:
    """'cfg' (UNet at batch 2: unconditional and conditional) or 'none' (batch 1, for distilled models
    sampled at guidance <= 1); None takes the folder's default: 'none' for an LCM scheduler."""
    if guidance is None:
        return "none" if scheduler_config.get("_class_name") in DISTILLED_SCHEDULERS else "cfg"
    if guidance not in GUIDANCE_MODES:
        raise ValueError(f"guidance must be one of {GUIDANCE_MODES}, got {guidance!r}")
    return guidance


VAE_CLASSES = ("AutoencoderKL", "AutoencoderTiny")


def _load_vae(root: Path, index: dict, vae_dir: str | Path | None):
    """The folder's VAE, or the one in `vae_dir` (a saved AutoencoderKL/AutoencoderTiny) in its place."""
    with source.tiny_vae_config_note_hidden():
        return _load_vae_quietly(root, index, vae_dir)


def _load_vae_quietly(root: Path, index: dict, vae_dir: str | Path | None):
    import diffusers

    kw = {"local_files_only": True, "low_cpu_mem_usage": False}
    if vae_dir is None:
        cls = index["vae"][1]
        expected = cls if cls in VAE_CLASSES else VAE_CLASSES[0]
        return source.load_component(root, index, "vae", expected,
                                     lambda p: getattr(diffusers, expected).from_pretrained(p, **kw))
    vae_dir = Path(vae_dir)
    config = vae_dir / "config.json"
    if not config.is_file():
        raise ModelError(f"--vae {vae_dir}: no config.json there; pass a folder saved by diffusers' "
                         f"AutoencoderTiny or AutoencoderKL (save_pretrained).")
    cls = json.loads(config.read_text()).get("_class_name")
    if cls not in VAE_CLASSES:
        raise ModelError(f"--vae {vae_dir}: a {cls}; edgegen swaps in {' or '.join(VAE_CLASSES)}.")
    try:
        return getattr(diffusers, cls).from_pretrained(vae_dir, **kw).float().eval()
    except Exception as exc:  # diffusers raises many types for bad files
        raise ModelError(f"--vae {vae_dir}: could not be loaded: {exc}") from exc


def _latent_factor(vae) -> int:
    """Image pixels per latent pixel along each side."""
    if type(vae).__name__ == "AutoencoderTiny":
        return vae.config.upsampling_scaling_factor ** (len(vae.config.decoder_block_out_channels) - 1)
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _image_size(unet, vae, height: int | None, width: int | None) -> tuple[int, int, int]:
    """(pixels per latent pixel, height, width): the UNet's own size unless asked, checked against the
    downsampling the UNet needs."""
    factor = _latent_factor(vae)
    height = height or unet.config.sample_size * factor
    width = width or unet.config.sample_size * factor
    if height % (factor * 4) or width % (factor * 4):
        raise ValueError(f"height and width must be multiples of {factor * 4} for this model, got {height}x{width}")
    return factor, height, width


def vae_tiling(tile: int | None, latent: tuple, factor: int) -> tuple[tuple, dict | None]:
    """(the latent shape the VAE decoder is compiled for, the pipeline's `vae_tiling` entry or None).
    `tile` (latent pixels, --vae-tile): the decoder takes tile x tile latents and the runtimes decode
    in overlapping tiles (a quarter of the tile), blended (runtimes/vae_tiles.py)."""
    if tile is None:
        return latent, None
    h, w = latent[2:]
    if not 2 <= tile <= min(h, w) or tile == max(h, w):
        raise ValueError(f"--vae-tile {tile}: a tile must be 2..{min(h, w)} latent pixels and smaller than the "
                         f"{h}x{w} latent (the image is {h * factor}x{w * factor}); pick a smaller tile, or omit "
                         f"--vae-tile to decode whole latents.")
    entry = {"tile": [tile, tile], "overlap": max(1, tile // 4), "factor": factor,
             "reason": f"--vae-tile {tile}: the decoder's activations scale with its input; it is compiled for "
                       f"{tile}x{tile} latent tiles ({tile * factor}x{tile * factor} pixels), blended over their "
                       f"overlap"}
    return (latent[0], latent[1], tile, tile), entry


def plan(root: Path, index: dict, height: int | None = None, width: int | None = None,
         batch: int | None = None, guidance: str | None = None, img2img: bool = False,
         vae: str | Path | None = None, vae_tile: int | None = None) -> Plan:
    """img2img: also build the VAE encoder (component vae_encoder), for image-to-image runs.
    vae: a folder with an AutoencoderTiny (or AutoencoderKL) to build in place of the folder's VAE.
    vae_tile: decode in tiles of this many latent pixels (see vae_tiling)."""
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    if batch not in (None, 1):
        raise ValueError("Stable Diffusion artifacts are built for one image per call (batch 1 with guidance).")
    source.require_components(root, index, REQUIRED)
    kw = {"local_files_only": True, "low_cpu_mem_usage": False}
    unet = source.load_component(root, index, "unet", "UNet2DConditionModel",
                                 lambda p: UNet2DConditionModel.from_pretrained(p, **kw))
    vae_dir = vae
    vae = _load_vae(root, index, vae_dir)
    tiny_vae = type(vae).__name__ == "AutoencoderTiny"
    if img2img and tiny_vae:
        raise ModelError("--img2img with an AutoencoderTiny is not supported yet (its encoder gives latents, not a "
                         "posterior); build img2img with the folder's AutoencoderKL.")
    text_encoder = source.load_component(root, index, "text_encoder", "CLIPTextModel",
                                         lambda p: CLIPTextModel.from_pretrained(p, local_files_only=True))
    tok = source.load_component(root, index, "tokenizer", "CLIPTokenizer",
                                lambda p: CLIPTokenizer.from_pretrained(p, local_files_only=True))
    factor, height, width = _image_size(unet, vae, height, width)

    # realistic example inputs: a tokenized prompt, its embeddings, seeded latents of the artifact's shape
    scheduler_config = source.read_scheduler_config(root)
    mode = guidance_mode(scheduler_config, guidance)
    prompts = ["", CALIBRATION_PROMPT] if mode == "cfg" else [CALIBRATION_PROMPT]
    rng = np.random.default_rng(0)
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length,
              truncation=True, return_tensors="np").input_ids
    with torch.no_grad():
        emb = text_encoder(torch.from_numpy(ids.astype(np.int64)), return_dict=False)[0].numpy()
    latent = (1, unet.config.in_channels, height // factor, width // factor)
    decoded, tiling = vae_tiling(vae_tile, latent, factor)
    x = rng.standard_normal((len(prompts), *latent[1:]), dtype=np.float32)
    components = {
        "text_encoder": capture.clip_text_encoder(text_encoder, ids),
        "unet": capture.unet2d_condition(unet, x, np.full(len(prompts), 500.0, np.float32), emb),
        "vae_decoder": capture.vae_decoder(vae, rng.standard_normal(decoded, dtype=np.float32)),
    }
    if img2img:
        image = rng.uniform(-1, 1, (1, 3, height, width)).astype(np.float32)
        components["vae_encoder"] = capture.vae_encoder(vae, image)
    components["text_encoder"].ranges["input_ids"] = (0, text_encoder.config.vocab_size - 1)
    pipeline = {"kind": KIND, "height": height, "width": width, "latent_shape": list(latent),
                "vae_scaling_factor": float(vae.config.scaling_factor), "guidance": mode,
                "vae": {"class": type(vae).__name__, **({"source": str(Path(vae_dir).absolute())} if vae_dir else {})},
                **({"vae_tiling": tiling} if tiling else {})}
    if mode == "none":
        steps = DISTILLED_SCHEDULERS.get(scheduler_config.get("_class_name"))
        pipeline["sampling"] = {"guidance_scale": 1.0, **({"steps": steps} if steps else {})}
    runs = calibrate.StableDiffusionRuns(root, height, width)
    return Plan(components=components, pipeline=pipeline, scheduler_config=scheduler_config,
                write_extra=lambda writer: {"tokenizer": _write_tokenizer(writer, tok)},
                calibrate=runs.calibration, end_output=runs.end_output)
