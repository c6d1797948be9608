"""`edgegen validate`: an artifact against its source pipeline in torch, step by step.

Both sides start from the same prompt, seed and initial latents. The report
holds each component's PSNR on identical inputs, the latent PSNR after every
denoising step, and the final image's PSNR; gates are the named thresholds.
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgegen.core.errors import ParityError
from edgegen.core.metrics import psnr
from edgegen.core.quant import QUANT_FLOOR_DB
from edgegen.runtimes.stable_diffusion import step_reporter

COMPONENT_PSNR_DB = 40.0   # each component on identical inputs
IMAGE_PSNR_DB = 40.0       # final image, pixel values in [0, 1]
REFERENCE, ARTIFACT = "torch reference", "artifact"     # the progress stages of the two denoising loops


@dataclass
class ValidationReport:
    components: dict[str, float]
    steps: list[float]
    image_psnr_db: float
    tokens_match: bool | None      # None where the model has no tokenizer
    device: str
    thresholds: dict = field(default_factory=lambda: {"component_db": COMPONENT_PSNR_DB,
                                                      "image_db": IMAGE_PSNR_DB})
    first_nonfinite_step: int | None = None
    reference_image: np.ndarray | None = None
    artifact_image: np.ndarray | None = None
    component_inputs: dict = field(default_factory=dict, repr=False)   # what each component PSNR used
    kernel_traces: dict = field(default_factory=dict)                  # name -> tvm_vm Session.trace()
    bisect: dict | None = None                                         # edgegen.bisect.bisect()

    @property
    def failures(self) -> list[str]:
        out = []
        if self.tokens_match is False:
            out.append("tokenizer: token ids differ from the reference tokenizer")
        for name, db in self.components.items():
            if db < self.thresholds["component_db"]:
                out.append(f"{name}: {db:.2f} dB < {self.thresholds['component_db']:.1f} dB")
        if self.first_nonfinite_step is not None:
            out.append(f"latents: NaN/Inf first at step {self.first_nonfinite_step}")
        for name, trace in self.kernel_traces.items():
            if trace["first_nonfinite"]:
                out.append(f"{name}: NaN/Inf first produced by kernel {trace['first_nonfinite']}")
        first = (self.bisect or {}).get("first_divergent")
        if first:
            from edgegen.bisect import describe

            out.append(f"{self.bisect['component']}: first under {self.bisect['threshold_db']:.0f} dB is "
                       + describe(first))
        if self.image_psnr_db < self.thresholds["image_db"]:
            out.append(f"final image: {self.image_psnr_db:.2f} dB < {self.thresholds['image_db']:.1f} dB")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict:
        return {"passed": self.passed, "failures": self.failures, "device": self.device,
                "thresholds": self.thresholds, "tokens_match": self.tokens_match,
                "components_psnr_db": {k: round(v, 2) for k, v in self.components.items()},
                "step_latent_psnr_db": [round(v, 2) for v in self.steps],
                "image_psnr_db": round(self.image_psnr_db, 2),
                "first_nonfinite_step": self.first_nonfinite_step, "kernel_traces": self.kernel_traces,
                "bisect": self.bisect}

    def raise_for_failure(self) -> None:
        if self.failures:
            worst = min([self.image_psnr_db, *self.components.values()])
            raise ParityError("validation failed: " + "; ".join(self.failures), worst,
                              min(self.thresholds.values()))


def _mixed_target(scheme: str) -> float | None:
    from edgegen.core.quant import parse

    return parse(scheme).target_db


def validate(artifact_dir, model_dir, prompt: str = "a photo of an astronaut riding a horse",
             negative_prompt: str = "", num_inference_steps: int = 10, guidance_scale: float | None = None,
             seed: int = 0, scheduler: str | None = None, trace: bool = False,
             bisect: bool | None = None, threads: int | None = None, progress=None, image=None,
             strength: float | None = None) -> ValidationReport:
    """Run the artifact and its source model side by side from the same inputs. `trace` checks
    every kernel's output of TVM artifacts for NaN/Inf and float16 overflow (done anyway when a
    NaN/Inf shows up). `bisect`: find the denoiser's first diverging layer/kernel; None (default)
    does it when the denoiser or a step falls under the gate. `threads`: CPU threads for the
    artifact's calls (default: every core this process may use). `progress(event, stage, value)`
    sees the denoising steps of the torch reference and of the artifact (see Progress in
    edgegen.console). `image` (and `strength`): image-to-image, against diffusers'
    StableDiffusionImg2ImgPipeline from the same posterior and noise draws (artifacts built with
    --img2img)."""
    from edgegen.converters.source import import_diffusers
    from edgegen.runtimes import load

    import_diffusers()
    rt = load(artifact_dir, threads=threads)
    try:
        if rt.artifact.pipeline["kind"] == "class-conditional-dit":
            report = _validate_dit(rt, model_dir, num_inference_steps, guidance_scale, seed, scheduler, progress)
        elif rt.artifact.pipeline["kind"] == "stable-diffusion-xl":
            if image is not None:
                raise ValueError("img2img validation is for Stable Diffusion 1.x/2.x artifacts; SDXL has none yet.")
            guidance = rt.default_guidance if guidance_scale is None else guidance_scale
            report = _validate_sdxl(rt, model_dir, prompt, negative_prompt, num_inference_steps, guidance, seed,
                                    scheduler, progress)
        else:
            guidance = rt.default_guidance if guidance_scale is None else guidance_scale
            report = _validate_sd(rt, model_dir, prompt, negative_prompt, num_inference_steps, guidance, seed,
                                  scheduler, progress, image, strength)
        if trace or report.first_nonfinite_step is not None or not all(np.isfinite(list(report.components.values()))):
            # kernel by kernel on the component inputs: where NaN/Inf or float16 overflow first appears
            for name, inputs in report.component_inputs.items():
                if hasattr(rt.sessions[name], "trace"):
                    report.kernel_traces[name] = rt.sessions[name].trace(**inputs)
        scheme = rt.artifact.manifest["target"].get("quant")
        if scheme:
            # a quantized artifact is gated at the floor below which its output is noise, and at the
            # target of mixed:<dB>; it is not expected to match float32 to 40 dB, so no automatic bisection
            report.thresholds = {"component_db": QUANT_FLOOR_DB, "image_db": _mixed_target(scheme) or QUANT_FLOOR_DB}
            bisect = bool(bisect)
        gate = report.thresholds["component_db"]
        denoiser = "unet" if "unet" in report.components else "transformer"
        if bisect is True or (bisect is None and (report.components[denoiser] < gate
                                                  or min(report.steps, default=gate) < gate)):
            # the first layer/kernel of the denoiser that parts from its reference, on the same inputs
            from edgegen.bisect import bisect as run_bisect

            report.bisect = {"component": denoiser, **run_bisect(artifact_dir, model_dir, denoiser,
                                                                 report.component_inputs[denoiser], gate)}
        return report
    finally:
        rt.close()


def _stage(progress, stage: str, fn, *args, **kwargs):
    if progress is None:
        return fn(*args, **kwargs)
    progress("start", stage)
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    progress("end", stage, time.perf_counter() - t0)
    return result


def _to_image(x: np.ndarray) -> np.ndarray:
    return np.clip(x / 2 + 0.5, 0, 1)


def _validate_dit(rt, model_dir, steps: int, guidance_scale: float | None, seed: int,
                  scheduler: str | None, progress) -> ValidationReport:
    from pathlib import Path

    import torch
    from diffusers import DiTTransformer2DModel

    from edgegen.reference import dit_sample

    guidance = rt.sampling.get("guidance_scale", 4.0) if guidance_scale is None else guidance_scale
    model = _stage(progress, "load the torch reference", DiTTransformer2DModel.from_pretrained,
                   Path(model_dir) / "transformer", torch_dtype=torch.float32, low_cpu_mem_usage=False).eval()
    n = rt.batch
    labels = (np.arange(n) % rt.null_class).tolist()
    noise = np.random.default_rng(seed).standard_normal(rt.sample_shape, dtype=np.float32)
    x2 = np.concatenate([noise, noise])
    ts = np.full(2 * n, 500.0, np.float32)
    y = np.array(labels + [rt.null_class] * n, np.int32)
    with torch.no_grad():
        ref_out = model(torch.from_numpy(x2), timestep=torch.from_numpy(ts),
                        class_labels=torch.from_numpy(y.astype(np.int64))).sample.numpy()
    rt_out = rt.transformer.run(sample=x2, timestep=ts, class_labels=y)["noise_pred"]
    ref_steps, rt_steps = [], []
    ref_final = dit_sample(model, rt.scheduler_config, labels, noise, steps, guidance, scheduler,
                           callback=step_reporter(steps, lambda i, t, x: ref_steps.append(x), progress, REFERENCE))
    rt_final = rt.denoise(labels, noise, steps, guidance, scheduler,
                          callback=step_reporter(steps, lambda i, t, x: rt_steps.append(x), progress, ARTIFACT))
    nonfinite = next((i for i, x in enumerate(rt_steps) if not np.all(np.isfinite(x))), None)
    img_ref, img_rt = _to_image(ref_final), _to_image(rt_final)
    return ValidationReport(components={"transformer": psnr(ref_out, rt_out)},
                            component_inputs={"transformer": {"sample": x2, "timestep": ts, "class_labels": y}},
                            steps=[psnr(a, b) for a, b in zip(ref_steps, rt_steps)],
                            image_psnr_db=psnr(img_ref, img_rt, peak=1.0), tokens_match=None, device="cpu",
                            first_nonfinite_step=nonfinite, reference_image=img_ref, artifact_image=img_rt)


def _validate_sd(rt, model_dir, prompt: str, negative_prompt: str, num_inference_steps: int,
                 guidance_scale: float, seed: int, scheduler: str | None, progress, image=None,
                 strength: float | None = None) -> ValidationReport:
    import torch

    from edgegen.reference import sd_pipeline
    from edgegen.runtimes.stable_diffusion import DEFAULT_STRENGTH, image_input, img2img_start

    # an artifact built with `--vae DIR` is compared with the pipeline that has that VAE
    vae_dir = rt.artifact.pipeline.get("vae", {}).get("source")
    ref, device = _stage(progress, "load the torch reference", sd_pipeline, model_dir, scheduler, vae_dir)
    img2img = image is not None
    if img2img:
        from diffusers import StableDiffusionImg2ImgPipeline

        from edgegen.core.quiet import log_records_hidden

        # from_pipe moves the shared modules with .to(), which diffusers warns about (they stay float32)
        with log_records_hidden("diffusers.models.modeling_utils", "There are modules in"):
            ref = StableDiffusionImg2ImgPipeline.from_pipe(ref)
        ref.set_progress_bar_config(disable=True)
        strength = DEFAULT_STRENGTH if strength is None else strength
        run_steps = num_inference_steps - img2img_start(num_inference_steps, strength)
    else:
        run_steps = num_inference_steps

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    latents = np.random.default_rng(seed).standard_normal(rt.latent_shape, dtype=np.float32)
    prompts = [negative_prompt, prompt] if rt.cfg else [prompt]   # the text encoder's and UNet's batch
    ids = rt.tokenizer(prompts)
    ref_ids = ref.tokenizer(prompts, padding="max_length", max_length=rt.tokenizer.max_length,
                            truncation=True, return_tensors="np").input_ids
    components = {}
    with torch.no_grad():
        emb_ref = ref.text_encoder(t(ref_ids.astype(np.int64)), return_dict=False)[0].cpu().numpy()
        emb_rt = rt.sessions["text_encoder"].run(input_ids=ref_ids.astype(np.int32))["last_hidden_state"]
        components["text_encoder"] = psnr(emb_ref, emb_rt)
        x2 = np.concatenate([latents] * len(prompts))
        ts = np.full((len(prompts),), 500.0, np.float32)
        unet_ref = ref.unet(t(x2), t(ts), encoder_hidden_states=t(emb_ref), return_dict=False)[0].cpu().numpy()
        unet_rt = rt.sessions["unet"].run(sample=x2, timestep=ts, encoder_hidden_states=emb_ref)["out_sample"]
        components["unet"] = psnr(unet_ref, unet_rt)
        if img2img:
            # each side encodes with its own VAE encoder and samples its posterior with the same draw
            x_img = image_input(image, rt.height, rt.width)
            draws = rt.image_noise(seed)
            moments_ref = ref.vae.encode(t(x_img), return_dict=False)[0].parameters
            components["vae_encoder"] = psnr(moments_ref.cpu().numpy(),
                                             rt.sessions["vae_encoder"].run(sample=x_img)["moments"])
            mean, logvar = torch.chunk(moments_ref, 2, dim=1)
            init_ref = (mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * t(draws[0])) * rt.scaling_factor

    ref_steps: list[np.ndarray] = []
    ref_step = step_reporter(run_steps, lambda i, t, x: ref_steps.append(x), progress, REFERENCE)

    def on_step(pipe, i, timestep, kwargs):
        ref_step(i, timestep, kwargs["latents"].detach().cpu().numpy())
        return kwargs

    common = dict(prompt=prompt, negative_prompt=negative_prompt, num_inference_steps=num_inference_steps,
                  guidance_scale=guidance_scale, output_type="latent", callback_on_step_end=on_step,
                  callback_on_step_end_tensor_inputs=["latents"])
    with scheduler_noise(ref.scheduler, seed):
        if img2img:   # image latents in, so the pipeline skips its encoder; its forward noise is draws[1]
            with _randn_returns(type(ref).__module__, lambda *a, **k: t(draws[1])):
                ref_out = ref(image=init_ref, strength=strength, **common)
        else:
            ref_out = ref(latents=t(latents), height=rt.height, width=rt.width, **common)
    ref_latents = ref_out.images.cpu().numpy()

    rt_steps: list[np.ndarray] = []
    emb = rt.encode_prompt(prompt, negative_prompt)
    rt_step = step_reporter(run_steps, lambda i, ts_, lat: rt_steps.append(lat), progress, ARTIFACT)
    if img2img:
        rt_latents = rt.denoise(emb, rt.encode_image(x_img, draws[0]), num_inference_steps, guidance_scale,
                                scheduler, callback=rt_step, seed=seed, strength=strength, image_noise=draws[1])
    else:
        rt_latents = rt.denoise(emb, latents, num_inference_steps, guidance_scale, scheduler, callback=rt_step,
                                seed=seed)
    steps = [psnr(a, b) for a, b in zip(ref_steps, rt_steps)]
    nonfinite = next((i for i, lat in enumerate(rt_steps) if not np.all(np.isfinite(lat))), None)

    with torch.no_grad():
        scale = rt.scaling_factor
        dec_ref = ref.vae.decode(t(ref_latents / scale), return_dict=False)[0].cpu().numpy()
        components["vae_decoder"] = psnr(dec_ref, rt.decode(ref_latents))
    img_ref = _to_image(dec_ref)
    img_rt = _to_image(rt.decode(rt_latents))
    inputs = {"text_encoder": {"input_ids": ref_ids.astype(np.int32)},
              "unet": {"sample": x2, "timestep": ts, "encoder_hidden_states": emb_ref},
              "vae_decoder": {"latent_sample": _decoder_input(rt, ref_latents / np.float32(scale))},
              **({"vae_encoder": {"sample": x_img}} if img2img else {})}
    return ValidationReport(components=components, steps=steps, image_psnr_db=psnr(img_ref, img_rt, peak=1.0),
                            component_inputs=inputs,
                            tokens_match=bool(np.array_equal(ids, ref_ids.astype(ids.dtype))), device=device,
                            first_nonfinite_step=nonfinite, reference_image=img_ref, artifact_image=img_rt)


def _decoder_input(rt, z: np.ndarray) -> np.ndarray:
    """The VAE decoder's own input for a kernel trace: the latents, or their first tile where the
    artifact decodes in tiles (--vae-tile)."""
    if getattr(rt, "vae_tiling", None) is not None:
        (th, tw), _, _ = rt.vae_tiling
        z = z[:, :, :th, :tw]
    return np.ascontiguousarray(z, dtype=np.float32)


def _validate_sdxl(rt, model_dir, prompt: str, negative_prompt: str, steps: int, guidance_scale: float,
                   seed: int, scheduler: str | None, progress) -> ValidationReport:
    """SDXL: both text encoders and the UNet (with its added conditions) on the same inputs, every
    step's latents and the final image against diffusers' StableDiffusionXLPipeline."""
    import torch

    from edgegen.reference import sd_pipeline

    vae_dir = rt.artifact.pipeline.get("vae", {}).get("source")
    ref, device = _stage(progress, "load the torch reference", sd_pipeline, model_dir, scheduler, vae_dir)

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    latents = np.random.default_rng(seed).standard_normal(rt.latent_shape, dtype=np.float32)
    prompts = [negative_prompt, prompt] if rt.cfg else [prompt]
    components, inputs, ids_match = {}, {}, True
    hidden = []
    with torch.no_grad():
        for name, tok, ref_tok, enc in (("text_encoder", rt.tokenizer, ref.tokenizer, ref.text_encoder),
                                        ("text_encoder_2", rt.tokenizer_2, ref.tokenizer_2, ref.text_encoder_2)):
            ids = ref_tok(prompts, padding="max_length", max_length=tok.max_length, truncation=True,
                          return_tensors="np").input_ids.astype(np.int32)
            ids_match &= bool(np.array_equal(tok(prompts), ids.astype(np.int32)))
            out = enc(t(ids.astype(np.int64)), output_hidden_states=True)
            got = rt.sessions[name].run(input_ids=ids)
            components[name] = min([psnr(out.hidden_states[-2].cpu().numpy(), got["hidden_states"]),
                                    *([psnr(out.text_embeds.cpu().numpy(), got["text_embeds"])]
                                      if "text_embeds" in got else [])])
            inputs[name] = {"input_ids": ids}
            hidden.append(out)
        emb = torch.cat([h.hidden_states[-2] for h in hidden], dim=-1).cpu().numpy()
        pooled = hidden[1].text_embeds.cpu().numpy()
        x = np.concatenate([latents] * len(prompts))
        ts = np.full((len(prompts),), 500.0, np.float32)
        time_ids = np.tile(rt.time_ids, (len(prompts), 1))
        unet_in = {"sample": x, "timestep": ts, "encoder_hidden_states": emb, "text_embeds": pooled,
                   "time_ids": time_ids}
        unet_ref = ref.unet(t(x), t(ts), encoder_hidden_states=t(emb), return_dict=False,
                            added_cond_kwargs={"text_embeds": t(pooled), "time_ids": t(time_ids)})[0]
        components["unet"] = psnr(unet_ref.cpu().numpy(), rt.sessions["unet"].run(**unet_in)["out_sample"])
        inputs["unet"] = unet_in

    ref_steps: list[np.ndarray] = []
    ref_step = step_reporter(steps, lambda i, t_, x_: ref_steps.append(x_), progress, REFERENCE)

    def on_step(pipe, i, timestep, kwargs):
        ref_step(i, timestep, kwargs["latents"].detach().cpu().numpy())
        return kwargs

    with scheduler_noise(ref.scheduler, seed):
        ref_latents = ref(prompt, negative_prompt=negative_prompt, num_inference_steps=steps,
                          guidance_scale=guidance_scale, latents=t(latents), height=rt.height, width=rt.width,
                          output_type="latent", callback_on_step_end=on_step,
                          callback_on_step_end_tensor_inputs=["latents"]).images.cpu().numpy()
    rt_steps: list[np.ndarray] = []
    rt_latents = rt.denoise(rt.encode_prompt(prompt, negative_prompt), latents, steps, guidance_scale, scheduler,
                            callback=step_reporter(steps, lambda i, ts_, lat: rt_steps.append(lat), progress,
                                                   ARTIFACT), seed=seed)
    with torch.no_grad():
        dec_ref = ref.vae.decode(t(ref_latents / rt.scaling_factor), return_dict=False)[0].cpu().numpy()
    components["vae_decoder"] = psnr(dec_ref, rt.decode(ref_latents))
    inputs["vae_decoder"] = {"latent_sample": _decoder_input(rt, ref_latents / np.float32(rt.scaling_factor))}
    img_ref, img_rt = _to_image(dec_ref), _to_image(rt.decode(rt_latents))
    nonfinite = next((i for i, lat in enumerate(rt_steps) if not np.all(np.isfinite(lat))), None)
    return ValidationReport(components=components, steps=[psnr(a, b) for a, b in zip(ref_steps, rt_steps)],
                            image_psnr_db=psnr(img_ref, img_rt, peak=1.0), component_inputs=inputs,
                            tokens_match=ids_match, device=device, first_nonfinite_step=nonfinite,
                            reference_image=img_ref, artifact_image=img_rt)


@contextmanager
def scheduler_noise(scheduler, seed: int):
    """While active, a diffusers scheduler that adds noise inside step() (LCM, Euler ancestral) draws,
    at step index i, the noise edgegen's runtime draws there (noise.step_noise(seed, i)) instead of
    torch's: both sides then sample from the same draws. A deterministic scheduler is left alone."""
    import torch

    from edgegen.runtimes.noise import step_noise

    def draw(shape, generator=None, device=None, dtype=None, **_):
        index = int(scheduler.step_index)
        return torch.from_numpy(step_noise(seed, index, tuple(shape))).to(device=device, dtype=dtype)

    with _randn_returns(type(scheduler).__module__, draw):
        yield


