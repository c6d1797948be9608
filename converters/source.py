"""Read a diffusers pipeline folder (as written by `save_pretrained`) and check its parts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgegen.core.errors import ModelError

# component -> (what it must be, the file that proves it is there)
SD_COMPONENTS = {
    "unet": ("UNet2DConditionModel", "config.json"),
    "vae": ("AutoencoderKL", "config.json"),
    "text_encoder": ("CLIPTextModel", "config.json"),
    "tokenizer": ("CLIPTokenizer", "vocab.json"),
    "scheduler": ("a scheduler config", "scheduler_config.json"),
}


@dataclass
class SDSource:
    root: Path
    model_index: dict
    unet: object
    vae: object
    text_encoder: object
    tokenizer: object
    scheduler_config: dict


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


def load_sd(root: str | Path) -> SDSource:
    """Load the components of a Stable-Diffusion-shaped pipeline folder in fp32."""
    root = Path(root)
    index = read_model_index(root)
    for name, (what, marker) in SD_COMPONENTS.items():
        if name not in index or index[name] is None or index[name][0] is None:
            raise ModelError(f"{root}: model_index.json names no {name!r} component; edgegen needs {what} there.")
        if not (root / name / marker).is_file():
            raise ModelError(f"{root}: component {name!r} ({what}) is missing: {root / name / marker} not found.")
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    loaders = {
        "unet": lambda p: UNet2DConditionModel.from_pretrained(p, local_files_only=True, low_cpu_mem_usage=False),
        "vae": lambda p: AutoencoderKL.from_pretrained(p, local_files_only=True, low_cpu_mem_usage=False),
        "text_encoder": lambda p: CLIPTextModel.from_pretrained(p, local_files_only=True),
        "tokenizer": lambda p: CLIPTokenizer.from_pretrained(p, local_files_only=True),
    }
    loaded = {}
    for name, loader in loaders.items():
        expected = SD_COMPONENTS[name][0]
        if index[name][1] not in (expected, expected + "Fast"):
            raise ModelError(f"{root}: component {name!r} is a {index[name][1]}; this build path supports "
                             f"{expected} there.")
        try:
            loaded[name] = loader(root / name)
        except Exception as exc:  # diffusers/transformers raise many types for bad files
            raise ModelError(f"{root}: component {name!r} could not be loaded: {exc}") from exc
        if hasattr(loaded[name], "eval"):
            loaded[name] = loaded[name].float().eval()
    scheduler_config = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    return SDSource(root=root, model_index=index, scheduler_config=scheduler_config, **loaded)
