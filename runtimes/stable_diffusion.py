"""Text-to-image with a Stable-Diffusion-shaped artifact: tokenizer, text encoder,
UNet with classifier-free guidance, VAE decoder. numpy plus the backends only.

An artifact built with `guidance: "none"` (distilled few-step models: LCM, Turbo) has its
text encoder and UNet at batch 1: one UNet call per step, no negative prompt, and a
guidance_scale above 1 is refused rather than silently ignored.

img2img (an artifact built with its VAE encoder, component vae_encoder): the image is
encoded, its posterior sampled and the latents noised to the step that `strength` keeps, as
diffusers' StableDiffusionImg2ImgPipeline does; both draws come from the seed (image_noise)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

import numpy as np

from edgegen.core.artifact import Artifact
from edgegen.core.errors import InputError

from .checks import check_components
from .image import to_pil, to_uint8
from .memory_plan import end_phase
from .noise import normal, step_noise
from .schedulers import make_scheduler, read_scheduler_config
from .tokenizer import CLIPTokenizer
from .vae_tiles import decode_tiled, tiling_of

KIND = "stable-diffusion"
# what this pipeline calls: component -> (input names, output names)
COMPONENTS = {"text_encoder": (("input_ids",), ("last_hidden_state",)),
              "unet": (("sample", "timestep", "encoder_hidden_states"), ("out_sample",)),
              "vae_decoder": (("latent_sample",), ("sample",))}
OPTIONAL_COMPONENTS = {"vae_encoder": (("sample",), ("moments",))}   # img2img
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 7.5
DEFAULT_STRENGTH = 0.8


@dataclass
class PipelineOutput:
    images: list                      # PIL images, or uint8 NHWC arrays with output_type="np"
    latents: np.ndarray               # final latents, before the VAE
    timings: dict = field(default_factory=dict)


class StableDiffusionPipeline:
    def __init__(self, artifact: Artifact, sessions: dict):
        self.artifact = artifact
        self.sessions = sessions
        cfg = artifact.pipeline
        tok = cfg["tokenizer"]
        self.tokenizer = CLIPTokenizer(
            artifact.file(tok["vocab"]), artifact.file(tok["merges"]), max_length=tok["max_length"],
            bos_token=tok["bos_token"], eos_token=tok["eos_token"], pad_token=tok["pad_token"],
            unk_token=tok["unk_token"])
        check_components(artifact, {k: v for k, v in OPTIONAL_COMPONENTS.items() if k in artifact.components})
        self.scheduler_config = read_scheduler_config(artifact)
        self.latent_shape = tuple(cfg["latent_shape"])
        self.scaling_factor = float(cfg["vae_scaling_factor"])
        self.height, self.width = cfg["height"], cfg["width"]
        self.vae_tiling = tiling_of(cfg, self.latent_shape)   # None: the decoder takes whole latents
        self.cfg = cfg.get("guidance", "cfg") == "cfg"   # False: batch-1 text encoder and UNet, no CFG
        sampling = cfg.get("sampling", {})
        self.default_steps = int(sampling.get("steps", DEFAULT_STEPS))
        self.default_guidance = float(sampling.get("guidance_scale", DEFAULT_GUIDANCE if self.cfg else 1.0))

    def check_guidance(self, guidance_scale: float) -> None:
        if not self.cfg and guidance_scale > 1:
            raise InputError(f"guidance_scale {guidance_scale:g}: this artifact was built without classifier-free "
                             f"guidance (--guidance none: a batch-1 UNet); use a guidance_scale <= 1, or rebuild "
                             f"with --guidance cfg.")

    def encode_prompt(self, prompt: str, negative_prompt: str | None) -> np.ndarray:
        ids = self.tokenizer([negative_prompt or "", prompt] if self.cfg else [prompt])
        return self.sessions["text_encoder"].run(input_ids=ids)["last_hidden_state"]

    def denoise(self, embeddings: np.ndarray, latents: np.ndarray, steps: int, guidance_scale: float,
                scheduler=None, callback=None, seed: int | None = None, strength: float | None = None,
                image_noise: np.ndarray | None = None) -> np.ndarray:
        """Text-to-image: `latents` is the initial noise (scaled by init_noise_sigma here). img2img
        (`strength`): `latents` are the image's latents, noised with `image_noise` to the first of the
        steps that strength keeps. `seed` draws the noise of samplers that add it at each step
        (noise.step_noise; a fresh seed where None)."""
        self.check_guidance(guidance_scale)
        sched = make_scheduler(self.scheduler_config, scheduler)
        sched.set_timesteps(steps)
        start = 0 if strength is None else img2img_start(steps, strength)
        if strength is None:
            latents = latents * np.float32(sched.init_noise_sigma)
        else:
            latents = sched.add_noise(latents, image_noise, start)
        if sched.needs_noise and seed is None:
            seed = secrets.randbits(64)
        unet = self.sessions["unet"]
        batch = 2 if self.cfg else 1
        for i in range(start, len(sched.timesteps)):
            t = sched.timesteps[i]
            x = sched.scale_model_input(latents, i)
            xb = np.concatenate([x] * batch).astype(np.float32)
            tt = np.full((batch,), t, dtype=np.float32)
            noise = self.unet_output(unet, embeddings, xb, tt)
            uncond, cond = noise[:1], noise[-1:]
            guided = uncond + np.float32(guidance_scale) * (cond - uncond) if guidance_scale > 1 else cond
            drawn = step_noise(seed, i, latents.shape) if sched.needs_noise else None
            latents = sched.step(guided, i, latents, noise=drawn)
            if callback is not None:
                callback(i, t, latents)
        return latents

    def unet_output(self, unet, embeddings, sample: np.ndarray, timestep: np.ndarray) -> np.ndarray:
        return unet.run(sample=sample, timestep=timestep, encoder_hidden_states=embeddings)["out_sample"]

    def image_noise(self, seed: int) -> np.ndarray:
        """img2img's two draws from the seed: [0] samples the VAE posterior, [1] noises its latents."""
        return normal(seed, (2, *self.latent_shape))

    def encode_image(self, image, posterior_noise: np.ndarray) -> np.ndarray:
        """An image (PIL, uint8 HxWx3, or float [1, 3, H, W] in [-1, 1]) to scaled latents: the VAE
        encoder's posterior sampled with `posterior_noise`, times the VAE's scaling factor."""
        if "vae_encoder" not in self.sessions:
            raise InputError("image: this artifact has no VAE encoder; rebuild it with `edgegen build --img2img` "
                             "for image-to-image runs.")
        x = image_input(image, self.height, self.width)
        moments = self.sessions["vae_encoder"].run(sample=x)["moments"]
        mean, logvar = np.split(moments, 2, axis=1)
        std = np.exp(np.float32(0.5) * np.clip(logvar, -30.0, 20.0))
        return ((mean + std * posterior_noise) * np.float32(self.scaling_factor)).astype(np.float32)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        z = (latents / np.float32(self.scaling_factor)).astype(np.float32)
        if self.vae_tiling is not None:
            return self.decode_tiles(z)
        return self.sessions["vae_decoder"].run(latent_sample=z)["sample"]

    def decode_tiles(self, z: np.ndarray) -> np.ndarray:
        """Unscaled latents to the image through a decoder compiled for tiles (--vae-tile): overlapping
        tiles, blended (runtimes/vae_tiles.py)."""
        tile, overlap, factor = self.vae_tiling
        vae = self.sessions["vae_decoder"]
        return decode_tiled(lambda t: vae.run(latent_sample=t)["sample"], z, tile, overlap, factor)

    def __call__(self, prompt: str, negative_prompt: str | None = None, num_inference_steps: int | None = None,
                 guidance_scale: float | None = None, seed: int | None = None, latents: np.ndarray | None = None,
                 scheduler: str | None = None, output_type: str = "pil", callback=None,
                 progress=None, image=None, strength: float | None = None) -> PipelineOutput:
        """`callback(i, t, latents)` after each step; `progress(event, stage, value)` sees the
        denoising steps ("steps", "denoise", total), then ("step", "denoise", done) after each.
        `image` (with `strength`, default 0.8): image-to-image from it (see the module docstring)."""
        num_inference_steps = num_inference_steps or self.default_steps
        guidance_scale = self.default_guidance if guidance_scale is None else guidance_scale
        if not isinstance(prompt, str):
            raise InputError("prompt must be one string: this artifact is built for one image per call.")
        if not self.cfg and negative_prompt:
            raise InputError("negative_prompt: this artifact was built without classifier-free guidance "
                             "(--guidance none), which has no negative branch; rebuild with --guidance cfg.")
        self.check_guidance(guidance_scale)
        if seed is None:
            seed = secrets.randbits(64)
        if image is None and strength is not None:
            raise InputError("strength applies to image-to-image: pass an image too.")
        if image is not None:
            strength = DEFAULT_STRENGTH if strength is None else strength
            img2img_start(num_inference_steps, strength)        # refuses a strength that leaves no step
            if latents is not None:
                raise InputError("pass either latents (text-to-image) or an image, not both.")
        if latents is None and image is None:
            latents = normal(seed, self.latent_shape)
        elif latents is not None and tuple(latents.shape) != self.latent_shape:
            raise InputError(f"latents must have shape {list(self.latent_shape)}, got {list(latents.shape)}; "
                             f"the artifact was built for {self.height}x{self.width}.")
        timings = {}
        t0 = time.perf_counter()
        emb = self.encode_prompt(prompt, negative_prompt)
        self.end_phase("encode")
        timings["text_encoder_s"] = time.perf_counter() - t0
        image_noise = None
        if image is not None:
            t0 = time.perf_counter()
            draws = self.image_noise(seed)
            latents, image_noise = self.encode_image(image, draws[0]), draws[1]
            self.end_phase("encode_image")
            timings["vae_encoder_s"] = time.perf_counter() - t0
            num_run = num_inference_steps - img2img_start(num_inference_steps, strength)
        else:
            num_run = num_inference_steps
        t0 = time.perf_counter()
        final = self.denoise(emb, latents.astype(np.float32), num_inference_steps, guidance_scale,
                             scheduler, step_reporter(num_run, callback, progress), seed=seed, strength=strength,
                             image_noise=image_noise)
        self.end_phase("denoise")
        timings["denoise_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        images = to_uint8(self.decode(final))
        self.end_phase("decode")
        timings["vae_decoder_s"] = time.perf_counter() - t0
        return PipelineOutput(images=to_pil(images) if output_type == "pil" else images,
                              latents=final, timings=timings)

    def end_phase(self, phase: str) -> None:
        """Free the components of `phase` where the artifact's memory plan is phased (runtimes/memory_plan)."""
        end_phase(self.artifact, self.sessions, phase)

    def close(self) -> None:
        for s in self.sessions.values():
            s.close()


def img2img_start(steps: int, strength: float) -> int:
    """The first step index img2img runs: strength keeps int(steps * strength) of the steps (diffusers)."""
    if not 0 <= strength <= 1:
        raise InputError(f"strength must be in 0..1, got {strength}")
    kept = min(int(steps * strength), steps)
    if kept < 1:
        raise InputError(f"strength {strength} keeps no step of {steps}: raise strength or num_inference_steps.")
    return steps - kept


def image_input(image, height: int, width: int) -> np.ndarray:
    """A PIL image, uint8 HxWx3 array or float32 [1, 3, H, W] array in [-1, 1] as the VAE encoder's input."""
    if hasattr(image, "convert"):
        image = np.asarray(image.convert("RGB"))
    x = np.asarray(image)
    if x.dtype == np.uint8:
        if x.ndim != 3 or x.shape[2] != 3:
            raise InputError(f"image must be HxWx3 RGB, got shape {list(x.shape)}")
        x = (x.astype(np.float32) / np.float32(255.0) * np.float32(2.0) - np.float32(1.0)).transpose(2, 0, 1)[None]
    x = x.astype(np.float32)
    if x.shape != (1, 3, height, width):
        raise InputError(f"image must be {width}x{height} (the artifact's size; as an array [1, 3, {height}, "
                         f"{width}]), got an array of shape {list(x.shape)}; resize it first, or rebuild with "
                         f"--height/--width.")
    return np.ascontiguousarray(x)


def step_reporter(total: int, callback=None, progress=None, stage: str = "denoise"):
    """A denoising-step callback that calls `callback` and tells `progress` how many of the stage's
    `total` steps are done."""
    if progress is None:
        return callback
    progress("steps", stage, total)
    done = 0

    def on_step(i, t, x):
        nonlocal done
        done += 1
        progress("step", stage, done)
        if callback is not None:
            callback(i, t, x)

    return on_step
