"""The artifact format: one folder, one manifest, checksummed files.

Every other module reads and writes artifacts through this one. A writer
builds into a temporary sibling folder and renames it into place only when
the manifest is complete, so a failed build leaves nothing at the destination.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import manifest_check, safetensors_io
from .errors import ArtifactError
from .input_ranges import with_ranges
from .specs import TensorSpec

SCHEMA_VERSION = 1
FORMAT = "edgegen-artifact"
MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_tree(root: str | Path) -> str:
    """One hash over every file below `root`: relative paths and contents, in sorted order."""
    root = Path(root)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(sha256_file(path).encode())
    return h.hexdigest()


@dataclass
class Component:
    """One compiled component: which backend runs it, its files and tensor specs."""

    name: str
    backend: str
    family: str
    files: dict[str, str]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    weights: list[TensorSpec] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "backend": self.backend,
            "family": self.family,
            "files": dict(self.files),
            "inputs": [s.to_json() for s in self.inputs],
            "outputs": [s.to_json() for s in self.outputs],
            "weights": [s.to_json() for s in self.weights],
            "info": self.info,
        }

    @classmethod
    def from_json(cls, name: str, data: dict) -> "Component":
        return cls(
            name=name,
            backend=data["backend"],
            family=data["family"],
            files=dict(data["files"]),
            inputs=[TensorSpec.from_json(s) for s in data["inputs"]],
            outputs=[TensorSpec.from_json(s) for s in data["outputs"]],
            weights=[TensorSpec.from_json(s) for s in data.get("weights", [])],
            info=dict(data.get("info", {})),
        )


class ArtifactWriter:
    """Write an artifact atomically.

    with ArtifactWriter(dest) as w:
        w.path("unet/model.so") ...; w.add_component(...)
        w.commit(pipeline=..., source=..., target=..., toolchain=...)
    """

    def __init__(self, dest: str | Path, overwrite: bool = False):
        self.dest = Path(dest).absolute()
        if self.dest.exists() and not overwrite:
            raise ArtifactError(
                f"{self.dest} already exists; pass overwrite=True (CLI: --overwrite) to replace it, "
                f"or choose another output folder."
            )
        self.dest.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(self.dest)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.dest.name}.partial-{os.getpid()}-", dir=self.dest.parent))
        self.components: dict[str, Component] = {}
        self.committed = False

    def __enter__(self) -> "ArtifactWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def path(self, relpath: str) -> Path:
        p = self.tmp / relpath
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def add_component(self, component: Component) -> None:
        for rel in component.files.values():
            if not (self.tmp / rel).is_file():
                raise ArtifactError(f"component {component.name!r}: file {rel} was not written")
        self.components[component.name] = component

    def commit(self, **sections) -> Path:
        """Checksum every file, write the manifest, and move the folder into place."""
        files = {}
        for p in sorted(q for q in self.tmp.rglob("*") if q.is_file()):
            rel = p.relative_to(self.tmp).as_posix()
            files[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        manifest = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **sections,
            "components": {n: c.to_json() for n, c in self.components.items()},
            "files": files,
        }
        with open(self.tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=1, allow_nan=False)
        os.chmod(self.tmp, 0o755)  # mkdtemp made it private
        if self.dest.exists():
            old = self.dest.with_name(f".{self.dest.name}.old-{os.getpid()}")
            os.replace(self.dest, old)
            os.replace(self.tmp, self.dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.dest)
        self.committed = True
        return self.dest


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _partials(dest: Path) -> list[tuple[Path, int]]:
    """Folders a writer for `dest` left beside it (`.NAME.partial-PID-*`, `.NAME.old-PID`), with their PIDs."""
    found = []
    for p in dest.parent.glob(f".{dest.name}.*"):
        kind, _, rest = p.name[len(dest.name) + 2:].partition("-")
        pid = rest.split("-")[0]
        if kind in ("partial", "old") and pid.isdigit():
            found.append((p, int(pid)))
    return found


def remove_stale_partials(dest: Path) -> None:
    """Remove what a killed build into `dest` left behind (its process is gone)."""
    for path, pid in _partials(dest):
        if not _alive(pid):
            shutil.rmtree(path, ignore_errors=True)


def annotate(root: str | Path, section: str, values: dict) -> None:
    """Merge `values` into one top-level section of a committed artifact's manifest (e.g. results
    measured on the finished artifact), replacing the manifest file atomically."""
    path = Path(root) / MANIFEST
    manifest = json.loads(path.read_text())
    manifest.setdefault(section, {}).update(values)
    tmp = path.with_name(f".{MANIFEST}.{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=1, allow_nan=False))
    os.replace(tmp, path)


class Artifact:
    """A loaded, verified artifact."""

    def __init__(self, root: Path, manifest: dict):
        self.root = root
        self.manifest = manifest
        self.components = {n: with_ranges(Component.from_json(n, c)) for n, c in manifest["components"].items()}

    @classmethod
    def open(cls, root: str | Path, verify: bool = True, trusted_keys: list | None = None) -> "Artifact":
        """Check and open an artifact. `trusted_keys` (public keys: .pub paths, PEM or raw bytes):
        accept only an artifact signed by one of them; the signature is checked before the manifest
        is parsed, then every file's checksum, and no file may be added."""
        root = Path(root)
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            hint = " (a build may have failed before it finished)" if root.exists() else ""
            if _partials(root.absolute()):
                hint = " (a build into it has not finished: it is running or was interrupted)"
            raise ArtifactError(
                f"{root} is not an edgegen artifact: {MANIFEST} is missing{hint}. "
                f"Build one with `edgegen build MODEL_DIR --out {root}`."
            )
        if trusted_keys is not None:
            from . import signing

            data = manifest_path.read_bytes()
            signing.verify_signature(root, data, list(trusted_keys))
            manifest = manifest_check.parse_json(data, str(manifest_path))
            verify = True
        else:
            manifest = manifest_check.read_json(manifest_path)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ArtifactError(f"{manifest_path} is not an edgegen manifest (no format {FORMAT!r}).")
        version = manifest.get("schema_version")
        if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
            raise ArtifactError(
                f"{root} uses artifact schema {version}, newer than this edgegen reads ({SCHEMA_VERSION}). "
                f"Upgrade edgegen (`pip install -U edgegen`) or rebuild the artifact with this version."
            )
        manifest_check.check_manifest(manifest, str(manifest_path))
        art = cls(root, manifest)
        if trusted_keys is not None:
            from .signing import unlisted_files

            added = unlisted_files(root, manifest["files"])
            if added:
                raise ArtifactError(f"{root}: file {added[0]} is not in the signed manifest: it was added after "
                                    f"signing. The artifact is refused.")
        art._check_files(verify)
        return art

    def _check_files(self, verify: bool) -> None:
        files = self.manifest["files"]
        for comp in self.components.values():
            for rel in comp.files.values():
                if rel not in files:
                    raise ArtifactError(f"{self.root}: component {comp.name!r} names {rel}, which the manifest does not list.")
        inside = self.root.resolve()
        for rel, info in files.items():
            path = self.root / rel
            if path.is_symlink() or not path.resolve().is_relative_to(inside):
                raise ArtifactError(f"{self.root}: file {rel} is a link or lies outside the artifact folder; "
                                    f"an artifact holds plain files only. Copy the artifact again or rebuild it.")
            if not path.is_file():
                raise ArtifactError(f"{self.root}: file {rel} is missing; the artifact is incomplete. Rebuild it.")
            size = path.stat().st_size
            if size != info["bytes"]:
                raise ArtifactError(
                    f"{self.root}: file {rel} has {size} bytes, the manifest says {info['bytes']}; "
                    f"it is truncated or was replaced. Copy the artifact again or rebuild it."
                )
            if verify and sha256_file(path) != info["sha256"]:
                raise ArtifactError(
                    f"{self.root}: file {rel} fails its SHA-256 checksum; it is corrupt or was edited. "
                    f"Copy the artifact again or rebuild it."
                )
        for comp in self.components.values():
            weights = comp.files.get("weights")
            if weights:
                self._check_weight_specs(comp, self.root / weights)

    def _check_weight_specs(self, comp: Component, path: Path) -> None:
        found = safetensors_io.specs(path)
        for spec in comp.weights:
            got = found.get(spec.name)
            if got is None:
                raise ArtifactError(f"{path}: weight {spec.name!r} of {comp.name!r} is missing; rebuild the artifact.")
            if got != (spec.dtype, spec.shape):
                raise ArtifactError(
                    f"{path}: weight {spec.name!r} is {got[0]}{list(got[1])}, the manifest says "
                    f"{spec.dtype}{list(spec.shape)}; rebuild the artifact."
                )

    def file(self, relpath: str) -> Path:
        return self.root / relpath

    @property
    def pipeline(self) -> dict:
        return self.manifest["pipeline"]

    def component(self, name: str) -> Component:
        if name not in self.components:
            raise ArtifactError(f"{self.root} has no component {name!r}; it has {sorted(self.components)}.")
        return self.components[name]

    def total_bytes(self) -> int:
        return sum(info["bytes"] for info in self.manifest["files"].values())
