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
        except (ValueError, RecursionError) as exc:
            raise ArtifactError(f"{path}: safetensors header is not valid JSON ({exc})") from exc
    data_start = 8 + n
    if not isinstance(header, dict):
        raise ArtifactError(f"{path}: safetensors header is not a JSON object; it is corrupt")
    for name, info in header.items():
        if name != "__metadata__":
            _check_entry(path, name, info, size - data_start)
    return header, data_start


def _check_entry(path: Path, name: str, info, data_bytes: int) -> None:
    """A tensor entry: a known dtype, a shape of non-negative ints, and data offsets inside the file
    that hold exactly that many bytes."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
        raise ArtifactError(f"{where}: its header entry lacks dtype, shape or data_offsets; the file is corrupt")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _FROM_ST:
        raise ArtifactError(f"{where}: unsupported dtype {dtype!r}; the file is corrupt")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise ArtifactError(f"{where}: shape {shape!r} is not a list of non-negative integers; the file is corrupt")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_bytes):
        raise ArtifactError(f"{where}: data_offsets {offsets!r} do not lie inside the file's {data_bytes} data "
                            f"bytes; it is truncated or corrupt")
    expected = int(np.prod(shape, dtype=object)) * np.dtype(_FROM_ST[dtype]).itemsize
    if offsets[1] - offsets[0] != expected:
        raise ArtifactError(f"{where}: holds {offsets[1] - offsets[0]} bytes, its shape {shape} of {dtype} needs "
                            f"{expected}; the file is corrupt")


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
