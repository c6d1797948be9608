"""GPU targets end to end: a pipeline built to kernel sources + launch plans, run by the
opencl (PoCL here) and webgpu (lavapipe here) runtimes, checked against torch; Metal sources
checked for structure."""

import json
import re

import pytest

from edgegen.core.errors import ArtifactError, BackendUnavailableError
from edgegen.core.launch_plan import Interval, check_plan, plan_arena

PSNR_GATE_DB = 35.0


def test_arena_reuses_memory_of_tensors_whose_lifetimes_do_not_overlap():
    items = [Interval("a", 1000, 0, 1), Interval("b", 3000, 1, 2), Interval("c", 1000, 2, 3),
             Interval("d", 2500, 3, 4), Interval("e", 10, -1, 5)]
    offsets, total = plan_arena(items)
    assert all(o % 256 == 0 for o in offsets.values())
    for x in items:
        for y in items:
            if x.name < y.name and x.first <= y.last and y.first <= x.last:     # alive together: disjoint
                assert offsets[x.name] + x.nbytes <= offsets[y.name] or offsets[y.name] + y.nbytes <= offsets[x.name]
    assert total < sum(-(-i.nbytes // 256) * 256 for i in items)    # something was reused
    assert total >= 3072 + 1024 + 256                                # b, a or c, e are alive at once


def _build(model_dir, out, target):
    import edgegen

    return edgegen.build(model_dir, out, target=target)


def _validate(artifact, model_dir, steps=None):
    from edgegen.validation import validate

    return validate(artifact, model_dir, **({"num_inference_steps": steps} if steps else {}))


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.tvm
@pytest.mark.parametrize("target", [pytest.param("adreno", marks=pytest.mark.opencl),
                                    pytest.param("webgpu", marks=pytest.mark.webgpu)])
def test_tiny_sd_runs_end_to_end_through_the_plan_runtime(tiny_sd_dir, tmp_path, target):
    report = _build(tiny_sd_dir, tmp_path / target, target)
    manifest = json.loads((tmp_path / target / "manifest.json").read_text())
    unet = manifest["components"]["unet"]
    assert unet["backend"] == ("opencl" if target == "adreno" else "webgpu")
    kernels = unet["info"]["edgegen_kernels"]
    assert kernels["edgegen.group_norm_silu"] > 0
    if target == "webgpu":      # no roofline device: every eligible conv takes Winograd
        assert kernels["edgegen.winograd_conv2d"] > 0
    else:                       # Adreno 740's roofline: the tiny UNet's convs are memory-bound, direct is faster
        weighed = [c for c in unet["info"]["convolutions"] if "roofline on adreno-740 fp16" in c["reason"]]
        assert weighed and all(c["kernel"] == "direct" for c in weighed)
    assert kernels["edgegen.flash_attention"] > 0 and unet["info"]["feed_forward"]
    assert unet["info"]["arena_bytes"] < unet["info"]["arena_bytes_without_reuse"] / 2
    assert all(c["psnr_db"] >= 40 for c in report.components.values())
    result = _validate(tmp_path / target, tiny_sd_dir, steps=10)
    assert result.image_psnr_db >= PSNR_GATE_DB, result.image_psnr_db


@pytest.fixture(scope="module")
def digits_mali(digits_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu") / "mali"
    _build(digits_model_dir, out, "mali")
    return out


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.tvm
@pytest.mark.opencl
def test_digits_generator_runs_on_mali_through_opencl(digits_model_dir, digits_mali):
    result = _validate(digits_mali, digits_model_dir)
    assert result.image_psnr_db >= PSNR_GATE_DB, result.image_psnr_db


@pytest.mark.tvm
def test_metal_plan_names_kernels_its_source_defines_and_metal_refuses_to_run_here(tmp_path):
    """Metal sources cannot be compiled or run on Linux: check their structure, on GroupNorm+SiLU
    and a Winograd convolution (whose GEMM takes dlight's Metal simdgroup rule)."""
    import numpy as np
    from tvm import relax

    from edgegen.converters import gpu
    from edgegen.converters.lower import Lowered
    from edgegen.core.specs import TensorSpec
    from edgegen.core.targets import get_target
    from edgegen.runtimes import get_backend

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 32, 8, 8), "float32"))
    g, b = (relax.Var(n, relax.TensorType((32,), "float32")) for n in ("g", "b"))
    w = relax.Var("w", relax.TensorType((16, 32, 3, 3), "float32"))
    with bb.function("main", [x, g, b, w]):
        with bb.dataflow():
            y = relax.op.nn.silu(relax.op.nn.group_norm(x, g, b, num_groups=8, channel_axis=1, axes=[2, 3]))
            out = bb.emit_output(relax.op.nn.conv2d(y, w, padding=1))
        bb.emit_func_output(out)
    weights = {"g": np.ones(32, np.float32), "b": np.zeros(32, np.float32), "w": np.ones((16, 32, 3, 3), np.float32)}
    metal = get_target("metal")
    built = gpu.lower_to_plan(Lowered(bb.get(), [TensorSpec.of(n, a) for n, a in weights.items()], weights), ["x"],
                              ["out"], metal.tvm_target, gpu.limits_of(metal.profile), "metal")
    assert built.plan["language"] == "metal" and len(built.plan["launches"]) == 4     # GN, V, U·V, Y
    assert [c["kernel"] for c in built.convolutions] == ["winograd"]
    entries = set(re.findall(r"kernel void (\w+)\(", built.source))
    assert {launch["kernel"] for launch in built.plan["launches"]} <= entries
    assert "threadgroup float" in built.source          # the GroupNorm kernel's reductions
    with pytest.raises(BackendUnavailableError, match="macOS or iOS"):
        get_backend("metal")


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.tvm
@pytest.mark.opencl
def test_corrupt_plan_is_refused_with_the_way_out(digits_mali, tmp_path):
    import shutil

    from edgegen.runtimes import load

    broken = tmp_path / "broken"
    shutil.copytree(digits_mali, broken)
    plan = next(broken.glob("*/plan.json"))
    data = json.loads(plan.read_text())
    data["launches"][0]["args"][0] = "nowhere"
    plan.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="truncated or was replaced"):
        load(broken)                        # the manifest catches the edit
    with pytest.raises(ArtifactError, match="undeclared tensors"):
        check_plan(data, "edited plan")     # and the plan check what it means, wherever a plan comes from
    with pytest.raises(ArtifactError, match="version 99 .* rebuild"):
        check_plan({**data, "version": 99}, "newer plan")


