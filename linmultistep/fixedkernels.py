"""The fused operation of mode 'bits', composed from backend primitives or compiled (numba).

Every step of the bit-exact form (:mod:`linmultistep.fixedpoint`), in either direction, is one
chain of elementwise work -- a shear of V by the network output, then a shear of X by V:

    dV = q(f * a),   V' = dV - V,   X' = X + sign * q(V' * b),   x' = float64(X') * s  in the network's dtype

(q: round-half-even of the float64 product, to int64; sign -1 sampling, +1 inverting). As separate
array operations that is four int64 <-> float64 conversion passes and a fresh array per pass,
which neither numpy nor torch vectorise on most CPUs. Compiled with numba (the optional extra
``linmultistep[fast]``) it is one loop over the arrays, which also counts the network outputs
beyond the range bound (NaN included).

The kernel computes exactly what the composition computes -- the same IEEE float64 products,
round-half-even, conversions to and from int64, one final rounding to the network's dtype -- so a
latent inverted with it reconstructs bit-exactly without it, on any backend (tested bitwise
against the composition). It runs on contiguous CPU arrays (numpy arrays, torch CPU tensors
through ``.numpy()`` views) with f and x' float32/float64; everything else (CUDA tensors, half
precision, strided arrays, no numba) takes the composition. Asked for, the loop also writes the
per-row checksums of dV that an inversion records in its latent (the backends' ``checksum``). ``LINMULTISTEP_KERNELS=0`` in the
environment, or :func:`disabled`, switches the kernel off.

>>> import numpy as np
>>> from linmultistep.numpy_backend import NumpyBackend
>>> f, V, X = np.array([0.5, 1.5, -2.5], np.float32), np.array([1, 1, 1]), np.array([10, 20, 30])
>>> out = shear(NumpyBackend(), f, 1.0, 64.0, V, X, 0.5, -1, 0.25, np.zeros(1, np.float32), keep=True)
>>> out.dV.tolist(), out.V.tolist()  # q(f): ties to even; V' = dV - V
([0, 2, -2], [-1, 1, -3])
>>> out.X.tolist(), out.x.tolist()  # X - q(V' / 2): q(-0.5) = 0, q(0.5) = 0, q(-1.5) = -2
([10, 20, 32], [2.5, 5.0, 8.0])
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
import warnings
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np

from .arrays import ArrayBackend
from .caller import outside_stacklevel

__all__ = ["shear", "Sheared", "compose_shear", "available", "disabled", "runs_on", "kernel_shear", "KernelWarning",
           "checksum_rows", "checksum_weights"]

# |q| stays below 2^62 on every run inside the bounds (fixedpoint.fixed_point_scales). Beyond them (a
# network output past the bound or NaN, a crafted latent) the kernel writes 0 instead of converting an
# out-of-range float to int64, which is undefined; the run's bound check refuses such a run.
_Q_LIMIT = 2.0**62


# --- the checksum of an increment (the backends' ``checksum`` and the kernel) ----------------------
def checksum_rows(shape: tuple) -> int:
    """Batch rows of a checksum: the first axis of an array of 2+ dimensions, else the whole array."""
    return int(shape[0]) if len(shape) >= 2 else 1


_WEIGHTS: dict[int, np.ndarray] = {}


def checksum_weights(n: int) -> np.ndarray:
    """Odd int64 weights 1, 3, 5, ... times a large odd constant (wrapping): a change in any one element,
    or a swap of two, changes the checksum."""
    if n not in _WEIGHTS:
        with np.errstate(over="ignore"):
            _WEIGHTS[n] = (np.arange(n, dtype=np.int64) * 2 + 1) * np.int64(0x9E3779B97F4A7C15 - 2**64)
    return _WEIGHTS[n]


# --- the composition (every backend; the reference the kernel is tested against) -------------------
class Sheared(NamedTuple):
    """What one step of mode 'bits' produces (module docstring); ``dV`` and ``digest`` only when asked."""

    V: Any  # V' = dV - V (int64)
    X: Any  # X' = X + sign q(V' b) (int64)
    x: Any  # float64(X') s in the network's dtype
    dV: Any  # the quantised increment q(f a), or None
    over: Any  # lazy count of |f| beyond the bound (NaN included); None when the caller checks the bound
    digest: Any  # the backend's checksum of dV (one value per batch row), or None


def compose_shear(be: ArrayBackend, f: Any, factor: float, V: Any, X: Any, shift: float, sign: int, scale: float,
                  like: Any, keep: bool, digest: bool) -> Sheared:
    """One step from the backend's primitives (V None: V' = dV); ``over`` is None."""
    dV = be.quantize(f, factor)
    V_new = dV if V is None else be.int_lincomb([-1, 1], [V, dV])
    X_new = be.int_lincomb([1, sign], [X, be.quantize(V_new, shift)])
    return Sheared(V_new, X_new, be.dequantize(X_new, scale, like), dV if keep else None, None,
                   be.checksum(dV) if digest else None)


def shear(be: ArrayBackend, f: Any, factor: float, bound: float, V: Any, X: Any, shift: float, sign: int,
          scale: float, like: Any, keep: bool = False, digest: bool = False) -> Sheared:
    """The step of the module docstring (a = ``factor``, b = ``shift``, s = ``scale``; x' in the dtype
    and on the device of ``like``); dV when ``keep``, its per-row checksum when ``digest``.

    A backend may fuse it (a method ``shear`` with this signature, which also counts ``over``, the
    elements with not |f| <= bound, NaN included, as a lazy scalar); composed, ``over`` is None and the
    caller checks the bound itself. Elements beyond the bound give unspecified values: the caller's
    check refuses the run."""
    fused = getattr(be, "shear", None)
    if fused is not None:
        return fused(f, factor, bound, V, X, shift, sign, scale, like, keep, digest)
    return compose_shear(be, f, factor, V, X, shift, sign, scale, like, keep, digest)


# --- the compiled kernel (numpy arrays; the backends pass views) -------------------------------------
_LOCK = threading.Lock()
_KERNEL: "Callable | None | bool" = False  # False: not tried yet; None: unavailable
_OFF = threading.local()


def available() -> bool:
    """True when the compiled kernel runs (numba importable, not switched off)."""
    return _kernel() is not None


def runs_on(f_dtype: Any, x_dtype: Any) -> bool:
    """True when the kernel runs for a network output of ``f_dtype`` and a view of ``x_dtype`` (numpy
    dtypes): a backend asks before it allocates the outputs."""
    return np.dtype(f_dtype) in _FLOATS and np.dtype(x_dtype) in _FLOATS and available()


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the composition instead of the kernel in this thread for the duration of the block."""
    before = getattr(_OFF, "on", False)
    _OFF.on = True
    try:
        yield
    finally:
        _OFF.on = before


