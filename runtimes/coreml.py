"""Backend `coreml`: Core ML packages run by coremltools' predictions (macOS 13+ only).

The packages carry the Swift StableDiffusion package's names and layouts; this
backend maps the edgegen pipelines' calls onto them: token ids one prompt at a
time as floats, embeddings as (B, C, 1, S), a UNet in one package or two chunks
(the second gets the first's outputs merged with the inputs).
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np

from edgegen.core.artifact import Artifact, Component
from edgegen.core.errors import InputError

INSTALL_HINT = ("Core ML predictions need macOS 13 or newer with coremltools==9.0; on Linux the packages can be "
                "built and inspected, and run in an app (Apple's Swift StableDiffusion package reads Resources/)")


def is_available() -> bool:
    return sys.platform == "darwin" and importlib.util.find_spec("coremltools") is not None


class Session:
    def __init__(self, artifact: Artifact, component: Component):
        import coremltools as ct

        self.component = component
        self.swift_name = component.info.get("swift_name", component.name)
        manifests = sorted(k for k in component.files if k == "model" or k.endswith("_model"))
        self._models = [ct.models.MLModel(str(artifact.file(component.files[k]).parent)) for k in manifests]

    def _predict(self, feed: dict) -> dict:
        out = self._models[0].predict(feed)
        for model in self._models[1:]:
            out = model.predict({**feed, **out})
        return out

    def run(self, **inputs) -> dict[str, np.ndarray]:
        f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
        try:
            if self.swift_name == "TextEncoder":
                rows = [self._predict({"input_ids": f32(r[None])})["last_hidden_state"] for r in inputs["input_ids"]]
                return {"last_hidden_state": np.concatenate(rows).astype(np.float32)}
            if self.swift_name == "Unet":
                emb = f32(np.asarray(inputs["encoder_hidden_states"]).transpose(0, 2, 1)[:, :, None, :])
                out = self._predict({"sample": f32(inputs["sample"]), "timestep": f32(inputs["timestep"]),
                                     "encoder_hidden_states": emb})
                return {"out_sample": np.asarray(out["noise_pred"], np.float32)}
            if self.swift_name == "VAEDecoder":
                return {"sample": np.asarray(self._predict({"z": f32(inputs["latent_sample"])})["image"], np.float32)}
        except KeyError as exc:
            raise InputError(f"component {self.component.name!r}: missing input {exc}") from exc
        out = self._predict({k: np.ascontiguousarray(v) for k, v in inputs.items()})
        return {s.name: np.asarray(out[s.name]) for s in self.component.outputs}

    def close(self) -> None:
        self._models = []


def load(artifact: Artifact, component: Component) -> Session:
    return Session(artifact, component)
