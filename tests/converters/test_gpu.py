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
    assert unet["info"]["edgegen_kernels"]["edgegen.group_norm_silu"] > 0
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


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.tvm
def test_metal_artifact_has_every_planned_kernel_and_refuses_to_run_here(digits_model_dir, tmp_path):
    from edgegen.runtimes import load

    _build(digits_model_dir, tmp_path / "metal", "metal")
    manifest = json.loads((tmp_path / "metal" / "manifest.json").read_text())
    for name, comp in manifest["components"].items():
        plan = json.loads((tmp_path / "metal" / comp["files"]["plan"]).read_text())
        source = (tmp_path / "metal" / comp["files"]["kernels"]).read_text()
        entries = set(re.findall(r"kernel void (\w+)\(", source))
        assert {launch["kernel"] for launch in plan["launches"]} <= entries
        assert plan["language"] == "metal" and "not executed" in comp["info"]["parity_scope"]
    with pytest.raises(BackendUnavailableError, match="macOS or iOS"):
        load(tmp_path / "metal")


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


def test_quantization_is_refused_on_gpu_targets(tmp_path):
    import edgegen

    with pytest.raises(ValueError, match="GPU targets build float32"):
        edgegen.build(tmp_path, tmp_path / "out", target="webgpu", quant="w8")


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
