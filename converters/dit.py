"""Family plan: class-conditional diffusion transformers (diffusers' DiTTransformer2DModel),
in DiTPipeline's folder layout. Pixel-space models (model_index.json `vae: [null, null]`)
are supported; the null class for guidance is `num_embeds_ada_norm`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgegen.core.errors import ModelError

from . import calibrate, capture, source
from .plan import Plan

PIPELINE_CLASSES = ("DiTPipeline",)
KIND = "class-conditional-dit"
DEFAULT_BATCH = 10
REQUIRED = {"transformer": ("DiTTransformer2DModel", "config.json"),
            "scheduler": ("a scheduler config", "scheduler_config.json")}


def plan(root: Path, index: dict, height: int | None = None, width: int | None = None,
         batch: int | None = None) -> Plan:
    from diffusers import DiTTransformer2DModel

    source.require_components(root, index, REQUIRED)
    vae = index.get("vae")
    if vae and vae[0] is not None:
        raise ModelError(f"{root}: this DiT pipeline has a VAE ({vae[1]}); edgegen builds pixel-space DiT "
                         f"pipelines (model_index.json \"vae\": [null, null]) so far.")
    model = source.load_component(root, index, "transformer", "DiTTransformer2DModel",
                                  lambda p: DiTTransformer2DModel.from_pretrained(p, local_files_only=True,
                                                                                   low_cpu_mem_usage=False))
    cfg = model.config
    size = cfg.sample_size
    if (height or size) != size or (width or size) != size:
        raise ValueError(f"this DiT generates {size}x{size} images; its position embeddings fix that size")
    if cfg.num_embeds_ada_norm is None:
        raise ModelError(f"{root}: the transformer is not class-conditional (num_embeds_ada_norm is null).")
    n = batch or DEFAULT_BATCH
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, cfg.in_channels, size, size), dtype=np.float32)
    labels = np.arange(n) % cfg.num_embeds_ada_norm
    null = np.full(n, cfg.num_embeds_ada_norm)
    components = {"transformer": capture.dit_transformer(
        model, np.concatenate([x, x]), np.full(2 * n, 500.0, np.float32), np.concatenate([labels, null]))}
    components["transformer"].ranges["class_labels"] = (0, cfg.num_embeds_ada_norm)   # the null class included
    scheduler_config = source.read_scheduler_config(root)
    id2label = index.get("id2label") or {str(i): str(i) for i in range(cfg.num_embeds_ada_norm)}
    sampling = (index.get("edgegen") or {}).get("sampling", {"steps": 25, "guidance_scale": 4.0})

    pipeline = {"kind": KIND, "batch": n, "sample_shape": [n, cfg.in_channels, size, size],
                "in_channels": cfg.in_channels, "null_class": cfg.num_embeds_ada_norm, "id2label": id2label,
                "space": "pixel", "sampling": sampling, "height": size, "width": size}
    runs = calibrate.DiTRuns(model, scheduler_config, n, sampling["steps"], sampling["guidance_scale"])
    return Plan(components=components, pipeline=pipeline, scheduler_config=scheduler_config,
                calibrate=runs.calibration, end_output=runs.end_output)