def test_plan_over_the_device_buffer_limit_or_memory_budget_is_refused():
    from edgegen.converters.gpu import check_memory
    from edgegen.core.errors import ModelError
    from edgegen.core.targets import DeviceProfile

    mib = 1 << 20
    plan = {"arena_bytes": 3 * mib, "tensors": {"w": {"bytes": 2 * mib, "storage": "weight", "shape": [512, 1024]},
                                               "a": {"bytes": mib, "storage": "arena", "shape": [256, 1024]}}}
    check_memory(plan, DeviceProfile("roomy", memory_budget_bytes=8 * mib, max_buffer_bytes=4 * mib), "unet")
    with pytest.raises(ModelError, match="exceed the small profile's .* budget; build at a lower resolution"):
        check_memory(plan, DeviceProfile("small", memory_budget_bytes=4 * mib, max_buffer_bytes=4 * mib), "unet")
    with pytest.raises(ModelError, match=r"tensor w \[512, 1024\] needs 2 MiB, over .* 1 MiB buffer limit"):
        check_memory(plan, DeviceProfile("narrow", memory_budget_bytes=64 * mib, max_buffer_bytes=mib), "unet")


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.tvm
def test_metal_build_through_the_cli_says_what_was_not_executed(digits_model_dir, tmp_path, capsys):
    from edgegen.cli import main

    assert main(["build", str(digits_model_dir), "--target", "metal", "--out", str(tmp_path / "metal"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "transformer" in out and "not executed here" in out and "macOS or iOS" in out
    manifest = json.loads((tmp_path / "metal" / "manifest.json").read_text())
    info = manifest["components"]["transformer"]["info"]
    assert info["parity_psnr_db"] is None and info["language"] == "metal" and info["launches"] > 0


def test_linear_weights_are_stored_as_the_gemm_reads_them(tiny_sd_dir):
    """A GPU plan runs no transpose kernel over a linear layer's weight per call (the text encoder ran
    one per projection: 3x its weight bytes of traffic per call, and an arena copy)."""
    from edgegen.converters import capture, gpu, lower, sd, source
    from edgegen.core.targets import get_target

    cap = sd.plan(tiny_sd_dir, source.read_model_index(tiny_sd_dir)).components["text_encoder"]
    target = get_target("adreno")
    lowered = lower.to_relax(capture.export(cap), len(cap.inputs), "text_encoder")
    built = gpu.lower_to_plan(lowered, list(cap.inputs), cap.outputs, lower.resolve_target(target.tvm_target),
                              gpu.limits_of(target.profile), target.backend, precision="fp16")
    weights = {tuple(s.shape) for s in lowered.weight_specs if len(s.shape) == 2}
    per_call = [k["kernel"] for k in built.kernels if k["kernel"].startswith("transpose")
                and tuple(k["arg_shapes"][0]) in weights]
    assert per_call == []
    assert any(n.endswith(".t") for n in built.weights)
