"""A tiny Stable-Diffusion-shaped pipeline with random weights and an offline CLIP tokenizer.

No model hub is needed: the tokenizer's vocabulary is the byte-level alphabet
plus merges learned from a few words, and every module is built from a small
config with a fixed seed. The folder is written with `save_pretrained`, exactly
as a user's pipeline folder would be.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
_CORPUS = ("a photo of an astronaut riding a horse on the moon, a painting of a red fox in the "
           "snow, a cat sitting on a table, the city at night with lights and rain")


def _byte_alphabet() -> list[str]:
    """GPT-2/CLIP's reversible map from the 256 bytes to printable characters."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def make_clip_tokenizer_files(folder: str | Path, num_merges: int = 120) -> dict[str, int]:
    """Write vocab.json and merges.txt for a CLIP BPE tokenizer; return the vocabulary."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_alphabet()
    vocab_list = alphabet + [c + "</w>" for c in alphabet]
    words = [list(w[:-1]) + [w[-1] + "</w>"] for w in _CORPUS.replace(",", " ").split()]
    merges = []
    for _ in range(num_merges):
        pairs = Counter((w[i], w[i + 1]) for w in words for i in range(len(w) - 1))
        if not pairs:
            break
        (a, b), _count = pairs.most_common(1)[0]
        merges.append((a, b))
        vocab_list.append(a + b)
        for w in words:
            i = 0
            while i < len(w) - 1:
                if (w[i], w[i + 1]) == (a, b):
                    w[i:i + 2] = [a + b]
                i += 1
    vocab_list += [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return vocab


# Model sizes by name: "tiny" for tests; "sd14" has the real Stable Diffusion 1.4 configs
# (CLIP ViT-L/14 text encoder, the 860M-parameter UNet, the 84M VAE) for size, speed and
# estimate benchmarks; its weights are random, so it generates noise.
SHAPES = {
    "tiny": {
        "text": dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2),
        "unet": dict(layers_per_block=1, block_out_channels=(32, 64),
                     down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                     attention_head_dim=8, norm_num_groups=8),
        "vae": dict(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                    block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8),
        "sample_size": 16,
    },
    "sd14": {
        "text": dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                     hidden_act="quick_gelu", projection_dim=768),
        "unet": dict(layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
                     down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                     up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768,
                     attention_head_dim=8, norm_num_groups=32),
        "vae": dict(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                    block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32),
        "sample_size": 64,
    },
}


def make_tiny_taesd(path: str | Path, seed: int = 0, downscale: int = 2):
    """Write a tiny AutoencoderTiny (TAESD-shaped: relu convs, nearest upsampling) with random weights to
    `path` and return the model; latents are `downscale` times smaller than the image (a power of 2)."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(seed)
    levels = max(downscale.bit_length() - 1, 0) + 1
    vae = AutoencoderTiny(encoder_block_out_channels=(16,) * levels, decoder_block_out_channels=(16,) * levels,
                          num_encoder_blocks=(1,) * levels, num_decoder_blocks=(1,) * levels, latent_channels=4)
    if path is not None:
        vae.save_pretrained(path, safe_serialization=True)
    return vae


def make_tiny_sd_pipeline(path: str | Path, seed: int = 0, scheduler: str = "ddim",
                          sample_size: int | None = None, shape: str = "tiny", vae: str = "kl") -> Path:
    """Write a Stable-Diffusion-shaped pipeline folder with random weights to `path` and return it
    (`shape`: a key of SHAPES; `scheduler`: ddim, euler, lcm, euler_a or dpm, on SD's beta schedule;
    `vae`: "kl" (AutoencoderKL) or "tiny" (AutoencoderTiny, make_tiny_taesd))."""
    import tempfile

    import torch
    from diffusers import (AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler,
                           EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, LCMScheduler,
                           StableDiffusionPipeline, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    cfg = SHAPES[shape]
    sample_size = sample_size or cfg["sample_size"]
    path = Path(path)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        vocab = make_clip_tokenizer_files(tmp)
        tokenizer = CLIPTokenizer(f"{tmp}/vocab.json", f"{tmp}/merges.txt", bos_token=BOS, eos_token=EOS,
                                  pad_token=EOS, unk_token=EOS, model_max_length=77)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab) if shape == "tiny" else 49408, max_position_embeddings=77,
        bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[EOS], **cfg["text"]))
    unet = UNet2DConditionModel(sample_size=sample_size, in_channels=4, out_channels=4, **cfg["unet"])
    factor = 2 ** (len(cfg["vae"]["block_out_channels"]) - 1)
    if vae == "tiny":
        vae = make_tiny_taesd(None, seed, factor)
    else:
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=sample_size * factor,
                            **cfg["vae"])
    sched_cls = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler, "lcm": LCMScheduler,
                 "euler_a": EulerAncestralDiscreteScheduler, "dpm": DPMSolverMultistepScheduler}[scheduler]
    extra = {"clip_sample": False, "set_alpha_to_one": False} if scheduler == "ddim" else {}
    sched = sched_cls(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      steps_offset=1, **extra)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def make_tiny_sdxl_pipeline(path: str | Path, seed: int = 0, scheduler: str = "euler", vae: str = "kl") -> Path:
    """Write an SDXL-shaped pipeline folder (two CLIP text encoders, the second with a projection; a UNet
    with SDXL's text_time added conditions) with random weights to `path` and return it."""
    import tempfile

    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    sd = make_tiny_sd_pipeline(Path(tempfile.mkdtemp()) / "sd", seed=seed, scheduler=scheduler, vae=vae)
    base = __import__("diffusers").StableDiffusionPipeline.from_pretrained(sd, local_files_only=True)
    torch.manual_seed(seed + 1)
    cfg = base.text_encoder.config
    text_cfg = {k: getattr(cfg, k) for k in ("vocab_size", "max_position_embeddings", "bos_token_id",
                                             "eos_token_id", "pad_token_id", "hidden_size", "intermediate_size",
                                             "num_attention_heads", "num_hidden_layers")}
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_cfg, projection_dim=32))
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=2 * cfg.hidden_size, attention_head_dim=(2, 4), norm_num_groups=8,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 6 * 8)
    tokenizer = base.tokenizer
    pipe = StableDiffusionXLPipeline(vae=base.vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=CLIPTokenizer.from_pretrained(sd / "tokenizer"),
                                     unet=unet, scheduler=base.scheduler, force_zeros_for_empty_prompt=True)
    pipe.save_pretrained(path, safe_serialization=True)
    return Path(path)