def _kernel() -> "Callable | None":
    global _KERNEL
    if getattr(_OFF, "on", False) or os.environ.get("LINMULTISTEP_KERNELS", "1") == "0":
        return None
    if _KERNEL is False:
        with _LOCK:
            if _KERNEL is False:
                _KERNEL = _compile()
    return _KERNEL  # type: ignore[return-value]


def _compile() -> "Callable | None":
    try:
        import numba
    except ImportError:
        return None
    variants: dict[tuple[bool, bool, bool], Callable] = {}

    def variant(has_V: bool, keep: bool, digest: bool) -> Callable:
        """The loop for one combination of the optional parts, compiled with them as constants (a branch
        in the loop would keep it from being vectorised)."""
        key = (has_V, keep, digest)
        if key not in variants:
            with _LOCK:
                if key not in variants:
                    variants[key] = _shear_loop(numba, has_V, keep, digest)
        return variants[key]

    return variant


def _shear_loop(numba: Any, has_V: bool, keep: bool, digest: bool) -> Callable:
    # cache=True: compiled once per machine, variant and signature, then loaded; no fastmath: IEEE
    # operations in the order written (no contraction into fused multiply-adds), as the composition does.
    @numba.njit(cache=True, nogil=True)
    def shear_loop(f, factor, bound, V, X, shift, sign, scale, out_V, out_X, out_x, out_dV, weights,
                   out_digest):  # pragma: no cover - compiled
        over = 0
        rows = out_digest.size
        cols = f.size // rows
        for r in range(rows):
            acc = np.int64(0)
            for c in range(cols):
                j = r * cols + c
                e = np.float64(f[j])
                inside = abs(e) <= bound  # False for NaN
                over += not inside
                d = np.int64(np.rint(e * factor)) if inside else np.int64(0)
                if keep:
                    out_dV[j] = d
                if digest:
                    acc += d * weights[c]  # wrapping int64, as the backends' checksum
                v = d - V[j] if has_V else d
                out_V[j] = v
                y = np.rint(np.float64(v) * shift)
                Xn = X[j] + sign * (np.int64(y) if abs(y) < _Q_LIMIT else np.int64(0))
                out_X[j] = Xn
                out_x[j] = np.float64(Xn) * scale
            if digest:
                out_digest[r] = acc
        return over

    return shear_loop


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def kernel_shear(f: np.ndarray, factor: float, bound: float, V: "np.ndarray | None", X: np.ndarray, shift: float,
                 sign: int, scale: float, out_V: np.ndarray, out_X: np.ndarray, out_x: np.ndarray,
                 out_dV: "np.ndarray | None" = None, out_digest: "np.ndarray | None" = None) -> "int | None":
    """Fill the outputs with the kernel and return how many |f| are not <= ``bound`` (NaN counted); None
    (nothing written) when it cannot run (see :func:`runs_on`). Arrays: C-contiguous numpy arrays (or
    views) of one shape; f and out_x float32/float64, the rest int64; ``bound * factor`` below 2^62 (the
    caller's scales). With ``out_digest`` (:func:`checksum_rows` int64 values) the rows' checksums of dV
    are written too."""
    global _KERNEL
    k = _kernel()
    if k is None or f.dtype not in _FLOATS or out_x.dtype not in _FLOATS:
        return None
    digest = out_digest is not None
    if digest:
        weights = checksum_weights(f.size // max(out_digest.size, 1))
    else:
        out_digest, weights = _ONE_ROW, _NO_WEIGHTS
    flat = [a.reshape(-1) for a in (f, X if V is None else V, X, out_V, out_X, out_x, out_V if out_dV is None else out_dV)]
    try:
        loop = k(V is not None, out_dV is not None, digest)
        return int(loop(flat[0], float(factor), float(bound), flat[1], flat[2], float(shift), np.int64(sign),
                        float(scale), *flat[3:], weights, out_digest))
    except Exception as exc:  # numba could not compile for this machine: the composition, with a word
        if type(exc).__module__.split(".")[0] != "numba":
            raise
        _KERNEL = None
        first = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()[:1]  # numba colours its messages
        warnings.warn(f"linmultistep: the compiled step of mode 'bits' is unavailable ({type(exc).__name__}: "
                      f"{first[0] if first else ''}); using array operations (same results, slower)",
                      KernelWarning, stacklevel=outside_stacklevel())
        return None


_ONE_ROW = np.zeros(1, np.int64)  # one row when no digest is asked (never written then)
_NO_WEIGHTS = np.zeros(0, np.int64)


class KernelWarning(UserWarning):
    """The compiled kernel could not be used; the run continues with the composition."""
