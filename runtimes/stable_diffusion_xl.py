"""Text-to-image with an SDXL-shaped artifact: two tokenizers and CLIP text encoders (penultimate
hidden states, concatenated; the second's pooled projection), a UNet with SDXL's added
conditions, the VAE decoder. numpy plus the backends only. The denoising loop, schedulers,
guidance modes and noise are StableDiffusionPipeline's."""

from __future__ import annotations

import numpy as np

from edgegen.core.artifact import Artifact

from .stable_diffusion import StableDiffusionPipeline
from .tokenizer import CLIPTokenizer

KIND = "stable-diffusion-xl"
COMPONENTS = {"text_encoder": (("input_ids",), ("hidden_states",)),
              "text_encoder_2": (("input_ids",), ("hidden_states", "text_embeds")),
              "unet": (("sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"), ("out_sample",)),
              "vae_decoder": (("latent_sample",), ("sample",))}


def _tokenizer(artifact: Artifact, tok: dict) -> CLIPTokenizer:
    return CLIPTokenizer(artifact.file(tok["vocab"]), artifact.file(tok["merges"]), max_length=tok["max_length"],
                         bos_token=tok["bos_token"], eos_token=tok["eos_token"], pad_token=tok["pad_token"],
                         unk_token=tok["unk_token"])


class StableDiffusionXLPipeline(StableDiffusionPipeline):
    def __init__(self, artifact: Artifact, sessions: dict):
        super().__init__(artifact, sessions)
        self.tokenizer_2 = _tokenizer(artifact, artifact.pipeline["tokenizer_2"])
        self.force_zeros = bool(artifact.pipeline.get("force_zeros_for_empty_prompt", True))
        # original size, crop top-left, target size: the artifact's size, uncropped (diffusers' defaults)
        self.time_ids = np.array([self.height, self.width, 0, 0, self.height, self.width], np.float32)

    def _encode(self, prompts: list) -> tuple[np.ndarray, np.ndarray]:
        first = self.sessions["text_encoder"].run(input_ids=self.tokenizer(prompts))
        second = self.sessions["text_encoder_2"].run(input_ids=self.tokenizer_2(prompts))
        return np.concatenate([first["hidden_states"], second["hidden_states"]], axis=-1), second["text_embeds"]

    def encode_prompt(self, prompt: str, negative_prompt: str | None) -> dict:
        """The UNet's text conditions, [unconditional, conditional] with CFG. A negative prompt of None
        gives zero embeddings where the model says so (force_zeros_for_empty_prompt), as diffusers does."""
        if not self.cfg:
            emb, pooled = self._encode([prompt])
        elif negative_prompt is None and self.force_zeros:
            emb, pooled = self._encode(["", prompt])     # the encoders' batch is 2; the first half is zeroed
            emb[0], pooled[0] = 0, 0
        else:
            emb, pooled = self._encode([negative_prompt or "", prompt])
        return {"encoder_hidden_states": emb, "text_embeds": pooled}

    def unet_output(self, unet, embeddings: dict, sample: np.ndarray, timestep: np.ndarray) -> np.ndarray:
        time_ids = np.tile(self.time_ids, (len(sample), 1))
        return unet.run(sample=sample, timestep=timestep, time_ids=time_ids, **embeddings)["out_sample"]
