"""Signed artifacts: an Ed25519 signature over manifest.json, which holds every file's SHA-256.

`manifest.sig` (JSON) sits beside the manifest and holds the signer's public key and the
signature over the manifest's exact bytes. An app that insists on artifacts from its own build
passes its public keys; the signature is then checked before the manifest is parsed, and every
file's hash (and that no file is added) before any library is opened. `cryptography` is imported
on first use.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from .errors import ArtifactError, EdgegenError, require

SIGNATURE = "manifest.sig"
SIGNATURE_FORMAT = "edgegen-signature"
ALGORITHM = "ed25519"
_MAX_SIGNATURE_BYTES = 4096


def _crypto():
    require("cryptography", "runtime")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return serialization, ed25519


def keygen(path: str | Path) -> tuple[Path, Path]:
    """Write a new private key to `path` (PEM, PKCS#8, readable by its owner only) and its public
    key to `path`.pub (PEM). Refuses to overwrite either."""
    serialization, ed25519 = _crypto()
    path = Path(path)
    public = path.with_name(path.name + ".pub")
    for p in (path, public):
        if p.exists():
            raise EdgegenError(f"{p} already exists; choose another key file name (keys are never overwritten).")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return path, public


def _private_key(path: str | Path):
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise EdgegenError(f"{path}: not a readable unencrypted PEM private key ({exc}); make one with "
                           f"`edgegen keygen KEYFILE`.") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise EdgegenError(f"{path}: an {type(key).__name__}, not an Ed25519 key; make one with `edgegen keygen`.")
    return key


def public_key_bytes(key) -> bytes:
    """The raw 32 bytes of a trusted key given as a path to a PEM public key, PEM bytes or raw bytes."""
    serialization, ed25519 = _crypto()
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if isinstance(key, (str, os.PathLike)):
        try:
            key = Path(key).read_bytes()
        except OSError as exc:
            raise EdgegenError(f"trusted key {key}: cannot be read ({exc.strerror}).") from exc
    if isinstance(key, bytes) and len(key) == 32:
        return key
    try:
        loaded = serialization.load_pem_public_key(key)
    except (ValueError, TypeError) as exc:
        raise EdgegenError(f"trusted key: not a PEM public key or 32 raw bytes ({exc}); pass the .pub file "
                           f"`edgegen keygen` wrote.") from exc
    if not isinstance(loaded, ed25519.Ed25519PublicKey):
        raise EdgegenError(f"trusted key: an {type(loaded).__name__}, not an Ed25519 public key.")
    return loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign(root: str | Path, keyfile: str | Path) -> Path:
    """Sign the artifact at `root` after checking it (every file against its checksum), replacing
    any earlier signature. Returns the signature file's path."""
    from .artifact import MANIFEST, Artifact

    root = Path(root)
    key = _private_key(keyfile)
    Artifact.open(root, verify=True)
    serialization, _ = _crypto()
    signature = key.sign((root / MANIFEST).read_bytes())
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    record = {"format": SIGNATURE_FORMAT, "algorithm": ALGORITHM, "signed": MANIFEST,
              "public_key": base64.b64encode(raw).decode(), "signature": base64.b64encode(signature).decode()}
    path = root / SIGNATURE
    tmp = root / f".{SIGNATURE}.{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    return path


def verify_signature(root: Path, manifest_bytes: bytes, trusted_keys: list) -> None:
    """Raise ArtifactError unless `root` carries a signature by one of `trusted_keys` over exactly
    `manifest_bytes`."""
    _, ed25519 = _crypto()
    from cryptography.exceptions import InvalidSignature

    trusted = {public_key_bytes(k) for k in trusted_keys}
    path = root / SIGNATURE
    if path.is_symlink() or not path.is_file():
        raise ArtifactError(f"{root}: {SIGNATURE} is missing: the artifact is unsigned, and only artifacts signed "
                            f"by a trusted key are accepted. Sign it (`edgegen sign {root} --key KEYFILE`) or get "
                            f"a signed copy.")
    try:
        if path.stat().st_size > _MAX_SIGNATURE_BYTES:
            raise ValueError("too large")
        record = json.loads(path.read_bytes())
        if record.get("format") != SIGNATURE_FORMAT or record.get("algorithm") != ALGORITHM:
            raise ValueError(f"not an {ALGORITHM} {SIGNATURE_FORMAT}")
        public = base64.b64decode(record["public_key"], validate=True)
        signature = base64.b64decode(record["signature"], validate=True)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ArtifactError(f"{path}: not a readable signature ({exc}); the artifact is refused. Sign it again "
                            f"or get a signed copy.") from exc
    if public not in trusted:
        raise ArtifactError(f"{path}: signed by a key that is not trusted here (public key "
                            f"{base64.b64encode(public).decode()}); the artifact is refused.")
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(public).verify(signature, manifest_bytes)
    except (InvalidSignature, ValueError) as exc:
        raise ArtifactError(f"{root}: manifest.json does not match its signature in {SIGNATURE}: the manifest "
                            f"was changed after signing. The artifact is refused.") from exc


def unlisted_files(root: Path, listed) -> list[str]:
    """Files below `root` that the manifest does not list (besides the manifest and its signature)."""
    from .artifact import MANIFEST

    listed = set(listed) | {MANIFEST, SIGNATURE}
    return sorted(rel for rel in (p.relative_to(root).as_posix() for p in root.rglob("*")
                                  if p.is_file() or p.is_symlink()) if rel not in listed)
