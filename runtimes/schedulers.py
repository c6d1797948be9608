"""Denoising schedulers in numpy, configured from a diffusers scheduler config.

They reproduce diffusers' DDIMScheduler and EulerDiscreteScheduler (deterministic
settings), LCMScheduler, EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler
(DPM-Solver++ 2M, with or without Karras sigmas) and FlowMatchEulerDiscreteScheduler (the
rectified-flow sampler of SD3 and FLUX, with its static or resolution-dependent shift) so that
an artifact runs without torch.
Options they do not implement raise an error that names the option, instead of silently
sampling differently.

The step index, not the timestep value, says where a step is (so img2img starts at an index).
Samplers that add fresh noise during the loop (LCM, Euler ancestral) have `needs_noise = True`
and take it as `step(..., noise=)`: the pipeline draws it from the seed (noise.step_noise),
so that the native runtime and `validate` can give diffusers the very same draws. Multistep
samplers (DPM-Solver) keep their history between calls; `set_timesteps` clears it.
"""

from __future__ import annotations

import math

import numpy as np

from edgegen.core.errors import ModelError

SUPPORTED = {"DDIMScheduler": "ddim", "EulerDiscreteScheduler": "euler", "LCMScheduler": "lcm",
             "EulerAncestralDiscreteScheduler": "euler_a", "DPMSolverMultistepScheduler": "dpm",
             "FlowMatchEulerDiscreteScheduler": "flow"}
FLOW_CLASS = "FlowMatchEulerDiscreteScheduler"

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


# diffusers' defaults of the beta schedule where a scheduler's differ from DDIM's (a config written
# by diffusers holds every key; these matter for hand-written ones)
_LCM_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def _betas(config: dict, defaults: dict | None = None) -> np.ndarray:
    config = {**(defaults or {}), **config}
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


def _alphas_cumprod(config: dict, defaults: dict | None = None) -> np.ndarray:
    """float32 alphas_cumprod accumulated in float64, as torch.cumprod does it for diffusers (a float32
    running product drifts by up to 1e-5 relative near the end of a cosine schedule)."""
    alphas = np.float32(1.0) - _betas(config, defaults)
    return np.cumprod(alphas.astype(np.float64)).astype(np.float32)


