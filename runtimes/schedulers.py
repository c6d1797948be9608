"""Denoising schedulers in numpy, configured from a diffusers scheduler config.

They reproduce diffusers' DDIMScheduler and EulerDiscreteScheduler (deterministic
settings) so that an artifact runs without torch. Options they do not implement
raise an error that names the option, instead of silently sampling differently.
"""

from __future__ import annotations

import math

import numpy as np

from edgegen.core.errors import ModelError

SUPPORTED = {"DDIMScheduler": "ddim", "EulerDiscreteScheduler": "euler"}

# Options whose non-default values change the numbers and are not implemented here.
_UNSUPPORTED_OPTIONS = {
    "trained_betas": None,
    "thresholding": False,
    "rescale_betas_zero_snr": False,
    "use_karras_sigmas": False,
    "use_exponential_sigmas": False,
    "use_beta_sigmas": False,
    "interpolation_type": "linear",
    "timestep_type": "discrete",
    "final_sigmas_type": "zero",
}


def _betas(config: dict) -> np.ndarray:
    n = int(config.get("num_train_timesteps", 1000))
    start = float(config.get("beta_start", 0.0001))
    end = float(config.get("beta_end", 0.02))
    schedule = config.get("beta_schedule", "linear")
    if schedule == "linear":
        return np.linspace(start, end, n, dtype=np.float32)
    if schedule == "scaled_linear":
        return (np.linspace(start**0.5, end**0.5, n, dtype=np.float32) ** 2).astype(np.float32)
    if schedule == "squaredcos_cap_v2":
        def alpha_bar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        return np.array([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)],
                        dtype=np.float32)
    raise ModelError(f"scheduler beta_schedule {schedule!r} is not supported; use linear, scaled_linear or squaredcos_cap_v2.")


def _check_options(kind: str, config: dict) -> None:
    for key, default in _UNSUPPORTED_OPTIONS.items():
        if key in config and config[key] != default and config[key] is not None:
            raise ModelError(
                f"{kind} scheduler option {key}={config[key]!r} is not implemented by edgegen's runtime "
                f"(it supports {key}={default!r}); change it in scheduler_config.json or pick another scheduler."
            )
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in ("epsilon", "v_prediction", "sample"):
        raise ModelError(f"prediction_type {prediction!r} is not supported; use epsilon, v_prediction or sample.")


def _spaced_timesteps(config: dict, steps: int, integer: bool) -> np.ndarray:
    n = int(config.get("num_train_timesteps", 1000))
    if steps < 1 or steps > n:
        raise ValueError(f"num_inference_steps must be in 1..{n}, got {steps}")
    spacing = config.get("timestep_spacing", "leading")
    if spacing == "linspace":
        if integer:
            return np.linspace(0, n - 1, steps).round()[::-1].astype(np.int64)
        return np.linspace(0, n - 1, steps, dtype=np.float32)[::-1].copy()
    if spacing == "leading":
        ratio = n // steps
        t = (np.arange(0, steps) * ratio).round()[::-1].astype(np.int64 if integer else np.float32)
        return t + int(config.get("steps_offset", 0))
    if spacing == "trailing":
        t = np.round(np.arange(n, 0, -n / steps))
        return t.astype(np.int64) - 1 if integer else t.astype(np.float32) - 1
    raise ModelError(f"timestep_spacing {spacing!r} is not supported; use linspace, leading or trailing.")


