"""Mode 'stable''s step as one compiled pass (numba, the optional extra ``linmultistep[fast]``).

A step of the shear form (:mod:`linmultistep.stable`, :func:`linmultistep.stable.stable_shear`) is

    v' = -v + c eps   (c eps at the starter),   xbar' = xbar + w v',   x' = s xbar'

three elementwise sums over the state. As array operations that is four passes (the negation, the
two sums, the scaling), each reading its inputs back from memory; at latent sizes the step is bound
by memory traffic, so one loop that reads eps, v, xbar once and writes v', xbar', x' once costs
less (measured in benchmarks/step_cost.py, docs/performance.md).

The loop must give the bits of the array operations it replaces. Both sums are one rounding each in
torch's CPU kernels (``add(a, b, alpha=c)`` is a fused multiply-add where the build vectorises with
FMA) and two in numpy's (the product, then the sum); the loop is compiled in either flavour
(``fused``: LLVM's ``llvm.fma``, exact on every CPU), and a backend runs it only after checking on
values where the two flavours differ that it reproduces its own operations (:func:`agrees`), so
a CPU or build whose torch rounds otherwise takes the array operations. ``LINMULTISTEP_KERNELS=0`` or
:func:`linmultistep.fixedkernels.disabled` switch it off, as for mode 'bits'.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np

from . import fixedkernels

__all__ = ["kernel_stable_shear", "agrees"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_LOCK = threading.Lock()
_LOOPS: dict[tuple[bool, bool], Callable] = {}
_BROKEN = False


def _loop(fused: bool, has_v: bool) -> "Callable | None":
    """The compiled loop for one flavour (fma or two roundings) and starter-or-not, or None without numba."""
    global _BROKEN
    if _BROKEN or not fixedkernels.available():  # numba missing or switched off (shared switch)
        return None
    key = (fused, has_v)
    if key not in _LOOPS:
        with _LOCK:
            if key not in _LOOPS:
                try:
                    _LOOPS[key] = _compile(fused, has_v)
                except Exception:  # pragma: no cover - a numba that cannot build it: the array operations
                    _BROKEN = True
                    return None
    return _LOOPS[key]


def _compile(fused: bool, has_v: bool) -> Callable:
    import numba
    from numba.extending import intrinsic

    @intrinsic
    def fma(typingctx: Any, a: Any, b: Any, c: Any) -> Any:  # pragma: no cover - compiled
        """a * b + c rounded once (llvm.fma: correct on every CPU, a hardware FMA where there is one)."""
        def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            ty = context.get_value_type(sig.return_type)
            return builder.call(builder.module.declare_intrinsic("llvm.fma", [ty, ty, ty]), args)

        return a(a, a, a), codegen

    # no fastmath: IEEE operations as written (no contraction in the two-rounding flavour)
    @numba.njit(nogil=True)
    def loop(eps, c, v, xbar, w, s, out_v, out_xbar, out_x):  # pragma: no cover - compiled
        for j in range(eps.size):
            if has_v:
                nv = fma(c, eps[j], -v[j]) if fused else c * eps[j] - v[j]
            else:
                nv = c * eps[j]
            nx = fma(w, nv, xbar[j]) if fused else xbar[j] + w * nv
            out_v[j] = nv
            out_xbar[j] = nx
            out_x[j] = s * nx

    return loop


def kernel_stable_shear(eps: np.ndarray, c: float, v: "np.ndarray | None", xbar: np.ndarray, w: float, s: float,
                        out_v: np.ndarray, out_xbar: np.ndarray, out_x: np.ndarray, fused: bool) -> bool:
    """Fill the outputs (C-contiguous arrays of eps's shape and dtype, float32 or float64; views are fine)
    with one step; False (nothing written) when the loop cannot run (no numba, switched off, other dtype).
    ``fused``: each sum rounded once (torch's CPU kernels) or product and sum rounded separately (numpy)."""
    dt = eps.dtype
    if dt not in _FLOATS or xbar.dtype != dt or (v is not None and v.dtype != dt):
        return False
    loop = _loop(fused, v is not None)
    if loop is None:
        return False
    t = dt.type
    flat = [a.reshape(-1) for a in (eps, xbar if v is None else v, xbar, out_v, out_xbar, out_x)]
    loop(flat[0], t(c), flat[1], flat[2], t(w), t(s), flat[3], flat[4], flat[5])
    return True


def agrees(compose: Callable[..., tuple], make: Callable[[np.ndarray], Any], view: Callable[[Any], np.ndarray],
           dtype: Any, fused: bool) -> bool:
    """Whether the loop reproduces ``compose(eps, c, v, xbar, w, s)`` (a backend's array operations) bit for
    bit on values where one and two roundings differ, with and without v, at a length with a vector tail;
    ``make`` turns a numpy array into the backend's array, ``view`` a backend array into a numpy view."""
    rng = np.random.default_rng(12345)
    n = 1031  # odd: the vector loops' scalar tails run too
    eps, v, xbar = (rng.standard_normal(n).astype(dtype) for _ in range(3))
    c, w, s = 1.2345678901234567, -0.98765432101234567, 0.87654321098765432
    for has_v in (True, False):
        want = compose(make(eps), c, make(v) if has_v else None, make(xbar), w, s)
        outs = [np.empty(n, dtype) for _ in range(3)]
        if not kernel_stable_shear(eps, c, v if has_v else None, xbar, w, s, *outs, fused=fused):
            return False
        if not all(np.array_equal(view(a).view(np.uint8), b.view(np.uint8)) for a, b in zip(want, outs)):
            return False
    return True
