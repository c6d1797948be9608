"""The numpy schedulers against diffusers' on the same inputs."""

import numpy as np
import pytest

from edgegen.core import ModelError
from edgegen.runtimes.schedulers import make_scheduler

pytestmark = pytest.mark.torch

CONFIGS = [
    ("DDIMScheduler", {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                       "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}),
    ("DDIMScheduler", {"beta_schedule": "linear", "timestep_spacing": "trailing", "prediction_type": "v_prediction"}),
    ("DDIMScheduler", {"beta_schedule": "squaredcos_cap_v2", "timestep_spacing": "linspace", "clip_sample": True}),
    ("EulerDiscreteScheduler", {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                                "steps_offset": 1, "timestep_spacing": "leading"}),
    ("EulerDiscreteScheduler", {"beta_schedule": "linear", "timestep_spacing": "linspace"}),
    ("EulerDiscreteScheduler", {"beta_schedule": "scaled_linear", "timestep_spacing": "trailing",
                                "prediction_type": "v_prediction"}),
]


@pytest.mark.parametrize("cls_name,options", CONFIGS)
@pytest.mark.parametrize("steps", [7, 25])
def test_matches_diffusers(cls_name, options, steps):
    import diffusers
    import torch

    ref = getattr(diffusers, cls_name)(**options)
    ours = make_scheduler(dict(ref.config, _class_name=cls_name))
    ref.set_timesteps(steps)
    ours.set_timesteps(steps)
    np.testing.assert_allclose(ours.timesteps, ref.timesteps.numpy(), rtol=0, atol=1e-3)
    assert float(ours.init_noise_sigma) == pytest.approx(float(ref.init_noise_sigma), rel=1e-5)

    rng = np.random.default_rng(steps)
    x_ref = torch.from_numpy(rng.standard_normal((1, 4, 8, 8), dtype=np.float32)) * ref.init_noise_sigma
    x_ours = x_ref.numpy().copy()
    for i, t in enumerate(ref.timesteps):
        out = rng.standard_normal((1, 4, 8, 8), dtype=np.float32)
        a = ref.scale_model_input(x_ref, t)
        b = ours.scale_model_input(x_ours, i)
        np.testing.assert_allclose(b, a.numpy(), rtol=1e-4, atol=1e-4)
        x_ref = ref.step(torch.from_numpy(out), t, x_ref).prev_sample
        x_ours = ours.step(out, i, x_ours)
        np.testing.assert_allclose(x_ours, x_ref.numpy(), rtol=1e-4, atol=1e-4)


def test_unsupported_option_is_named():
    with pytest.raises(ModelError, match="use_karras_sigmas=True"):
        make_scheduler({"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": True})


def test_unknown_scheduler_suggests_override():
    cfg = {"_class_name": "PNDMScheduler", "beta_schedule": "scaled_linear"}
    with pytest.raises(ModelError, match="scheduler='ddim' or 'euler'"):
        make_scheduler(cfg)
    assert make_scheduler(cfg, "ddim").init_noise_sigma == 1.0
