"""`edgegen demo`: the digits generator built for the CPU, a 10x10 grid of samples
(ten of each digit, one digit per row), its class accuracy and the time per image."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def artifact_is_current(artifact_dir: Path, model_dir: Path) -> bool:
    from edgegen.core import Artifact, ArtifactError
    from edgegen.core.artifact import sha256_tree

    try:
        art = Artifact.open(artifact_dir)
    except ArtifactError:
        return False
    return art.manifest["source"]["sha256"] == sha256_tree(model_dir)


def ensure_artifact(model_dir: Path, artifact_dir: Path, progress=None) -> float | None:
    """Build `model_dir` for the CPU at `artifact_dir` unless a current build is there;
    returns the build's seconds, or None when the cached one was current."""
    import edgegen

    if artifact_is_current(artifact_dir, model_dir):
        return None
    return round(edgegen.build(model_dir, artifact_dir, target="cpu", overwrite=True, progress=progress).seconds, 1)


def run_demo(model_dir: str | Path | None = None, cache: str | Path = ".cache/edgegen-demo",
             out: str | Path = "demo.png", steps: int | None = None, guidance: float | None = None,
             seed: int = 0, samples_per_class: int = 10, progress=None, threads: int | None = None) -> dict:
    import edgegen
    from edgegen.digits import DigitClassifier, example_dir
    from edgegen.runtimes.image import grid

    model_dir = Path(model_dir) if model_dir else example_dir() / "pipeline"
    artifact_dir = Path(cache) / "digits-cpu"
    built = ensure_artifact(model_dir, artifact_dir, progress)
    pipe = edgegen.runtimes.load(artifact_dir, threads=threads)
    labels = np.repeat(np.arange(10), samples_per_class)
    t0 = time.perf_counter()
    result = pipe(labels.tolist(), num_inference_steps=steps, guidance_scale=guidance, seed=seed, output_type="np",
                  progress=progress)
    seconds = time.perf_counter() - t0
    pipe.close()
    accuracy = DigitClassifier.load().accuracy(result.images, labels)
    from PIL import Image

    tiles = grid(result.images, rows=10, cols=samples_per_class, gap=1)[..., 0]
    Image.fromarray(tiles).resize((tiles.shape[1] * 4, tiles.shape[0] * 4), Image.NEAREST).save(out)
    return {"image": str(out), "artifact": str(artifact_dir), "built_seconds": built, "images": len(labels),
            "threads": edgegen.runtimes.threads_used(pipe.sessions.values()),
            "class_accuracy": accuracy, "ms_per_image": 1000 * seconds / len(labels),
            "steps": steps or pipe.sampling.get("steps"),
            "guidance_scale": pipe.sampling.get("guidance_scale") if guidance is None else guidance}