@contextmanager
def _randn_returns(module_name: str, draw):
    """diffusers' randn_tensor, as the module `module_name` calls it, replaced by `draw` while active."""
    module = sys.modules[module_name]
    original = getattr(module, "randn_tensor", None)
    if original is None:
        yield
        return
    module.randn_tensor = draw
    try:
        yield
    finally:
        module.randn_tensor = original


def write_report(report: ValidationReport, out_dir, title: str = "edgegen validate") -> Path:
    """report.md with the verdict, the component table, the per-step PSNR curve (steps.png, needs
    matplotlib) and the reference and artifact images side by side (images.png); report.json."""
    import json

    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report.to_json(), indent=1))
    images = []
    if report.reference_image is not None:
        pair = [report.reference_image, report.artifact_image]
        rows = [np.concatenate([p[i].transpose(1, 2, 0) for p in pair], axis=1) for i in range(len(pair[0]))]
        grid = np.concatenate(rows, axis=0)
        Image.fromarray((np.clip(grid, 0, 1) * 255).round().astype(np.uint8).squeeze()).save(out / "images.png")
        images.append("![reference (left) and artifact (right)](images.png)")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot(range(1, len(report.steps) + 1), report.steps, marker="o", label="latents after each step")
        ax.axhline(report.thresholds["image_db"], color="red", linestyle="--", label="image gate")
        ax.set_xlabel("denoising step")
        ax.set_ylabel("PSNR vs reference (dB)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "steps.png", dpi=120)
        plt.close(fig)
        images.insert(0, "![per-step latent PSNR](steps.png)")
    except ImportError:
        images.insert(0, "(per-step curve not drawn: `pip install 'edgegen[report]'` for matplotlib)")
    lines = [f"# {title}", "", f"**{'PASS' if report.passed else 'FAIL'}**" +
             ("" if report.passed else ": " + "; ".join(report.failures)), "",
             f"Reference: diffusers in torch on {report.device}. Gates: component "
             f"{report.thresholds['component_db']} dB, final image {report.thresholds['image_db']} dB.", "",
             "| component | PSNR (dB) | gate |", "|---|---|---|"]
    lines += [f"| {n} | {db:.2f} | {'ok' if db >= report.thresholds['component_db'] else 'FAIL'} |"
              for n, db in report.components.items()]
    lines += [f"| final image | {report.image_psnr_db:.2f} | "
              f"{'ok' if report.image_psnr_db >= report.thresholds['image_db'] else 'FAIL'} |", "",
              "Per-step latent PSNR (dB): " + ", ".join(f"{d:.1f}" for d in report.steps), ""]
    for name, t in report.kernel_traces.items():
        over = t["first_over_limit"]
        lines.append(f"- {name}: {t['kernels_checked']} kernel outputs checked; first NaN/Inf: "
                     f"{t['first_nonfinite'] or 'none'}; first above {t['limit']:g} (float16 overflow): "
                     + (f"{over['kernel']} (max |x| {over['max_abs']:.3g})" if over else "none"))
    if report.bisect is not None:
        b = report.bisect
        if not b["supported"]:
            lines.append(f"- layer bisection: {b['reason']}")
        else:
            from edgegen.bisect import describe

            first = b["first_divergent"]
            lines.append(f"- bisection of {b['component']} ({b['method']}), {b['layers_compared']} outputs "
                         f"compared: first under {b['threshold_db']:g} dB: " + (describe(first) if first else "none"))
            lines += ["  - worst: " + describe(w) for w in b["worst"]]
    lines += ["", *images, ""]
    (out / "report.md").write_text("\n".join(lines))
    return out / "report.md"
