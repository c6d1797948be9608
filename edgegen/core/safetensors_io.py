"""Reading and writing the safetensors format with numpy alone.

Format: an 8-byte little-endian header length, a JSON header mapping each
tensor name to {dtype, shape, data_offsets}, then the raw little-endian data.
Reading maps the file, so weights are paged in rather than copied.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from .errors import ArtifactError

_TO_ST = {"float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32",
          "int8": "I8", "uint8": "U8", "uint32": "U32", "float64": "F64", "int16": "I16", "bool": "BOOL"}
_FROM_ST = {v: k for k, v in _TO_ST.items()}
_MAX_HEADER = 100 * 1024 * 1024


def save(tensors: dict[str, np.ndarray], path: str | Path, metadata: dict | None = None) -> None:
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    arrays = []
    for name, value in tensors.items():
        arr = np.ascontiguousarray(value)
        dtype = str(arr.dtype)
        if dtype not in _TO_ST:
            raise ValueError(f"safetensors: tensor {name!r} has unsupported dtype {dtype}")
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        header[name] = {"dtype": _TO_ST[dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        arrays.append(arr)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for arr in arrays:
            f.write(arr.tobytes())


def read_header(path: str | Path) -> tuple[dict, int]:
    """Return (header, data_start). Raises ArtifactError on a malformed file."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ArtifactError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > min(_MAX_HEADER, size - 8):
            raise ArtifactError(f"{path}: safetensors header length {n} exceeds the file; it is truncated or corrupt")
        try:
            header = json.loads(f.read(n))
        except ValueError as exc:
            raise ArtifactError(f"{path}: safetensors header is not valid JSON ({exc})") from exc
    data_start = 8 + n
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if data_start + end > size:
        raise ArtifactError(f"{path}: data ends at byte {data_start + end} but the file has {size}; it is truncated")
    return header, data_start


def load(path: str | Path) -> dict[str, np.ndarray]:
    """Map every tensor of a safetensors file as a read-only numpy array."""
    header, start = read_header(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _FROM_ST:
            raise ArtifactError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        lo, hi = info["data_offsets"]
        dtype = np.dtype(_FROM_ST[info["dtype"]]).newbyteorder("<")
        out[name] = mm[start + lo:start + hi].view(dtype).reshape(info["shape"])
    return out


def specs(path: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Name -> (numpy dtype, shape) for each tensor, read from the header alone."""
    header, _ = read_header(path)
    return {k: (_FROM_ST.get(v["dtype"], v["dtype"]), tuple(v["shape"]))
            for k, v in header.items() if k != "__metadata__"}
