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


def make_tiny_sd_pipeline(path: str | Path, seed: int = 0, scheduler: str = "ddim",
                          sample_size: int = 16) -> Path:
    """Write a tiny StableDiffusionPipeline folder to `path` and return it."""
    import tempfile

    import torch
    from diffusers import (AutoencoderKL, DDIMScheduler, EulerDiscreteScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    path = Path(path)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        vocab = make_clip_tokenizer_files(tmp)
        tokenizer = CLIPTokenizer(f"{tmp}/vocab.json", f"{tmp}/merges.txt", bos_token=BOS, eos_token=EOS,
                                  pad_token=EOS, unk_token=EOS, model_max_length=77)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=77, bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS], pad_token_id=vocab[EOS]))
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=8)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(32, 64),
        latent_channels=4, layers_per_block=1, norm_num_groups=8, sample_size=sample_size * 2)
    sched_cls = {"ddim": DDIMScheduler, "euler": EulerDiscreteScheduler}[scheduler]
    extra = {"clip_sample": False, "set_alpha_to_one": False} if scheduler == "ddim" else {}
    sched = sched_cls(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      steps_offset=1, **extra)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(path, safe_serialization=True)
    return path
