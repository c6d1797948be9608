"""Layer 0: the artifact format, tensor specs, targets, metrics. Imports numpy only."""

from .artifact import SCHEMA_VERSION, Artifact, ArtifactWriter, Component
from .errors import (ArtifactError, BackendUnavailableError, EdgegenError, InputError,
                     MissingDependencyError, ModelError, ParityError, UnsupportedOpError)
from .metrics import nmse, psnr
from .specs import TensorSpec

__all__ = [
    "SCHEMA_VERSION", "Artifact", "ArtifactWriter", "Component", "TensorSpec", "psnr", "nmse",
    "EdgegenError", "ArtifactError", "BackendUnavailableError", "InputError", "MissingDependencyError",
    "ModelError", "ParityError", "UnsupportedOpError",
]
