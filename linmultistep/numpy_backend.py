"""NumPy array backend (part of the core, so that the core runs from a plain source checkout)."""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import numpy as np

from . import fixedkernels
from .fixedkernels import checksum_rows, checksum_weights

__all__ = ["NumpyBackend", "checksum_weights"]


class NumpyBackend:
    """Linear combinations in the arrays' own dtype, accumulated in place in one output buffer."""

    name = "numpy"

    def lincomb(self, coeffs: Sequence[float], arrays: Sequence[np.ndarray]) -> np.ndarray:
        if len(coeffs) != len(arrays) or not arrays:
            raise ValueError(f"lincomb needs as many coefficients as arrays, got {len(coeffs)} and {len(arrays)}")
        dtype = np.result_type(*arrays)
        # overflow is reported by the run's own finite checks, with the grid index: no numpy warning
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.multiply(arrays[0], dtype.type(coeffs[0]), dtype=dtype)
            tmp = np.empty_like(out)
            for c, x in zip(coeffs[1:], arrays[1:]):
                np.multiply(x, dtype.type(c), out=tmp, dtype=dtype)
                out += tmp
        return out

    def stable_shear(self, eps: np.ndarray, c: float, v: "np.ndarray | None", xbar: np.ndarray, w: float,
                     s: float) -> "tuple[np.ndarray, np.ndarray, np.ndarray]":
        """Mode 'stable''s step in one call: v' = -v + c eps (c eps when v is None), xbar' = xbar + w v',
        x' = s xbar' (:func:`linmultistep.stable.stable_shear`), rounded as :meth:`lincomb` rounds (each
        product, then each sum), so the same bits, with one new array per output and no temporaries."""
        dtype = np.result_type(eps, xbar) if v is None else np.result_type(eps, v, xbar)
        t = dtype.type
        with np.errstate(over="ignore", invalid="ignore"):
            v_new = np.multiply(eps, t(c), dtype=dtype)
            if v is not None:
                np.subtract(v_new, v, out=v_new)  # fl(fl(c eps) - v): lincomb's fl(-v + fl(c eps))
            xbar_new = np.multiply(v_new, t(w), dtype=dtype)
            np.add(xbar, xbar_new, out=xbar_new)
            return v_new, xbar_new, np.multiply(xbar_new, t(s), dtype=dtype)

    def stable_shear_(self, eps: np.ndarray, c: float, v: np.ndarray, xbar: np.ndarray, w: float,
                      s: float) -> np.ndarray:
        """:meth:`stable_shear` in place: v and xbar (two distinct arrays the caller owns, of the result
        dtype) become v' and xbar', with the same bits; x' is returned (one temporary, one new array)."""
        t = v.dtype.type
        with np.errstate(over="ignore", invalid="ignore"):
            tmp = np.multiply(eps, t(c), dtype=v.dtype)
            np.subtract(tmp, v, out=v)  # fl(fl(c eps) - v), as stable_shear
            np.multiply(v, t(w), out=tmp)
            np.add(xbar, tmp, out=xbar)
            return np.multiply(xbar, t(s))

    def all_finite(self, x: np.ndarray) -> bool:
        if np.asarray(x).dtype.kind in "iub":  # integers (the fixed-point state) are always finite
            return True
        # the sum first (one reduction, no mask), finite whenever every entry is; a non-finite sum (NaN,
        # inf, or finite values overflowing) is settled by the exact test
        if np.size(x) and np.asarray(x).dtype.kind == "f" and math.isfinite(self.finite_flag(x)):
            return True
        return bool(np.isfinite(x).all())

    def finite_flag(self, x: np.ndarray) -> float:
        # the sum: one reduction instead of isfinite(x).all()'s mask; a NaN or inf anywhere makes it
        # non-finite (an overflow of finite values is a false alarm that the exact check clears)
        x = np.asarray(x)
        if x.dtype.kind in "iub":
            return 0.0
        with np.errstate(over="ignore", invalid="ignore"):
            return float(np.sum(x, dtype=np.float64 if x.dtype.itemsize < 4 else None))

    def read(self, values: Sequence) -> list:
        return [v.tolist() if hasattr(v, "tolist") else v for v in values]

    def checksum(self, q: np.ndarray) -> np.ndarray:
        """Position-weighted int64 sums (wrapping) of each batch row of an int64 array (the first axis
        of an array of 2+ dimensions; the whole array otherwise): equal rows give equal sums."""
        q = np.asarray(q, dtype=np.int64)
        rows = q.reshape(checksum_rows(q.shape), -1)
        return rows @ checksum_weights(rows.shape[1])

    def cast_like(self, x: np.ndarray, ref: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        return x if x.dtype == ref.dtype else x.astype(ref.dtype)

    # --- fixed point (bit-exact mode) -------------------------------------------------
    def max_abs(self, x: np.ndarray) -> float:
        x = np.asarray(x)
        return float(np.max(np.abs(x))) if x.size else 0.0

    def max_abs_lazy(self, x: np.ndarray) -> float:
        return self.max_abs(x)

    def quantize(self, x: np.ndarray, factor: float) -> np.ndarray:
        y = np.multiply(np.asarray(x), np.float64(factor), dtype=np.float64)
        return np.rint(y, out=y).astype(np.int64)

    def dequantize(self, q: np.ndarray, factor: float, like: np.ndarray) -> np.ndarray:
        y = np.multiply(q, np.float64(factor), dtype=np.float64)
        return y.astype(np.asarray(like).dtype, copy=False)

    def int_lincomb(self, coeffs: Sequence[int], arrays: Sequence[np.ndarray]) -> np.ndarray:
        if len(coeffs) != len(arrays) or not arrays:
            raise ValueError(f"int_lincomb needs as many coefficients as arrays, got {len(coeffs)} and {len(arrays)}")
        c = [int(v) for v in coeffs]
        if c == [-1, 1]:  # the shear V <- -V + dV in one pass
            return np.subtract(arrays[1], arrays[0], dtype=np.int64)
        if len(c) > 1 and c[0] == 1 and abs(c[1]) == 1:
            out, rest = (np.add if c[1] == 1 else np.subtract)(arrays[0], arrays[1], dtype=np.int64), 2
        else:
            out, rest = np.multiply(arrays[0], np.int64(c[0]), dtype=np.int64), 1
        for cj, x in zip(c[rest:], arrays[rest:]):
            out += np.multiply(x, np.int64(cj), dtype=np.int64)
        return out

    def shear(self, f: np.ndarray, factor: float, bound: float, V: "np.ndarray | None", X: np.ndarray, shift: float,
              sign: int, scale: float, like: np.ndarray, keep: bool, digest: bool) -> fixedkernels.Sheared:
        """Mode 'bits'' step in one compiled pass when it can (:func:`linmultistep.fixedkernels.shear`)."""
        f, x_dtype = np.asarray(f), np.asarray(like).dtype
        if (f.size and fixedkernels.runs_on(f.dtype, x_dtype) and _flat_ok(f) and _flat_ok(X, np.int64)
                and X.shape == f.shape and (V is None or (_flat_ok(V, np.int64) and V.shape == f.shape))):
            out_V, out_X, out_x = np.empty(f.shape, np.int64), np.empty(f.shape, np.int64), np.empty(f.shape, x_dtype)
            out_dV = np.empty(f.shape, np.int64) if keep else None
            out_digest = np.empty(checksum_rows(f.shape), np.int64) if digest else None
            over = fixedkernels.kernel_shear(f, factor, bound, V, X, shift, sign, scale, out_V, out_X, out_x, out_dV,
                                             out_digest)
            if over is not None:
                return fixedkernels.Sheared(out_V, out_X, out_x, out_dV, over, out_digest)
        return fixedkernels.compose_shear(self, f, factor, V, X, shift, sign, scale, like, keep, digest)

    def equal(self, a: np.ndarray, b: np.ndarray) -> bool:
        return bool(np.array_equal(a, b))

    @contextlib.contextmanager
    def deterministic(self) -> Iterator[None]:
        """NumPy's kernels are deterministic for a given array and build: nothing to switch."""
        yield


def _flat_ok(a: object, dtype: "type | None" = None) -> bool:
    """A C-contiguous numpy array (of ``dtype``): its reshape(-1) is a view the kernel can fill."""
    return isinstance(a, np.ndarray) and a.flags.c_contiguous and (dtype is None or a.dtype == dtype)
