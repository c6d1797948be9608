"""LCM, Euler ancestral and DPM-Solver multistep in numpy against diffusers' on the same model
outputs and, for the samplers that add noise, the same noise draws."""

import numpy as np
import pytest

from edgegen.core import ModelError
from edgegen.runtimes.schedulers import make_scheduler

pytestmark = pytest.mark.torch

SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
CONFIGS = [
    ("LCMScheduler", {**SD, "set_alpha_to_one": True, "timestep_scaling": 10.0}),
    ("LCMScheduler", {**SD, "prediction_type": "v_prediction", "original_inference_steps": 30,
                      "set_alpha_to_one": False}),
    ("LCMScheduler", {"beta_schedule": "linear", "prediction_type": "sample", "clip_sample": True}),
    ("EulerAncestralDiscreteScheduler", {**SD, "timestep_spacing": "leading", "steps_offset": 1}),
    ("EulerAncestralDiscreteScheduler", {"beta_schedule": "linear", "timestep_spacing": "linspace"}),
    ("EulerAncestralDiscreteScheduler", {**SD, "timestep_spacing": "trailing", "prediction_type": "v_prediction"}),
    ("DPMSolverMultistepScheduler", {**SD}),
    ("DPMSolverMultistepScheduler", {**SD, "use_karras_sigmas": True}),
    ("DPMSolverMultistepScheduler", {**SD, "use_karras_sigmas": True, "timestep_spacing": "trailing",
                                     "prediction_type": "v_prediction"}),
    ("DPMSolverMultistepScheduler", {"beta_schedule": "linear", "timestep_spacing": "leading", "steps_offset": 1,
                                     "solver_type": "heun"}),
    # (not squaredcos_cap_v2 with Karras sigmas: its unrounded timesteps repeat 998 at the start, and
    # diffusers then starts at the second of them and runs off its sigma table)
    ("DPMSolverMultistepScheduler", {"beta_schedule": "linear", "use_karras_sigmas": True,
                                     "final_sigmas_type": "sigma_min", "lower_order_final": False}),
    ("DPMSolverMultistepScheduler", {"beta_schedule": "squaredcos_cap_v2", "euler_at_final": True}),
    ("DPMSolverMultistepScheduler", {**SD, "algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min",
                                     "prediction_type": "sample"}),
    ("DPMSolverMultistepScheduler", {**SD, "solver_order": 1, "timestep_spacing": "trailing"}),
]


@pytest.mark.parametrize("cls_name,options", CONFIGS)
@pytest.mark.parametrize("steps", [1, 4, 8, 20])
def test_matches_diffusers(cls_name, options, steps):
    import diffusers
    import torch

    ref = getattr(diffusers, cls_name)(**options)
    ours = make_scheduler(dict(ref.config, _class_name=cls_name))
    ref.set_timesteps(steps)
    ours.set_timesteps(steps)
    np.testing.assert_allclose(ours.timesteps, ref.timesteps.numpy(), rtol=0, atol=1e-3)
    if hasattr(ref, "sigmas") and hasattr(ours, "sigmas"):
        np.testing.assert_allclose(ours.sigmas, ref.sigmas.numpy(), rtol=1e-6, atol=1e-6)
    assert float(ours.init_noise_sigma) == pytest.approx(float(ref.init_noise_sigma), rel=1e-5)

    rng = np.random.default_rng(steps)
    x_ref = torch.from_numpy(rng.standard_normal((1, 4, 8, 8), dtype=np.float32)) * ref.init_noise_sigma
    x_ours = x_ref.numpy().copy()
    for i, t in enumerate(ref.timesteps):
        out = rng.standard_normal((1, 4, 8, 8), dtype=np.float32)
        a = ref.scale_model_input(x_ref, t)
        b = ours.scale_model_input(x_ours, i)
        np.testing.assert_allclose(b, a.numpy(), rtol=1e-4, atol=1e-4)
        # the noise diffusers draws inside step(), drawn beforehand from the same generator state
        noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(100 + i)).numpy()
        x_ref = ref.step(torch.from_numpy(out), t, x_ref, generator=torch.Generator().manual_seed(100 + i)
                         ).prev_sample
        x_ours = ours.step(out, i, x_ours, noise=noise if ours.needs_noise else None)
        np.testing.assert_allclose(x_ours, x_ref.numpy(), rtol=1e-4, atol=1e-4)


def test_noise_is_required_where_a_sampler_adds_it():
    sched = make_scheduler({"_class_name": "EulerAncestralDiscreteScheduler"})
    sched.set_timesteps(4)
    x = np.zeros((1, 4, 2, 2), np.float32)
    with pytest.raises(ValueError, match="step_noise"):
        sched.step(x, 0, x)


@pytest.mark.parametrize("config,match", [
    ({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"}, "algorithm_type"),
    ({"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3}, "solver_order=3"),
    ({"_class_name": "DPMSolverMultistepScheduler", "use_lu_lambdas": True}, "use_lu_lambdas"),
    ({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver"}, "sigma_min"),
    ({"_class_name": "EulerAncestralDiscreteScheduler", "prediction_type": "sample"}, "prediction_type 'sample'"),
    ({"_class_name": "LCMScheduler", "thresholding": True}, "thresholding=True"),
])
def test_unsupported_options_are_named(config, match):
    with pytest.raises(ModelError, match=match):
        make_scheduler(config)


def test_lcm_steps_beyond_its_schedule():
    sched = make_scheduler({"_class_name": "LCMScheduler", "original_inference_steps": 8})
    with pytest.raises(ValueError, match="original_inference_steps"):
        sched.set_timesteps(9)


@pytest.mark.parametrize("cls_name,options", [("DDIMScheduler", SD), ("EulerDiscreteScheduler", SD),
                                              ("LCMScheduler", SD), ("EulerAncestralDiscreteScheduler", SD),
                                              ("DPMSolverMultistepScheduler", {**SD, "use_karras_sigmas": True})])
@pytest.mark.parametrize("steps,strength", [(10, 0.6), (4, 0.5), (20, 0.3)])
def test_add_noise_matches_diffusers_img2img_start(cls_name, options, steps, strength):
    """img2img: the image latents noised to the first step that strength keeps, as diffusers' pipeline does."""
    import diffusers
    import torch

    ref = getattr(diffusers, cls_name)(**options)
    ours = make_scheduler(dict(ref.config, _class_name=cls_name))
    ref.set_timesteps(steps)
    ours.set_timesteps(steps)
    start = steps - min(int(steps * strength), steps)
    if hasattr(ref, "set_begin_index"):
        ref.set_begin_index(start)
    rng = np.random.default_rng(steps)
    x0, noise = rng.standard_normal((2, 1, 4, 8, 8), dtype=np.float32)
    want = ref.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), ref.timesteps[start:start + 1]).numpy()
    np.testing.assert_allclose(ours.add_noise(x0, noise, start), want, rtol=1e-5, atol=1e-5)
