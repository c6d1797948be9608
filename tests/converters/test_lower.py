"""Lowering to TVM Relax: gathers compile in a mode where an index out of range cannot read out of bounds."""

import numpy as np
import pytest

pytestmark = [pytest.mark.tvm, pytest.mark.torch]


def test_an_embedding_index_past_the_end_reads_the_last_row(tvm_compiler, capfd):
    import torch

    from edgegen.converters import lower

    tvm = tvm_compiler
    table = torch.nn.Embedding(10, 4).eval()
    lowered = lower.to_relax(torch.export.export(table, (torch.tensor([[1, 2, 3]]),)), 1, "embedding")
    vm = tvm.relax.VirtualMachine(lower.compile_module(lowered.module, {"kind": "llvm"}), tvm.cpu())
    weight = lowered.weights[lowered.weight_specs[0].name]
    out = vm["main"](tvm.runtime.tensor(np.array([[1, 9, 1000]], np.int64)), tvm.runtime.tensor(weight)).numpy()
    np.testing.assert_array_equal(out[0], weight[[1, 9, 9]])
    assert "Fast mode segfaults" not in capfd.readouterr().err
