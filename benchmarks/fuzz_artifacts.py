"""Fuzz real artifacts at scale: N mutations (default 2000, fixed seed) of the digits CPU
artifact, the digits `mali` launch-plan artifact (run on PoCL) and the tiny Stable Diffusion CPU
artifact, each opened, loaded and run through the public API (edgegen/testing/fuzz.py). Writes
the tally by mutation kind, the load-time cost of the schema check, and every case that ended
badly to benchmarks/results/fuzz.json.

    python benchmarks/fuzz_artifacts.py [--cases 2000] [--seed 7] [--work DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def build_artifacts(work: Path) -> dict[str, Path]:
    import edgegen
    from edgegen.testing import make_tiny_sd_pipeline

    digits = ROOT / "examples" / "digits" / "pipeline"
    out = {"digits-cpu": work / "digits-cpu", "digits-mali": work / "digits-mali", "tiny-sd-cpu": work / "tiny-cpu"}
    builds = {"digits-cpu": lambda p: edgegen.build(digits, p, target="cpu"),
              "digits-mali": lambda p: edgegen.build(digits, p, target="mali", batch=2),
              "tiny-sd-cpu": lambda p: edgegen.build(make_tiny_sd_pipeline(work / "tiny-sd"), p, target="cpu")}
    for name, build in builds.items():
        if not (out[name] / "manifest.json").is_file():     # kept from an earlier run with the same --work
            build(out[name])
    return out


def schema_cost(artifact: Path, runs: int = 30) -> dict:
    """Artifact.open with and without the schema and cross-reference check (checksums off in both:
    the check's own cost), median ms over `runs` after one warm-up that imports jsonschema."""
    import statistics
    from unittest import mock

    from edgegen.core import Artifact, manifest_check

    def timed():
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            Artifact.open(artifact, verify=False)
            samples.append((time.perf_counter() - t0) * 1000)
        return statistics.median(samples)

    t0 = time.perf_counter()
    manifest_check.validator("manifest")
    first_ms = (time.perf_counter() - t0) * 1000
    with_ms = timed()
    with mock.patch.object(manifest_check, "check_manifest", lambda m, where: None):
        without_ms = timed()
    t0 = time.perf_counter()
    Artifact.open(artifact, verify=True)
    verify_ms = (time.perf_counter() - t0) * 1000
    return {"artifact": artifact.name, "first_use_import_and_compile_ms": round(first_ms, 1),
            "open_with_schema_ms": round(with_ms, 2), "open_without_schema_ms": round(without_ms, 2),
            "schema_and_cross_reference_ms": round(with_ms - without_ms, 2),
            "open_with_checksums_ms": round(verify_ms, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work", help="folder for the artifacts and the mutated copies (default: a temporary one)")
    args = parser.parse_args()
    from edgegen.core.signing import keygen
    from edgegen.testing.fuzz import fuzz, tally

    work = Path(args.work or tempfile.mkdtemp(prefix="edgegen-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    artifacts = build_artifacts(work)
    build_s = time.perf_counter() - t0
    cost = schema_cost(artifacts["digits-cpu"])
    key, _ = keygen(work / f"fuzz-{int(time.time())}.key")
    done = [0]

    def progress(case):
        done[0] += 1
        if done[0] % 200 == 0:
            print(f"  {done[0]} cases mutated and opened", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    cases = fuzz(artifacts, args.cases, args.seed, work / "cases", key, progress=progress,
                 general_share={"digits-mali": 0.33, "tiny-sd-cpu": 0.33})
    fuzz_s = time.perf_counter() - t0
    result = tally(cases)
    bad = [c.to_json() for c in cases if c.outcome in ("traceback", "signal", "hang")]
    path = write_json("fuzz", {"command": "python benchmarks/fuzz_artifacts.py " + " ".join(sys.argv[1:]),
                               "seed": args.seed, "artifacts": sorted(artifacts), "build_s": round(build_s, 1),
                               "fuzz_s": round(fuzz_s, 1), "schema_cost": cost, **result, "bad_cases": bad})
    print(f"{result['cases']} cases in {fuzz_s:.0f}s: " + ", ".join(f"{k} {v}" for k, v in result["total"].items()))
    print(f"schema check: {cost['schema_and_cross_reference_ms']} ms per open "
          f"({cost['open_with_schema_ms']} vs {cost['open_without_schema_ms']} ms)")
    print(f"wrote {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
