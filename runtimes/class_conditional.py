"""Class-conditional generation with a DiT artifact (pixel space): classifier-free
guidance against the null class, as diffusers' DiTPipeline does. numpy plus the backend."""

from __future__ import annotations

import time

import numpy as np

from edgegen.core.artifact import Artifact
from edgegen.core.errors import InputError

from .image import to_pil, to_uint8
from .noise import normal
from .schedulers import make_scheduler, read_scheduler_config
from .stable_diffusion import PipelineOutput, step_reporter

KIND = "class-conditional-dit"
# what this pipeline calls: component -> (input names, output names)
COMPONENTS = {"transformer": (("sample", "timestep", "class_labels"), ("noise_pred",))}


class ClassConditionalPipeline:
    def __init__(self, artifact: Artifact, sessions: dict):
        cfg = artifact.pipeline
        self.artifact = artifact
        self.sessions = sessions
        self.transformer = sessions["transformer"]
        self.batch = int(cfg["batch"])
        self.sample_shape = tuple(cfg["sample_shape"])
        self.channels = int(cfg["in_channels"])
        self.null_class = int(cfg["null_class"])
        self.id2label = {int(k): v for k, v in cfg["id2label"].items()}
        self.label2id = {name.strip().lower(): i for i, names in self.id2label.items() for name in names.split(",")}
        self.sampling = cfg.get("sampling", {})
        self.scheduler_config = read_scheduler_config(artifact)

    def label_ids(self, labels) -> list[int]:
        """Class ids from ints or names ('7', 'seven'), one per image."""
        if isinstance(labels, (int, np.integer, str)):
            labels = [labels]
        ids = []
        for label in labels:
            if isinstance(label, str):
                key = label.strip().lower()
                if key not in self.label2id:
                    raise InputError(f"unknown class label {label!r}; this model knows "
                                     f"{[v for v in self.id2label.values()]}.")
                ids.append(self.label2id[key])
            else:
                if not 0 <= int(label) < self.null_class:
                    raise InputError(f"class id {label} is out of range 0..{self.null_class - 1}.")
                ids.append(int(label))
        return ids

    def denoise(self, labels: list[int], noise: np.ndarray, steps: int, guidance_scale: float,
                scheduler=None, callback=None) -> np.ndarray:
        """One batch: `labels` and `noise` fill the artifact's batch exactly."""
        sched = make_scheduler(self.scheduler_config, scheduler)
        sched.set_timesteps(steps)
        n, c = self.batch, self.channels
        y = np.concatenate([np.asarray(labels), np.full(n, self.null_class)]).astype(np.int32)
        x = (noise * np.float32(sched.init_noise_sigma)).astype(np.float32)
        for i, t in enumerate(sched.timesteps):
            inp = sched.scale_model_input(np.concatenate([x, x]), i)
            out = self.transformer.run(sample=inp, timestep=np.full(2 * n, t, np.float32),
                                       class_labels=y)["noise_pred"][:, :c]
            cond, uncond = out[:n], out[n:]
            guided = uncond + np.float32(guidance_scale) * (cond - uncond) if guidance_scale > 1 else cond
            x = sched.step(guided, i, x)
            if callback is not None:
                callback(i, t, x)
        return x

    def __call__(self, class_labels, num_inference_steps: int | None = None, guidance_scale: float | None = None,
                 seed: int | None = None, noise: np.ndarray | None = None, scheduler: str | None = None,
                 output_type: str = "pil", callback=None, progress=None) -> PipelineOutput:
        """`callback(i, t, samples)` after each step of each batch; `progress(event, stage, value)`
        sees the denoising steps of all batches ("steps", "denoise", total), ("step", "denoise", done)."""
        ids = self.label_ids(class_labels)
        steps = num_inference_steps or self.sampling.get("steps", 25)
        guidance = self.sampling.get("guidance_scale", 4.0) if guidance_scale is None else guidance_scale
        shape = (len(ids), *self.sample_shape[1:])
        if noise is None:
            noise = normal(seed, shape)
        elif tuple(noise.shape) != shape:
            raise InputError(f"noise must have shape {list(shape)} for {len(ids)} labels, got {list(noise.shape)}")
        t0 = time.perf_counter()
        on_step = step_reporter(steps * -(-len(ids) // self.batch), callback, progress)
        samples = []
        for start in range(0, len(ids), self.batch):
            chunk, z = ids[start:start + self.batch], noise[start:start + self.batch]
            pad = self.batch - len(chunk)  # fill the static batch; padded outputs are dropped
            x = self.denoise(chunk + [chunk[0]] * pad, np.concatenate([z, np.repeat(z[:1], pad, 0)]), steps,
                             guidance, scheduler, on_step)
            samples.append(x[:len(chunk)])
        final = np.concatenate(samples)
        images = to_uint8(final)
        timings = {"denoise_s": time.perf_counter() - t0}
        return PipelineOutput(images=to_pil(images) if output_type == "pil" else images, latents=final,
                              timings=timings)

    def close(self) -> None:
        for s in self.sessions.values():
            s.close()
