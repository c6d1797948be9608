"""The memory plan: a component's memory by graph position, cuts at graph boundaries, the plan's modes,
the budget that fails before compiling, and the tiny pipeline built to a budget that forces chunks."""

import json

import numpy as np
import pytest

from edgegen.core.errors import ArtifactError, BudgetError
from edgegen.core.memory import format_size, parse_size, phases_of

from conftest import edgegen_cli


def test_parse_size():
    assert parse_size("600MB") == 600_000_000
    assert parse_size("1.5GB") == 1_500_000_000
    assert parse_size("3MB") == 3_000_000
    assert parse_size("512MiB") == 512 << 20
    assert parse_size("100KB") == 100_000
    assert parse_size(4096) == 4096
    for bad in ("lots", "3 parsecs", "0MB", "-1GB"):
        with pytest.raises(ValueError, match="memory size"):
            parse_size(bad)
    assert format_size(3_171_856) == "3.17 MB"


def test_phases_follow_the_run():
    assert phases_of(["unet", "vae_decoder", "text_encoder"]) == [
        ("encode", ["text_encoder"]), ("denoise", ["unet"]), ("decode", ["vae_decoder"])]
    assert phases_of(["module"]) == [("module", ["module"])]


def _chain(widths=(64, 256, 256, 256, 64), batch=8):
    """A torch chain of blocks (Linear + GELU) with known weights and activations, exported."""
    import torch

    torch.manual_seed(0)

    class Block(torch.nn.Module):
        def __init__(self, a, b):
            super().__init__()
            self.linear = torch.nn.Linear(a, b)

        def forward(self, x):
            return torch.nn.functional.gelu(self.linear(x))

    class Chain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList(Block(a, b) for a, b in zip(widths, widths[1:]))

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return x

    from edgegen.converters.capture import Captured, _wrap

    module = _wrap(lambda m, x: m(x))(Chain()).eval()
    return Captured("Chain", module, {"x": np.random.default_rng(0).standard_normal((batch, widths[0]))
                                      .astype(np.float32)}, ["y"])


@pytest.mark.torch
def test_graph_memory_counts_weights_and_live_activations():
    from edgegen.converters import memory_plan, partition

    cap = _chain()
    mem = partition.analyse(memory_plan.exported_graph(cap))
    params = sum(p.numel() * 4 for p in cap.module.parameters())
    assert mem.total_weight_bytes == params
    # at the widest op, its 8x256 input and output are both alive (and the wrapper's input until it is read)
    assert 2 * 8 * 256 * 4 <= mem.arena_bytes <= 3 * 8 * 256 * 4
    assert mem.boundaries(), "the blocks are graph boundaries"
    assert {mem.modules[i] for i in range(len(mem.ops))} == {f"blocks.{k}" for k in range(4)}


@pytest.mark.torch
def test_cuts_fit_the_budget_and_the_chunks_reproduce_the_component():
    from edgegen.converters import capture, memory_plan, partition

    cap = _chain()
    gm = memory_plan.exported_graph(cap)
    mem = partition.analyse(gm)
    whole = mem.chunk_cost(0, len(mem.ops) - 1)
    budget = int(whole * 0.6)
    cuts = partition.best_cuts(mem, budget)
    assert cuts, "60% of the whole forces a cut"
    bounds = [-1, *cuts, len(mem.ops) - 1]
    assert all(mem.chunk_cost(a + 1, b) <= budget for a, b in zip(bounds, bounds[1:]))
    assert set(cuts) <= set(mem.boundaries())
    assert partition.best_cuts(mem, whole) == []
    assert partition.best_cuts(mem, partition.smallest_budget(mem) - 1) is None
    chunks = partition.split(cap, gm, mem, cuts, "chain")
    assert [n for n, _ in chunks] == [f"chain_chunk{k + 1}" for k in range(len(cuts) + 1)]
    values = dict(cap.inputs)
    for _, chunk in chunks:
        values.update(capture.run_torch(chunk))
        capture.export(chunk)        # each chunk is a module torch.export takes, as the emitters need
    np.testing.assert_array_equal(values["y"], capture.run_torch(cap)["y"])
    # calibration inputs follow the chunks: the last chunk's calibration run gives the component's output
    other = {"x": np.ones_like(cap.inputs["x"])}
    per_chunk = memory_plan.chunk_calibration(dict(chunks), {"chain": [other]})
    last_name, last = chunks[-1]
    got = capture.run_torch(capture.Captured("Chain", last.module, per_chunk[last_name][0], last.outputs))["y"]
    expected = capture.run_torch(capture.Captured("Chain", cap.module, other, ["y"]))["y"]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.torch
