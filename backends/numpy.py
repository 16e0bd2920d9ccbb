"""NumPy array backend."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["NumpyBackend"]


class NumpyBackend:
    """Linear combinations in the arrays' own dtype, accumulated in place in one output buffer."""

    name = "numpy"

    def lincomb(self, coeffs: Sequence[float], arrays: Sequence[np.ndarray]) -> np.ndarray:
        if len(coeffs) != len(arrays) or not arrays:
            raise ValueError(f"lincomb needs as many coefficients as arrays, got {len(coeffs)} and {len(arrays)}")
        dtype = np.result_type(*arrays)
        out = np.multiply(arrays[0], dtype.type(coeffs[0]), dtype=dtype)
        tmp = np.empty_like(out)
        for c, x in zip(coeffs[1:], arrays[1:]):
            np.multiply(x, dtype.type(c), out=tmp, dtype=dtype)
            out += tmp
        return out

    def all_finite(self, x: np.ndarray) -> bool:
        return bool(np.isfinite(x).all())

    def cast_like(self, x: np.ndarray, ref: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        return x if x.dtype == ref.dtype else x.astype(ref.dtype)
