"""Reading a diffusers pipeline folder (as written by `save_pretrained`)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from edgegen.core.errors import ModelError
from edgegen.core.quiet import log_records_hidden, verbose


def read_model_index(root: str | Path) -> dict:
    root = Path(root)
    if not root.is_dir():
        raise ModelError(f"model folder {root} does not exist; pass a diffusers pipeline folder "
                         f"(as written by `pipeline.save_pretrained(folder)`).")
    index = root / "model_index.json"
    if not index.is_file():
        raise ModelError(f"{root} has no model_index.json, so it is not a diffusers pipeline folder; "
                         f"write one with `pipeline.save_pretrained({str(root)!r})`.")
    try:
        return json.loads(index.read_text())
    except ValueError as exc:
        raise ModelError(f"{index} is not valid JSON ({exc}).") from exc


def require_components(root: Path, index: dict, required: dict[str, tuple[str, str]]) -> None:
    """Each required component must be named in model_index.json and have its marker file."""
    for name, (what, marker) in required.items():
        entry = index.get(name)
        if not entry or entry[0] is None:
            raise ModelError(f"{root}: model_index.json names no {name!r} component; edgegen needs {what} there.")
        if not (root / name / marker).is_file():
            raise ModelError(f"{root}: component {name!r} ({what}) is missing: {root / name / marker} not found.")


def load_component(root: Path, index: dict, name: str, expected: str, loader):
    """Load one component with `loader(folder)`, checking its class and naming failures."""
    cls = index[name][1]
    if cls not in (expected, expected + "Fast"):
        raise ModelError(f"{root}: component {name!r} is a {cls}; this build path supports {expected} there.")
    try:
        module = loader(root / name)
    except Exception as exc:  # diffusers/transformers raise many types for bad files
        raise ModelError(f"{root}: component {name!r} could not be loaded: {exc}") from exc
    return module.float().eval() if hasattr(module, "eval") else module


def read_scheduler_config(root: Path) -> dict:
    return json.loads((root / "scheduler" / "scheduler_config.json").read_text())


def import_diffusers():
    """diffusers, imported with its import-time notice that two distributions (optimum, optimum-onnx)
    share the `optimum` package hidden: it comes from a probe for optimum-quanto, which edgegen does
    not use."""
    with log_records_hidden("diffusers.utils.import_utils", "Multiple distributions found for package optimum"):
        import diffusers
    return diffusers


def tiny_vae_config_note_hidden():
    """AutoencoderTiny registers `block_out_channels` in its own config, so every TAESD that diffusers
    saved warns on load that the key is not expected: diffusers' quirk, not the user's file."""
    return log_records_hidden("diffusers.configuration_utils", "The config attributes {'block_out_channels'")


@contextmanager
def loading_bars_off():
    """diffusers' "Loading pipeline components" bar off during a pipeline load (edgegen shows its own progress)."""
    from diffusers.utils import logging as diffusers_logging

    was_on = diffusers_logging.is_progress_bar_enabled() and not verbose()
    if was_on:
        diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            diffusers_logging.enable_progress_bar()