def test_plan_modes_and_the_smallest_budget():
    from edgegen.converters import memory_plan

    measured = memory_plan.measure({"text_encoder": _chain((32, 64, 32)), "unet": _chain(),
                                    "vae_decoder": _chain((64, 128, 16))}, None)
    weights = sum(m.total_weight_bytes for m in measured.values())
    arena = max(m.arena_bytes for m in measured.values())
    plan, cuts = memory_plan.make(measured, weights + arena, "test")
    assert plan["mode"] == "resident" and not cuts and plan["peak_bytes"] == weights + arena
    unet = measured["unet"].chunk_cost(0, len(measured["unet"].ops) - 1)
    plan, cuts = memory_plan.make(measured, unet, "test")
    assert plan["mode"] == "phased" and not cuts and plan["peak_bytes"] <= unet
    assert [r["phase"] for r in plan["phases"]] == ["encode", "denoise", "decode"]
    plan, cuts = memory_plan.make(measured, int(unet * 0.6), "test")
    assert len(plan["components"]["unet"]["chunks"]) >= 2 and plan["peak_bytes"] <= int(unet * 0.6)
    assert all(c["reason"] and c["crossing_bytes"] > 0 for c in plan["components"]["unet"]["cuts"])
    with pytest.raises(BudgetError, match="smallest budget a plan fits is") as err:
        memory_plan.make(measured, 1000, "test")
    assert err.value.smallest > 1000
    memory_plan.make(measured, err.value.smallest, "test")     # the smallest budget it names does fit


def test_manifest_checks_the_plan():
    from edgegen.core.manifest_check import _check_memory_plan

    plan = {"budget_bytes": 10, "mode": "phased", "peak_bytes": 7,
            "phases": [{"phase": "denoise", "components": ["unet"], "weight_bytes": 4, "arena_bytes": 3,
                        "peak_bytes": 7}],
            "components": {"unet": {"weight_bytes": 8, "arena_bytes": 3, "chunks": ["unet_chunk1", "unet_chunk2"]}}}
    _check_memory_plan(plan, {"unet_chunk1": {}, "unet_chunk2": {}}, "m")
    with pytest.raises(ArtifactError, match="unet_chunk2"):
        _check_memory_plan(plan, {"unet_chunk1": {}}, "m")
    with pytest.raises(ArtifactError, match="largest phase"):
        _check_memory_plan({**plan, "peak_bytes": 5}, {"unet_chunk1": {}, "unet_chunk2": {}}, "m")


@pytest.mark.torch
def test_budget_too_small_fails_before_compiling_and_writes_nothing(tiny_sd_dir, tmp_path):
    out = tmp_path / "too-small"
    proc = edgegen_cli("build", tiny_sd_dir, "--target", "cpu", "--out", out, "--memory-budget", "100KB", "--quiet")
    assert proc.returncode != 0
    assert "memory budget 100 KB" in proc.stderr and "smallest budget a plan fits is" in proc.stderr
    assert "compile" not in proc.stderr
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.tvm
@pytest.mark.slow
def test_forcing_budget_cuts_the_unet_and_keeps_the_image(tiny_sd_dir, tmp_path, tvm_compiler):
    import edgegen
    from edgegen.runtimes.memory_plan import ChunkedSession, LazySession

    budget = 3_000_000
    report = edgegen.build(tiny_sd_dir, tmp_path / "budget", target="cpu", memory_budget="3MB")
    manifest = json.loads((tmp_path / "budget" / "manifest.json").read_text())
    plan = manifest["memory_plan"]
    assert plan["mode"] == "phased" and plan["budget_bytes"] == budget
    assert len(plan["components"]["unet"]["chunks"]) >= 2
    assert plan["peak_bytes"] <= budget, "the plan restated from the built files fits the budget"
    assert report.memory_plan["chunks"]["unet"] == plan["components"]["unet"]["chunks"]
    result = edgegen.validate(tmp_path / "budget", tiny_sd_dir, num_inference_steps=3)
    assert result.image_psnr_db >= 40.0
    pipe = edgegen.runtimes.load(tmp_path / "budget")
    assert isinstance(pipe.sessions["unet"], ChunkedSession)
    assert isinstance(pipe.sessions["text_encoder"], LazySession)
    pipe("a cat", num_inference_steps=2, seed=0, output_type="np")
    assert pipe.sessions["text_encoder"]._session is None, "the text encoder is freed after encoding"
    assert pipe.sessions["vae_decoder"].loads == 1 and pipe.sessions["vae_decoder"]._session is None
    proc = edgegen_cli("inspect", tmp_path / "budget")
    assert "memory     phased plan" in proc.stdout and "cut unet after" in proc.stdout
