"""Out-of-range class labels and token ids: every session refuses them with an InputError naming
the input and its range, on the CPU and on a GPU plan, and the process lives. The calls run in a
child process: before range checks, TVM's fast-mode gathers segfaulted on such ids."""

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.tvm, pytest.mark.torch, pytest.mark.slow]

PROBE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from edgegen.core import Artifact, InputError
    from edgegen.runtimes import load_component

    results = []
    for path in sys.argv[1:]:
        art = Artifact.open(path)
        for comp in art.components.values():
            ranged = [s for s in comp.inputs if s.range is not None]
            if not ranged:
                continue
            session = load_component(art, comp.name)
            good = {s.name: (np.full(s.shape, s.range[1], s.dtype) if s.range else np.zeros(s.shape, s.dtype))
                    for s in comp.inputs}
            session.run(**good)          # the top of the range (the null class, the last token) runs
            for spec in ranged:
                for bad in (1_000_000, -7, spec.range[1] + 1):
                    inputs = dict(good)
                    inputs[spec.name] = good[spec.name].copy()
                    inputs[spec.name].flat[0] = bad
                    try:
                        session.run(**inputs)
                        results.append({"artifact": path, "input": spec.name, "value": bad, "error": None})
                    except InputError as exc:
                        results.append({"artifact": path, "component": comp.name, "input": spec.name,
                                        "value": bad, "range": list(spec.range), "error": str(exc)})
            session.close()
    print(json.dumps(results))
""")


def _probe(*artifacts):
    proc = subprocess.run([sys.executable, "-c", PROBE, *map(str, artifacts)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"the process died ({proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check(results, expected_inputs):
    assert {(r["input"]) for r in results} == expected_inputs
    for r in results:
        lo, hi = r["range"]
        assert r["error"] and f"input {r['input']!r} holds {r['value']}" in r["error"], r
        assert f"valid range {lo}..{hi}" in r["error"]


def test_digits_labels_on_cpu_and_mali(digits_artifact, digits_mali_small):
    results = _probe(digits_artifact, digits_mali_small)
    _check(results, {"class_labels"})
    assert {r["range"][1] for r in results} == {10}      # the null class is the last valid id
    assert len(results) == 2 * 3


def test_tiny_sd_token_ids_on_cpu_and_adreno(tiny_artifact, tiny_sd_adreno):
    results = _probe(tiny_artifact, tiny_sd_adreno)
    _check(results, {"input_ids"})
    assert len(results) == 2 * 3


def test_artifact_without_ranges_gets_them_from_its_table(digits_artifact, tmp_path):
    """Artifacts built before ranges were recorded: the range comes from the embedding table's rows."""
    import shutil

    from edgegen.core import Artifact

    old = shutil.copytree(digits_artifact, tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    for spec in manifest["components"]["transformer"]["inputs"]:
        spec.pop("range", None)
    (old / "manifest.json").write_text(json.dumps(manifest))
    spec = {s.name: s for s in Artifact.open(old).component("transformer").inputs}["class_labels"]
    assert spec.range == (0, 10)
    _check(_probe(old), {"class_labels"})