class DDIM:
    """DDIMScheduler with eta=0 (deterministic)."""

    def __init__(self, config: dict):
        _check_options("DDIM", config)
        self.config = dict(config)
        self.num_train_timesteps = int(config.get("num_train_timesteps", 1000))
        self.alphas_cumprod = np.cumprod(1.0 - _betas(config), dtype=np.float32)
        self.final_alpha_cumprod = 1.0 if config.get("set_alpha_to_one", True) else float(self.alphas_cumprod[0])
        self.prediction_type = config.get("prediction_type", "epsilon")
        self.clip_sample = bool(config.get("clip_sample", True))
        self.clip_range = float(config.get("clip_sample_range", 1.0))
        self.init_noise_sigma = 1.0
        self.timesteps = np.zeros(0, np.int64)

    def set_timesteps(self, steps: int) -> None:
        self.timesteps = _spaced_timesteps(self.config, steps, integer=True)
        self._ratio = self.num_train_timesteps // steps

    def scale_model_input(self, sample: np.ndarray, index: int) -> np.ndarray:
        return sample

    def step(self, model_output: np.ndarray, index: int, sample: np.ndarray) -> np.ndarray:
        t = int(self.timesteps[index])
        prev = t - self._ratio
        a_t = np.float32(self.alphas_cumprod[t])
        a_prev = np.float32(self.alphas_cumprod[prev] if prev >= 0 else self.final_alpha_cumprod)
        b_t = np.float32(1.0) - a_t
        if self.prediction_type == "epsilon":
            x0 = (sample - b_t**0.5 * model_output) / a_t**0.5
            eps = model_output
        elif self.prediction_type == "sample":
            x0 = model_output
            eps = (sample - a_t**0.5 * x0) / b_t**0.5
        else:  # v_prediction
            x0 = a_t**0.5 * sample - b_t**0.5 * model_output
            eps = a_t**0.5 * model_output + b_t**0.5 * sample
        if self.clip_sample:
            x0 = np.clip(x0, -self.clip_range, self.clip_range)
        return (a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps).astype(np.float32)


class EulerDiscrete:
    """EulerDiscreteScheduler without stochastic churn (s_churn=0)."""

    def __init__(self, config: dict):
        _check_options("Euler", config)
        self.config = dict(config)
        acp = np.cumprod(1.0 - _betas(config), dtype=np.float32)
        self._train_sigmas = (((1 - acp) / acp) ** 0.5).astype(np.float32)
        self.prediction_type = config.get("prediction_type", "epsilon")
        self.timesteps = np.zeros(0, np.float32)
        self.sigmas = np.zeros(1, np.float32)

    @property
    def init_noise_sigma(self) -> float:
        top = float(self.sigmas.max())
        if self.config.get("timestep_spacing", "linspace") in ("linspace", "trailing"):
            return top
        return (top**2 + 1) ** 0.5

    def set_timesteps(self, steps: int) -> None:
        cfg = dict(self.config)
        cfg.setdefault("timestep_spacing", "linspace")
        self.timesteps = _spaced_timesteps(cfg, steps, integer=False)
        s = np.interp(self.timesteps, np.arange(len(self._train_sigmas)), self._train_sigmas)
        self.sigmas = np.concatenate([s, [0.0]]).astype(np.float32)

    def scale_model_input(self, sample: np.ndarray, index: int) -> np.ndarray:
        sigma = self.sigmas[index]
        return (sample / ((sigma**2 + 1) ** 0.5)).astype(np.float32)

    def step(self, model_output: np.ndarray, index: int, sample: np.ndarray) -> np.ndarray:
        sigma = self.sigmas[index]
        if self.prediction_type == "epsilon":
            x0 = sample - sigma * model_output
        elif self.prediction_type == "sample":
            x0 = model_output
        else:  # v_prediction
            x0 = model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
        derivative = (sample - x0) / sigma
        return (sample + derivative * (self.sigmas[index + 1] - sigma)).astype(np.float32)


SCHEDULERS = {"ddim": DDIM, "euler": EulerDiscrete}


def make_scheduler(config: dict, override: str | None = None):
    """Build the scheduler a config names, or `override` ('ddim', 'euler') from the same config."""
    if override is not None:
        if override not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {override!r}; choose one of {sorted(SCHEDULERS)}")
        return SCHEDULERS[override](config)
    cls = config.get("_class_name")
    if cls not in SUPPORTED:
        raise ModelError(
            f"scheduler {cls!r} is not implemented by edgegen's runtime; it implements {sorted(SUPPORTED)}. "
            f"Pass scheduler='ddim' or 'euler' (CLI: --scheduler) to use one of them with this config."
        )
    return SCHEDULERS[SUPPORTED[cls]](config)


def read_scheduler_config(artifact) -> dict:
    """The artifact's scheduler config, checked against edgegen's declared schema for it."""
    from edgegen.core.manifest_check import check_schema, read_json

    path = artifact.file(artifact.pipeline["scheduler_config"])
    config = read_json(path)
    check_schema(config, "scheduler_config", str(path))
    return config
