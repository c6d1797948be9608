"""Fuzzing real artifacts (edgegen/testing/fuzz.py): 300 mutations with a fixed seed of the digits
CPU artifact, the digits `mali` launch-plan artifact and the tiny Stable Diffusion artifact (its
tokenizer files) — manifest, plan, kernels, scheduler and tokenizer files, weights, library, the
folder's files, and signed copies. Each case must end as an edgegen error, accepted, or (signed)
refused by the signature check: no traceback, no signal, no hang."""

import pytest

from edgegen.cli import main
from edgegen.testing.fuzz import fuzz, tally

pytestmark = [pytest.mark.tvm, pytest.mark.torch, pytest.mark.opencl, pytest.mark.slow]

CASES = 300
SEED = 20
# the GPU plan loads slowly on PoCL (~3 s) and the tiny SD artifact is there for its tokenizer: both take
# their own kinds in full and a third of the general ones (manifest, scheduler, weights, files)
GENERAL_SHARE = {"digits-mali": 0.33, "tiny-sd-cpu": 0.33}


def test_mutated_artifacts_end_in_an_edgegen_error_or_are_accepted(digits_artifact, digits_mali_small,
                                                                    tiny_artifact, tmp_path):
    assert main(["keygen", str(tmp_path / "fuzz.key")]) == 0
    artifacts = {"digits-cpu": digits_artifact, "digits-mali": digits_mali_small, "tiny-sd-cpu": tiny_artifact}
    cases = fuzz(artifacts, CASES, SEED, tmp_path / "work", tmp_path / "fuzz.key", general_share=GENERAL_SHARE)
    result = tally(cases)
    bad = [c for c in cases if c.outcome in ("traceback", "signal", "hang")]
    assert not bad, "\n\n".join(f"case {c.index} {c.artifact} {c.kind}: {c.detail}\n{c.outcome}: {c.message}"
                                for c in bad[:5])
    assert result["cases"] == CASES and result["total"]["accepted"] > 0 and result["total"]["signature"] > 0
    assert all("\n" not in c.message for c in cases), "an error message spans lines"
    assert all(c.outcome == "signature" for c in cases if c.signed)
    assert len(result["by_kind"]) >= 35
