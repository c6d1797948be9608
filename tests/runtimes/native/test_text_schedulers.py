"""The C schedulers (runtimes/native/src/schedulers.c) against runtimes/schedulers.py on a grid of configs."""

import itertools
import json
import subprocess

import numpy as np
import pytest

from edgegen.core.errors import ModelError
from edgegen.runtimes.schedulers import make_scheduler

N = 67  # values per tensor


@pytest.fixture(scope="module")
def program(native_program):
    return native_program("test_text_schedulers")


def run_c(program, tmp_path, config, override, steps, triples, image_seq_len=None):
    """triples [steps, 3, N]: sample, model output and the step's noise (used where the scheduler takes it)."""
    cfg, inp, out = tmp_path / "config.json", tmp_path / "in.bin", tmp_path / "out.bin"
    cfg.write_text(json.dumps(config))
    triples.astype(np.float32).tofile(inp)
    extra = [] if image_seq_len is None else [str(image_seq_len)]
    proc = subprocess.run([str(program), str(cfg), override or "-", str(steps), str(N), str(inp), str(out), *extra],
                          capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    if proc.returncode:
        return proc.stderr.strip()
    data = np.fromfile(out, dtype=np.float32)
    count = int(data[0])
    timesteps, sigmas = data[2:2 + count], data[2 + count:3 + 2 * count]
    steps_out = data[3 + 2 * count:].reshape(-1, 2, N)
    return count, float(data[1]), timesteps, sigmas, steps_out


SCHEDULES = [
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    {"beta_schedule": "linear"},
    {"beta_schedule": "squaredcos_cap_v2"},
]
VARIANTS = [
    {"_class_name": "DDIMScheduler", "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1},
    {"_class_name": "DDIMScheduler", "timestep_spacing": "trailing", "prediction_type": "v_prediction"},
    {"_class_name": "DDIMScheduler", "timestep_spacing": "linspace", "prediction_type": "sample",
     "clip_sample_range": 0.5},
    {"_class_name": "DDIMScheduler", "timestep_spacing": "leading", "num_train_timesteps": 500},
    {"_class_name": "EulerDiscreteScheduler", "steps_offset": 1, "timestep_spacing": "leading"},
    {"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "linspace"},
    {"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "trailing", "prediction_type": "v_prediction"},
    {"_class_name": "EulerDiscreteScheduler", "prediction_type": "sample", "use_karras_sigmas": False},
    {"_class_name": "LCMScheduler", "set_alpha_to_one": True},
    {"_class_name": "LCMScheduler", "prediction_type": "v_prediction", "original_inference_steps": 30,
     "set_alpha_to_one": False, "timestep_scaling": 5.0},
    {"_class_name": "LCMScheduler", "prediction_type": "sample", "clip_sample": True, "original_inference_steps": 100},
    {"_class_name": "EulerAncestralDiscreteScheduler", "timestep_spacing": "leading", "steps_offset": 1},
    {"_class_name": "EulerAncestralDiscreteScheduler", "timestep_spacing": "trailing", "prediction_type": "v_prediction"},
    {"_class_name": "DPMSolverMultistepScheduler"},
    {"_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": True},
    {"_class_name": "DPMSolverMultistepScheduler", "use_karras_sigmas": True, "timestep_spacing": "trailing",
     "prediction_type": "v_prediction", "final_sigmas_type": "sigma_min", "lower_order_final": False},
    {"_class_name": "DPMSolverMultistepScheduler", "timestep_spacing": "leading", "steps_offset": 1,
     "solver_type": "heun"},
    {"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min",
     "prediction_type": "sample", "euler_at_final": True},
    {"_class_name": "DPMSolverMultistepScheduler", "solver_order": 1, "timestep_spacing": "trailing",
     "prediction_type": "v_prediction"},
]
GRID = [(dict(s, **v), steps) for (s, v), steps in zip(itertools.product(SCHEDULES, VARIANTS), itertools.cycle([1, 3, 7, 25, 50]))]
# flow matching reads no beta schedule
GRID += [({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0}, 7),
         ({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 1.7, "shift_terminal": 0.05,
           "num_train_timesteps": 700}, 25),
         ({"_class_name": "FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting": True}, 4),
         ({"_class_name": "FlowMatchEulerDiscreteScheduler"}, 1)]


@pytest.mark.parametrize("config,steps", GRID)
@pytest.mark.parametrize("override", [None, "ddim", "euler", "lcm", "euler_a", "dpm", "flow"])
def test_matches_numpy(program, tmp_path, config, steps, override):
    check_against_numpy(program, tmp_path, config, steps, override)


@pytest.mark.parametrize("config", [
    {"use_dynamic_shifting": True},
    {"use_dynamic_shifting": True, "time_shift_type": "linear", "base_shift": 0.3, "max_shift": 2.0},
    {"use_dynamic_shifting": True, "max_image_seq_len": 1024, "shift_terminal": 0.1},
])
@pytest.mark.parametrize("steps,image_seq_len", [(1, 64), (4, 1024), (28, 4096)])
def test_flow_shift_by_image_size_matches_numpy(program, tmp_path, config, steps, image_seq_len):
    config = dict(config, _class_name="FlowMatchEulerDiscreteScheduler")
    check_against_numpy(program, tmp_path, config, steps, None, image_seq_len)


def check_against_numpy(program, tmp_path, config, steps, override, image_seq_len=None):
    try:
        ref = make_scheduler(config, override)
        if image_seq_len is None:
            ref.set_timesteps(steps)
        else:
            ref.set_timesteps(steps, image_seq_len=image_seq_len)
    except (ModelError, ValueError) as e:   # an option this scheduler lacks: the C runtime says the same
        got = run_c(program, tmp_path, config, override, steps, np.zeros((0, 3, N), np.float32), image_seq_len)
        assert got == str(e)
        return
    count = len(ref.timesteps)
    rng = np.random.default_rng(steps)
    triples = rng.standard_normal((count, 3, N), dtype=np.float32)
    triples[:, 0] *= np.float32(ref.init_noise_sigma)
    got = run_c(program, tmp_path, config, override, steps, triples, image_seq_len)
    assert not isinstance(got, str), got
    c_count, init_sigma, timesteps, sigmas, outs = got
    assert c_count == count
    assert np.isfinite(outs).all()      # assert_allclose takes NaN as equal to NaN
    np.testing.assert_allclose(timesteps, np.asarray(ref.timesteps, np.float32), rtol=0, atol=1e-5)
    assert init_sigma == pytest.approx(float(ref.init_noise_sigma), rel=1e-6)
    if hasattr(ref, "sigmas"):
        np.testing.assert_allclose(sigmas, ref.sigmas, rtol=1e-6, atol=1e-6)
    for i in range(count):
        sample, model, noise = triples[i]
        scale = np.asarray(ref.scale_model_input(sample, i))
        np.testing.assert_allclose(outs[i, 0], scale, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(outs[i, 1], ref.step(model, i, sample, noise=noise), rtol=1e-5, atol=1e-5)


BAD = [
    ({"_class_name": "PNDMScheduler"}, None, 10),
    ({}, None, 10),
    ({"_class_name": "DDIMScheduler"}, "dpm3", 10),
    ({"_class_name": "DDIMScheduler", "beta_schedule": "sigmoid"}, None, 10),
    ({"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": True}, None, 10),
    ({"_class_name": "DDIMScheduler", "thresholding": True}, None, 10),
    ({"_class_name": "DDIMScheduler", "trained_betas": [0.1, 0.2]}, None, 10),
    ({"_class_name": "EulerDiscreteScheduler", "interpolation_type": "log_linear"}, None, 10),
    ({"_class_name": "EulerDiscreteScheduler", "final_sigmas_type": "sigma_min"}, None, 10),
    ({"_class_name": "DDIMScheduler", "prediction_type": "flow"}, None, 10),
    ({"_class_name": "DDIMScheduler", "timestep_spacing": "karras"}, None, 10),
    ({"_class_name": "DDIMScheduler"}, None, 0),
    ({"_class_name": "EulerDiscreteScheduler", "num_train_timesteps": 100}, None, 101),
    ({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"}, None, 10),
    ({"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3}, None, 10),
    ({"_class_name": "DPMSolverMultistepScheduler", "solver_type": "bh2"}, None, 10),
    ({"_class_name": "DPMSolverMultistepScheduler", "use_lu_lambdas": True}, None, 10),
    ({"_class_name": "DPMSolverMultistepScheduler", "variance_type": "learned"}, None, 10),
    ({"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -5.1}, None, 10),
    ({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver"}, None, 10),
    ({"_class_name": "DPMSolverMultistepScheduler", "final_sigmas_type": "denoised"}, None, 10),
    ({"_class_name": "DPMSolverMultistepScheduler", "timestep_spacing": "karras", "use_karras_sigmas": True}, None, 10),
    ({"_class_name": "EulerAncestralDiscreteScheduler", "prediction_type": "sample"}, None, 10),
    ({"_class_name": "LCMScheduler", "original_inference_steps": 8}, None, 9),
    ({"_class_name": "LCMScheduler", "original_inference_steps": 2000}, None, 4),
    ({"_class_name": "LCMScheduler", "thresholding": True}, None, 4),
    ({"_class_name": "FlowMatchEulerDiscreteScheduler", "invert_sigmas": True}, None, 4),
    ({"_class_name": "FlowMatchEulerDiscreteScheduler", "stochastic_sampling": 1}, None, 4),
    ({"_class_name": "FlowMatchEulerDiscreteScheduler", "time_shift_type": "cubic"}, None, 4),
    ({"_class_name": "FlowMatchEulerDiscreteScheduler", "time_shift_type": 3}, None, 4),
    ({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": -1}, None, 4),
    ({"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 0}, None, 4),
    ({"_class_name": "FlowMatchEulerDiscreteScheduler", "use_karras_sigmas": True}, None, 4),
    ({"_class_name": "FlowMatchEulerDiscreteScheduler", "shift_terminal": 0.1}, None, 1),
    ({"_class_name": "FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting": True,
      "base_image_seq_len": 512, "max_image_seq_len": 512}, None, 4),
    ({"_class_name": "FlowMatchEulerDiscreteScheduler"}, "lcm", 4),
    ({"_class_name": "EulerDiscreteScheduler"}, "flow", 4),
    ({}, "flow", 4),
]


@pytest.mark.parametrize("config,override,steps", BAD)
def test_same_errors(program, tmp_path, config, override, steps):
    with pytest.raises((ModelError, ValueError)) as info:
        ref = make_scheduler(config, override)
        ref.set_timesteps(steps)
    got = run_c(program, tmp_path, config, override, steps, np.zeros((0, 2, N), np.float32))
    assert got == str(info.value)


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", '{"_class_name": "DDIMScheduler", "beta_start": "x"}',
                                  '{"_class_name": "DDIMScheduler", "num_train_timesteps": 1e12}', "\x00\xff"])
def test_bad_configs_give_an_error(program, tmp_path, text):
    cfg, out = tmp_path / "config.json", tmp_path / "out.bin"
    cfg.write_bytes(text.encode("latin-1"))
    (tmp_path / "in.bin").write_bytes(b"")
    proc = subprocess.run([str(program), str(cfg), "-", "10", "4", str(tmp_path / "in.bin"), str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.startswith("scheduler config: "), proc