def _noised(alpha_cumprod, x0: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """x0 at a timestep whose alphas_cumprod is `alpha_cumprod` (DDPM's forward process)."""
    a = np.float32(alpha_cumprod)
    return (a**0.5 * x0 + (np.float32(1.0) - a) ** 0.5 * noise).astype(np.float32)


def _check_options(kind: str, config: dict, allowed: tuple = ()) -> None:
    """`allowed`: options of _UNSUPPORTED_OPTIONS that this scheduler implements (it checks their values)."""
    for key, default in _UNSUPPORTED_OPTIONS.items():
        if key in allowed:
            continue
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

    needs_noise = False

    def __init__(self, config: dict):
        _check_options("DDIM", config)
        self.config = dict(config)
        self.num_train_timesteps = int(config.get("num_train_timesteps", 1000))
        self.alphas_cumprod = _alphas_cumprod(config)
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

    def add_noise(self, x0: np.ndarray, noise: np.ndarray, index: int) -> np.ndarray:
        """x0 noised to the timestep of step `index` (img2img's first step), as diffusers' add_noise."""
        return _noised(self.alphas_cumprod[int(self.timesteps[index])], x0, noise)

    def step(self, model_output: np.ndarray, index: int, sample: np.ndarray, noise=None) -> np.ndarray:
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

    needs_noise = False

    def __init__(self, config: dict):
        _check_options("Euler", config)
        self.config = dict(config)
        acp = _alphas_cumprod(config)
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

    def add_noise(self, x0: np.ndarray, noise: np.ndarray, index: int) -> np.ndarray:
        """x0 noised to sigma of step `index` (img2img's first step), as diffusers' add_noise."""
        return (x0 + noise * self.sigmas[index]).astype(np.float32)

    def step(self, model_output: np.ndarray, index: int, sample: np.ndarray, noise=None) -> np.ndarray:
        sigma = self.sigmas[index]
        if self.prediction_type == "epsilon":
            x0 = sample - sigma * model_output
        elif self.prediction_type == "sample":
            x0 = model_output
        else:  # v_prediction
            x0 = model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
        derivative = (sample - x0) / sigma
        return (sample + derivative * (self.sigmas[index + 1] - sigma)).astype(np.float32)


def _need_noise(kind: str, noise) -> np.ndarray:
    if noise is None:
        raise ValueError(f"the {kind} scheduler adds noise at each step: pass step(..., noise=) drawn with "
                         f"edgegen.runtimes.noise.step_noise(seed, index, shape)")
    return np.asarray(noise, np.float32)


class LCM:
    """LCMScheduler: the consistency-model boundary condition on a DDIM-like x0, then fresh noise
    to the next timestep of the LCM schedule (none after the last)."""

    needs_noise = True

    def __init__(self, config: dict):
        _check_options("LCM", config)
        self.config = dict(config)
        self.num_train_timesteps = int(config.get("num_train_timesteps", 1000))
        self.alphas_cumprod = _alphas_cumprod(config, _LCM_BETAS)
        self.final_alpha_cumprod = 1.0 if config.get("set_alpha_to_one", True) else float(self.alphas_cumprod[0])
        self.original_steps = int(config.get("original_inference_steps", 50))
        self.timestep_scaling = float(config.get("timestep_scaling", 10.0))
        self.prediction_type = config.get("prediction_type", "epsilon")
        self.clip_sample = bool(config.get("clip_sample", False))
        self.clip_range = float(config.get("clip_sample_range", 1.0))
        self.init_noise_sigma = 1.0
        self.timesteps = np.zeros(0, np.int64)

    def set_timesteps(self, steps: int) -> None:
        n, orig = self.num_train_timesteps, self.original_steps
        if orig > n:
            raise ModelError(f"LCM original_inference_steps {orig} is more than num_train_timesteps {n}; "
                             f"fix scheduler_config.json")
        if steps < 1 or steps > n:
            raise ValueError(f"num_inference_steps must be in 1..{n}, got {steps}")
        if steps > orig:
            raise ValueError(f"num_inference_steps must be at most LCM's original_inference_steps ({orig}), "
                             f"got {steps}")
        # LCM's distillation schedule, every k-th training step, then `steps` of them evenly by index
        origin = (np.arange(1, orig + 1) * (n // orig) - 1)[::-1]
        picks = np.floor(np.linspace(0, len(origin), num=steps, endpoint=False)).astype(np.int64)
        self.timesteps = origin[picks].astype(np.int64)

    def scale_model_input(self, sample: np.ndarray, index: int) -> np.ndarray:
        return sample

    def add_noise(self, x0: np.ndarray, noise: np.ndarray, index: int) -> np.ndarray:
        """x0 noised to the timestep of step `index` (img2img's first step), as diffusers' add_noise."""
        return _noised(self.alphas_cumprod[int(self.timesteps[index])], x0, noise)

    def step(self, model_output: np.ndarray, index: int, sample: np.ndarray, noise=None) -> np.ndarray:
        t = int(self.timesteps[index])
        last = index == len(self.timesteps) - 1
        prev = t if last else int(self.timesteps[index + 1])
        a_t = np.float32(self.alphas_cumprod[t])
        a_prev = np.float32(self.alphas_cumprod[prev] if prev >= 0 else self.final_alpha_cumprod)
        b_t = np.float32(1.0) - a_t
        scaled = np.float32(t) * np.float32(self.timestep_scaling)
        c_skip = np.float32(0.25) / (scaled**2 + np.float32(0.25))
        c_out = scaled / (scaled**2 + np.float32(0.25)) ** np.float32(0.5)
        if self.prediction_type == "epsilon":
            x0 = (sample - b_t**0.5 * model_output) / a_t**0.5
        elif self.prediction_type == "sample":
            x0 = model_output
        else:  # v_prediction
            x0 = a_t**0.5 * sample - b_t**0.5 * model_output
        if self.clip_sample:
            x0 = np.clip(x0, -self.clip_range, self.clip_range)
        denoised = c_out * x0 + c_skip * sample
        if last:
            return denoised.astype(np.float32)
        noise = _need_noise("LCM", noise)
        return (a_prev**0.5 * denoised + (np.float32(1.0) - a_prev) ** 0.5 * noise).astype(np.float32)


class EulerAncestral(EulerDiscrete):
    """EulerAncestralDiscreteScheduler: an Euler step down to sigma_down, then noise of sigma_up."""

    needs_noise = True

    def __init__(self, config: dict):
        super().__init__(config)
        if self.prediction_type == "sample":
            raise ModelError("prediction_type 'sample' is not implemented by EulerAncestralDiscreteScheduler "
                             "(diffusers neither); use epsilon or v_prediction, or another scheduler.")

    def step(self, model_output: np.ndarray, index: int, sample: np.ndarray, noise=None) -> np.ndarray:
        sigma, sigma_to = self.sigmas[index], self.sigmas[index + 1]
        if self.prediction_type == "epsilon":
            x0 = sample - sigma * model_output
        else:  # v_prediction
            x0 = model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
        sigma_up = (sigma_to**2 * (sigma**2 - sigma_to**2) / sigma**2) ** 0.5
        # diffusers' formula gives NaN where sigma_to/sigma is under float32's epsilon (a cosine schedule's
        # first step from sigma ~2e4): sigma_up rounds to sigma_to, and the difference may round below zero
        sigma_down = max(sigma_to**2 - sigma_up**2, 0) ** 0.5
        prev = sample + (sample - x0) / sigma * (sigma_down - sigma)
        return (prev + _need_noise("Euler ancestral", noise) * sigma_up).astype(np.float32)


class DPMSolverMultistep:
    """DPMSolverMultistepScheduler, deterministic: DPM-Solver++ (or DPM-Solver) of order 1 or 2,
    midpoint or heun, on the spaced or the Karras sigmas; the last steps drop to first order as
    diffusers' lower_order_final / euler_at_final / final_sigmas_type say."""

    needs_noise = False
    _ALGORITHMS = ("dpmsolver++", "dpmsolver")

    def __init__(self, config: dict):
        _check_options("DPM-Solver", config, allowed=("use_karras_sigmas", "final_sigmas_type"))
        self.config = dict(config)
        get = config.get
        checks = {"algorithm_type": (get("algorithm_type", "dpmsolver++"), self._ALGORITHMS),
                  "solver_order": (get("solver_order", 2), (1, 2)),
                  "solver_type": (get("solver_type", "midpoint"), ("midpoint", "heun")),
                  "final_sigmas_type": (get("final_sigmas_type", "zero"), ("zero", "sigma_min")),
                  "variance_type": (get("variance_type"), (None,)),
                  "use_lu_lambdas": (get("use_lu_lambdas", False), (False,)),
                  "use_flow_sigmas": (get("use_flow_sigmas", False), (False,)),
                  "lambda_min_clipped": (get("lambda_min_clipped", -math.inf), (-math.inf,))}
        for key, (value, allowed) in checks.items():
            if value not in allowed:
                raise ModelError(f"DPM-Solver scheduler option {key}={value!r} is not implemented by edgegen's "
                                 f"runtime (it supports {' or '.join(map(repr, allowed))}); change it in "
                                 f"scheduler_config.json or pick another scheduler.")
        self.algorithm = get("algorithm_type", "dpmsolver++")
        if self.algorithm == "dpmsolver" and get("final_sigmas_type", "zero") == "zero":
            raise ModelError("DPM-Solver: algorithm_type 'dpmsolver' needs final_sigmas_type 'sigma_min' "
                             "(diffusers refuses 'zero' too); change it in scheduler_config.json.")
        self.order = int(get("solver_order", 2))
        self.heun = get("solver_type", "midpoint") == "heun"
        self.karras = bool(get("use_karras_sigmas", False))
        self.final_zero = get("final_sigmas_type", "zero") == "zero"
        self.lower_order_final = bool(get("lower_order_final", True))
        self.euler_at_final = bool(get("euler_at_final", False))
        self.prediction_type = get("prediction_type", "epsilon")
        self.num_train_timesteps = int(get("num_train_timesteps", 1000))
        self.alphas_cumprod = _alphas_cumprod(config)
        self._train_sigmas = (((1 - self.alphas_cumprod) / self.alphas_cumprod) ** 0.5).astype(np.float32)
        self.init_noise_sigma = 1.0
        self.timesteps = np.zeros(0, np.int64)
        self.sigmas = np.zeros(1, np.float32)
        self._history: list = []

    def _spaced(self, steps: int) -> np.ndarray:
        """DPM-Solver's own spacing: it spaces steps + 1 points and drops the last (not _spaced_timesteps)."""
        n = self.num_train_timesteps
        if steps < 1 or steps > n:
            raise ValueError(f"num_inference_steps must be in 1..{n}, got {steps}")
        spacing = self.config.get("timestep_spacing", "linspace")
        if spacing == "linspace":
            return np.linspace(0, n - 1, steps + 1).round()[::-1][:-1].astype(np.int64)
        if spacing == "leading":
            ratio = n // (steps + 1)
            t = (np.arange(0, steps + 1) * ratio).round()[::-1][:-1].astype(np.int64)
            return t + int(self.config.get("steps_offset", 0))
        if spacing == "trailing":
            return np.arange(n, 0, -n / steps).round().astype(np.int64) - 1
        raise ModelError(f"timestep_spacing {spacing!r} is not supported; use linspace, leading or trailing.")

    def set_timesteps(self, steps: int) -> None:
        timesteps = self._spaced(steps)
        train = self._train_sigmas
        if self.karras:
            log_sigmas = np.log(train)
            sigma_min, sigma_max = float(train[0]), float(train[-1])
            ramp = np.linspace(0, 1, steps)
            rho = 7.0
            sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
            timesteps = _sigma_to_t(sigmas, log_sigmas)
            if self.config.get("beta_schedule", "linear") != "squaredcos_cap_v2":
                timesteps = timesteps.round()
        else:
            sigmas = np.interp(timesteps, np.arange(len(train)), train)
        last = float(train[0]) if not self.final_zero else 0.0
        self.sigmas = np.concatenate([sigmas, [last]]).astype(np.float32)
        self.timesteps = timesteps.astype(np.int64)
        self._history = []

    def scale_model_input(self, sample: np.ndarray, index: int) -> np.ndarray:
        return sample

    def add_noise(self, x0: np.ndarray, noise: np.ndarray, index: int) -> np.ndarray:
        """x0 noised to sigma of step `index` (img2img's first step), as diffusers' add_noise."""
        alpha, sigma = self._alpha_sigma(self.sigmas[index])
        return (alpha * x0 + sigma * noise).astype(np.float32)

    @staticmethod
    def _alpha_sigma(sigma):
        alpha = np.float32(1.0) / (sigma**2 + np.float32(1.0)) ** np.float32(0.5)
        return alpha, sigma * alpha

    def _lambda(self, sigma):
        alpha, s = self._alpha_sigma(sigma)
        with np.errstate(divide="ignore"):
            return alpha, s, np.log(alpha) - np.log(s)

    def _convert(self, model_output, index, sample):
        alpha, sigma = self._alpha_sigma(self.sigmas[index])
        if self.algorithm == "dpmsolver++":
            if self.prediction_type == "epsilon":
                return (sample - sigma * model_output) / alpha
            if self.prediction_type == "sample":
                return model_output
            return alpha * sample - sigma * model_output
        if self.prediction_type == "epsilon":
            return model_output
        if self.prediction_type == "sample":
            return (sample - alpha * model_output) / sigma
        return alpha * model_output + sigma * sample

    def step(self, model_output: np.ndarray, index: int, sample: np.ndarray, noise=None) -> np.ndarray:
        count = len(self.timesteps)
        final = index == count - 1 and (self.euler_at_final or (self.lower_order_final and count < 15)
                                        or self.final_zero)
        m0 = self._convert(np.asarray(model_output, np.float32), index, sample)
        first_order = self.order == 1 or not self._history or final
        alpha_t, sigma_t, lambda_t = self._lambda(self.sigmas[index + 1])
        alpha_s, sigma_s, lambda_s = self._lambda(self.sigmas[index])
        h = lambda_t - lambda_s
        with np.errstate(over="ignore"):
            em, ep = np.exp(-h), np.exp(h)
        plus = self.algorithm == "dpmsolver++"
        if plus:
            x = (sigma_t / sigma_s) * sample - (alpha_t * (em - np.float32(1.0))) * m0
        else:
            x = (alpha_t / alpha_s) * sample - (sigma_t * (ep - np.float32(1.0))) * m0
        if not first_order:
            _, _, lambda_s1 = self._lambda(self.sigmas[index - 1])
            with np.errstate(divide="ignore", invalid="ignore"):   # h = 0 where Karras repeats sigma_min
                r0 = (lambda_s - lambda_s1) / h
                d1 = (np.float32(1.0) / r0) * (m0 - self._history[-1])
            if plus:
                coef = (alpha_t * ((em - np.float32(1.0)) / h + np.float32(1.0)) if self.heun
                        else np.float32(-0.5) * (alpha_t * (em - np.float32(1.0))))
            else:
                coef = (-(sigma_t * ((ep - np.float32(1.0)) / h - np.float32(1.0))) if self.heun
                        else np.float32(-0.5) * (sigma_t * (ep - np.float32(1.0))))
            x = x + coef * d1
        self._history = [m0]
        return np.asarray(x, np.float32)


def flow_shift_mu(config: dict, image_seq_len: int) -> float:
    """The resolution-dependent shift exponent mu that SD3's and FLUX's pipelines pass to
    set_timesteps: linear in the image's token count between (base_image_seq_len, base_shift) and
    (max_image_seq_len, max_shift) of the scheduler config."""
    base_len = int(config.get("base_image_seq_len", 256))
    max_len = int(config.get("max_image_seq_len", 4096))
    base_shift = float(config.get("base_shift", 0.5))
    max_shift = float(config.get("max_shift", 1.15))
    if max_len == base_len:
        raise ModelError("scheduler config: max_image_seq_len must differ from base_image_seq_len "
                         f"(both {base_len}); fix scheduler_config.json")
    m = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * m + (base_shift - m * base_len)


class FlowMatchEuler:
    """FlowMatchEulerDiscreteScheduler: the model predicts the velocity (noise - x0) and each step
    moves the sample along it from sigma to the next sigma. Sigmas are shifted towards the noisy end
    by `shift`, or by exp(mu) from the image size (use_dynamic_shifting; pass image_seq_len)."""

    needs_noise = False
    init_noise_sigma = 1.0

    def __init__(self, config: dict):
        _check_options("FlowMatchEuler", config)
        for key in ("invert_sigmas", "stochastic_sampling"):
            if config.get(key):
                raise ModelError(f"FlowMatchEuler scheduler option {key}={config[key]!r} is not implemented by "
                                 f"edgegen's runtime (it supports {key}=False); change it in scheduler_config.json.")
        self.time_shift_type = config.get("time_shift_type", "exponential")
        if self.time_shift_type not in ("exponential", "linear"):
            raise ModelError(f"FlowMatchEuler time_shift_type {self.time_shift_type!r} is not supported; "
                             f"use exponential or linear.")
        self.config = dict(config)
        self.num_train_timesteps = int(config.get("num_train_timesteps", 1000))
        if not 1 <= self.num_train_timesteps <= 100000:
            raise ModelError("scheduler config: num_train_timesteps must be in 1..100000")
        self.shift = float(config.get("shift", 1.0))
        if not self.shift > 0:
            raise ModelError("scheduler config: shift must be positive; fix scheduler_config.json")
        self.dynamic = bool(config.get("use_dynamic_shifting", False))
        self.shift_terminal = config.get("shift_terminal")
        n = self.num_train_timesteps
        train = np.linspace(1, n, n, dtype=np.float32)[::-1] / np.float32(n)
        if not self.dynamic:
            train = self._shifted(train)
        self.sigma_max, self.sigma_min = float(train[0]), float(train[-1])
        self.timesteps = np.zeros(0, np.float32)
        self.sigmas = np.zeros(1, np.float32)

    def _shifted(self, sigmas: np.ndarray) -> np.ndarray:
        return self.shift * sigmas / (1 + (self.shift - 1) * sigmas)

    def set_timesteps(self, steps: int, image_seq_len: int | None = None) -> None:
        n = self.num_train_timesteps
        if steps < 1 or steps > n:
            raise ValueError(f"num_inference_steps must be in 1..{n}, got {steps}")
        sigmas = np.linspace(self.sigma_max * n, self.sigma_min * n, steps) / n
        if self.dynamic:
            if image_seq_len is None:
                raise ValueError("this flow-matching scheduler shifts by the image size (use_dynamic_shifting): "
                                 "pass set_timesteps(steps, image_seq_len=)")
            mu = flow_shift_mu(self.config, image_seq_len)
            scale = math.exp(mu) if self.time_shift_type == "exponential" else mu
            sigmas = scale / (scale + (1 / sigmas - 1))
        else:
            sigmas = self._shifted(sigmas)
        if self.shift_terminal:
            one_minus = 1 - sigmas
            if one_minus[-1] == 0:   # diffusers divides by it and returns NaN sigmas
                raise ValueError(f"shift_terminal stretches the schedule from its last sigma, which is 1 at "
                                 f"{steps} step(s); run at least 2 steps")
            sigmas = 1 - one_minus / (one_minus[-1] / (1 - float(self.shift_terminal)))
        sigmas = sigmas.astype(np.float32)
        self.timesteps = sigmas * np.float32(n)
        self.sigmas = np.concatenate([sigmas, np.zeros(1, np.float32)])

    def scale_model_input(self, sample: np.ndarray, index: int) -> np.ndarray:
        return np.asarray(sample, np.float32)

    def add_noise(self, x0: np.ndarray, noise: np.ndarray, index: int) -> np.ndarray:
        """x0 moved to sigma of step `index` along the straight path to the noise (diffusers' scale_noise)."""
        sigma = self.sigmas[index]
        return (sigma * noise + (np.float32(1.0) - sigma) * x0).astype(np.float32)

    def step(self, model_output: np.ndarray, index: int, sample: np.ndarray, noise=None) -> np.ndarray:
        dt = self.sigmas[index + 1] - self.sigmas[index]
        return (np.asarray(sample, np.float32) + dt * model_output).astype(np.float32)


def _sigma_to_t(sigmas: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """Fractional training timesteps of `sigmas`, interpolating log-sigma between its neighbours."""
    log_sigma = np.log(np.maximum(sigmas, 1e-10))
    dists = log_sigma - log_sigmas[:, np.newaxis]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    lo, hi = log_sigmas[low], log_sigmas[low + 1]
    w = np.clip((lo - log_sigma) / (lo - hi), 0, 1)
    return (1 - w) * low + w * (low + 1)


SCHEDULERS = {"ddim": DDIM, "euler": EulerDiscrete, "lcm": LCM, "euler_a": EulerAncestral,
              "dpm": DPMSolverMultistep, "flow": FlowMatchEuler}


def _check_family(config: dict, override: str) -> None:
    """A flow-matching model predicts a velocity and a DDPM one noise (or x0, v): a sampler of the
    other family would run without error and return noise, so the override is refused."""
    flow_model = config.get("_class_name") == FLOW_CLASS
    if flow_model and override != "flow":
        raise ValueError(f"scheduler {override!r} samples noise-prediction models, and this model was trained for "
                         f"flow matching ({FLOW_CLASS}); use 'flow'")
    if override == "flow" and not flow_model:
        raise ValueError(f"scheduler 'flow' samples flow-matching models, and this config's "
                         f"{config.get('_class_name')!r} is a noise-prediction model's; use one of "
                         f"['ddim', 'dpm', 'euler', 'euler_a', 'lcm']")


def make_scheduler(config: dict, override: str | None = None):
    """Build the scheduler a config names, or `override` (a key of SCHEDULERS) from the same config."""
    if override is not None:
        if override not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {override!r}; choose one of {sorted(SCHEDULERS)}")
        _check_family(config, override)
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
