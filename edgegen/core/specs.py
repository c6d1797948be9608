"""Tensor specifications: the name, dtype and shape a component expects or returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

DTYPES = ("float32", "float16", "int32", "int64", "uint8", "int8", "uint32")
INTEGER_DTYPES = ("int32", "int64", "uint8", "int8", "uint32")


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]
    # integer inputs that index a table (class labels, token ids): the valid values, both ends included
    range: tuple[int, int] | None = None

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"tensor {self.name!r}: dtype {self.dtype!r} is not one of {DTYPES}")
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if self.range is not None:
            object.__setattr__(self, "range", (int(self.range[0]), int(self.range[1])))

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def to_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape),
                **({"range": list(self.range)} if self.range is not None else {})}

    @classmethod
    def from_json(cls, data: dict) -> "TensorSpec":
        return cls(data["name"], data["dtype"], tuple(data["shape"]), data.get("range"))

    @classmethod
    def of(cls, name: str, array, range: tuple[int, int] | None = None) -> "TensorSpec":
        return cls(name, str(np.dtype(array.dtype)), tuple(array.shape), range)

    def check(self, array, where: str) -> None:
        """Raise InputError unless `array` has this spec's dtype and shape."""
        shape = tuple(getattr(array, "shape", ()))
        dtype = str(np.dtype(array.dtype)) if hasattr(array, "dtype") else type(array).__name__
        if shape != self.shape or dtype != self.dtype:
            raise InputError(
                f"{where}: input {self.name!r} must be {self.dtype} with shape {list(self.shape)}, "
                f"got {dtype} with shape {list(shape)}. The artifact was built for fixed shapes; "
                f"rebuild it (e.g. with other --height/--width) to change them."
            )
        if self.range is not None and array.size:
            lo, hi = self.range
            bad = array[(array < lo) | (array > hi)]
            if bad.size:
                raise InputError(
                    f"{where}: input {self.name!r} holds {int(bad.flat[0])}, outside its valid range "
                    f"{lo}..{hi} (it indexes a table of {hi + 1} rows); pass values in that range."
                )


def check_inputs(specs: list[TensorSpec], inputs: dict, where: str) -> list:
    """Check a dict of inputs against specs; return the arrays in spec order."""
    names = [s.name for s in specs]
    missing = [n for n in names if n not in inputs]
    extra = [n for n in inputs if n not in names]
    if missing or extra:
        raise InputError(
            f"{where}: expected inputs {names}; missing {missing}, unexpected {extra}."
        )
    arrays = []
    for spec in specs:
        spec.check(inputs[spec.name], where)
        arrays.append(inputs[spec.name])
    return arrays
