"""FlowMatchEulerDiscreteScheduler (SD3, FLUX) in numpy against diffusers' on the same model outputs,
with a static shift, a resolution-dependent one (both time-shift types) and shift_terminal."""

import numpy as np
import pytest

from edgegen.core import ModelError
from edgegen.runtimes.schedulers import flow_shift_mu, make_scheduler

pytestmark = pytest.mark.torch

FLOW = "FlowMatchEulerDiscreteScheduler"
CONFIGS = [
    {},
    {"shift": 3.0},                                          # SD3's
    {"shift": 3.0, "shift_terminal": 0.02},
    {"use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15},   # FLUX's
    {"use_dynamic_shifting": True, "time_shift_type": "linear", "base_image_seq_len": 64},
    {"num_train_timesteps": 500, "shift": 1.7},
]


def _pair(options, steps, image_seq_len):
    import diffusers

    ref = diffusers.FlowMatchEulerDiscreteScheduler(**options)
    ours = make_scheduler(dict(ref.config, _class_name=FLOW))
    mu = flow_shift_mu(dict(ref.config), image_seq_len) if options.get("use_dynamic_shifting") else None
    ref.set_timesteps(steps, mu=mu)
    ours.set_timesteps(steps, image_seq_len=image_seq_len)
    return ref, ours


@pytest.mark.parametrize("options", CONFIGS)
@pytest.mark.parametrize("steps,image_seq_len", [(2, 256), (4, 1024), (28, 4096)])
def test_matches_diffusers(options, steps, image_seq_len):
    import torch

    ref, ours = _pair(options, steps, image_seq_len)
    np.testing.assert_allclose(ours.timesteps, ref.timesteps.numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(ours.sigmas, ref.sigmas.numpy(), rtol=1e-6, atol=1e-7)
    assert ours.init_noise_sigma == 1.0   # diffusers has none: its pipelines start from unscaled noise
    rng = np.random.default_rng(steps)
    x_ours = rng.standard_normal((1, 4, 8, 8), dtype=np.float32)
    x_ref = torch.from_numpy(x_ours.copy())
    for i, t in enumerate(ref.timesteps):
        out = rng.standard_normal((1, 4, 8, 8), dtype=np.float32)
        np.testing.assert_array_equal(ours.scale_model_input(x_ours, i), x_ours)   # diffusers' has none
        x_ref = ref.step(torch.from_numpy(out), t, x_ref).prev_sample
        x_ours = ours.step(out, i, x_ours)
        np.testing.assert_allclose(x_ours, x_ref.numpy(), rtol=1e-6, atol=1e-6)


def test_the_shift_grows_with_the_image():
    """FLUX's dynamic shift keeps larger images noisier for longer: every middle sigma rises with the
    token count (and mu is the pipeline's line through (256, 0.5) and (4096, 1.15))."""
    assert flow_shift_mu({}, 256) == pytest.approx(0.5) and flow_shift_mu({}, 4096) == pytest.approx(1.15)
    small, big = (make_scheduler({"_class_name": FLOW, "use_dynamic_shifting": True}) for _ in range(2))
    small.set_timesteps(8, image_seq_len=256)
    big.set_timesteps(8, image_seq_len=4096)
    assert (big.sigmas[1:-1] > small.sigmas[1:-1]).all()


@pytest.mark.parametrize("steps,strength", [(10, 0.6), (4, 0.5)])
def test_add_noise_matches_diffusers_img2img_start(steps, strength):
    import torch

    ref, ours = _pair({"shift": 3.0}, steps, None)
    start = steps - int(steps * strength)
    ref.set_begin_index(start)
    rng = np.random.default_rng(steps)
    x0, noise = rng.standard_normal((2, 1, 4, 8, 8), dtype=np.float32)
    want = ref.scale_noise(torch.from_numpy(x0), ref.timesteps[start:start + 1], torch.from_numpy(noise)).numpy()
    np.testing.assert_allclose(ours.add_noise(x0, noise, start), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("config,override,steps,match", [
    ({"_class_name": FLOW, "invert_sigmas": True}, None, 4, "invert_sigmas=True is not implemented"),
    ({"_class_name": FLOW, "stochastic_sampling": True}, None, 4, "stochastic_sampling=True"),
    ({"_class_name": FLOW, "use_karras_sigmas": True}, None, 4, "use_karras_sigmas=True"),
    ({"_class_name": FLOW, "time_shift_type": "cubic"}, None, 4, "time_shift_type 'cubic'"),
    ({"_class_name": FLOW, "shift": 0}, None, 4, "shift must be positive"),
    ({"_class_name": FLOW, "use_dynamic_shifting": True}, None, 4, "pass set_timesteps"),
    ({"_class_name": FLOW, "shift_terminal": 0.1}, None, 1, "at least 2 steps"),
    ({"_class_name": FLOW}, "euler", 4, "trained for flow matching"),
    ({"_class_name": "DDIMScheduler"}, "flow", 4, "samples flow-matching models"),
])
def test_unsupported_and_mismatched_are_named(config, override, steps, match):
    with pytest.raises((ModelError, ValueError), match=match):
        make_scheduler(config, override).set_timesteps(steps)
