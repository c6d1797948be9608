"""edgegen: deploy diffusion generators to phones and edge boards.

    import edgegen
    report = edgegen.build("my-pipeline/", out="art/", target="cpu")
    pipe = edgegen.runtimes.load("art/")
    image = pipe("a red fox in the snow", num_inference_steps=20, seed=0).images[0]

Heavy libraries load only when the function that needs them runs.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"
__all__ = ["build", "build_module", "validate", "load", "runtimes", "converters", "core"]


def build(model_dir, out, target: str = "cpu", **options):
    """Build a diffusers pipeline folder into an artifact; returns a BuildReport."""
    from .converters.build import build as _build

    return _build(model_dir, out, target=target, **options)


def build_module(module, example_inputs: dict, out, target: str = "cpu", quant: str | None = None,
                 calibration: list | None = None, **options):
    """Build any torch module into a one-component artifact (see converters.module.build_module);
    load it with edgegen.runtimes.load_module(out)."""
    from .converters.module import build_module as _build_module

    return _build_module(module, example_inputs, out, target=target, quant=quant, calibration=calibration,
                         **options)


def validate(artifact_dir, model_dir, **options):
    """Compare an artifact with its source pipeline in torch; returns a ValidationReport."""
    from .validation import validate as _validate

    return _validate(artifact_dir, model_dir, **options)


def load(artifact_dir, **options):
    """Load an artifact's pipeline (same as edgegen.runtimes.load)."""
    from .runtimes import load as _load

    return _load(artifact_dir, **options)


def __getattr__(name):
    if name in ("runtimes", "converters", "kernels", "core", "testing"):
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'edgegen' has no attribute {name!r}")
