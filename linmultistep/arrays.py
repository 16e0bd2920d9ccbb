"""The array-backend protocol: the integrator's only contact with array libraries.

A step of any method is a linear combination of stored arrays with float64 host
coefficients, so that is the one hot operation a backend supplies. The bit-exact mode
(:mod:`linmultistep.fixedpoint`) also needs a few integer operations: rounding onto a
binary fixed-point grid (int64), exact integer sums, converting back to the network's
dtype, and a switch to deterministic kernels. A backend may also fuse a whole step of that
mode into one pass (an optional method ``shear``, see :func:`linmultistep.fixedkernels.shear`),
and a whole step of mode 'stable' into one call (an optional method ``stable_shear``, and
``stable_shear_``, the same step writing over the run's own v and xbar, see
:func:`linmultistep.stable.stable_shear`); without them the steps are composed from the operations
below, with the same numbers.
"""

from __future__ import annotations

import importlib
from typing import Any, ContextManager, Protocol, Sequence, runtime_checkable

__all__ = ["ArrayBackend", "get_backend", "register_backend", "check_interval"]


@runtime_checkable
class ArrayBackend(Protocol):
    """What the integrator needs from an array library."""

    name: str

    def lincomb(self, coeffs: Sequence[float], arrays: Sequence[Any]) -> Any:
        """sum_j coeffs[j] * arrays[j], returned as a new array of the arrays' dtype.

        ``coeffs`` are Python floats computed in float64 on the host; zero coefficients may
        be skipped by the caller. Inputs are never modified.
        """
        ...

    def all_finite(self, x: Any) -> bool:
        """True when every entry of x is finite."""
        ...

    def finite_flag(self, x: Any) -> Any:
        """A lazy scalar (may stay on x's device until :meth:`read`) that is finite when every entry of
        x is, e.g. the sum; a false alarm is allowed (it is confirmed with :meth:`all_finite`), a missed
        NaN is not."""
        ...

    def read(self, values: Sequence[Any]) -> list[Any]:
        """Python scalars of lazy values (flags from :meth:`finite_flag` or comparisons, checksums), read
        in one go: the only host synchronisation of a run's checks."""
        ...

    def cast_like(self, x: Any, ref: Any) -> Any:
        """x with ref's dtype (and device); x itself when they already agree.

        The integrator casts every vector-field output to the state's dtype, so a network
        that answers in another precision never silently changes the state's precision.
        """
        ...

    # --- fixed point (bit-exact mode) -------------------------------------------------
    def max_abs(self, x: Any) -> float:
        """max |x| as a Python float (0.0 for an empty array); used to bound the fixed-point range."""
        ...

    def max_abs_lazy(self, x: Any) -> Any:
        """max |x| as a lazy scalar (read with :meth:`read`), for bounds checked with the deferred checks."""
        ...

    def quantize(self, x: Any, factor: float) -> Any:
        """int64 array round(float64(x) * factor), ties to even; x is a float or int64 array.

        The product is formed in float64 so that the result is a deterministic function of x
        on every device; the caller guarantees |x * factor| < 2**62 (no overflow check here).
        """
        ...

    def dequantize(self, q: Any, factor: float, like: Any) -> Any:
        """float64(q) * factor cast to the dtype (and device) of ``like``: the network's view of q."""
        ...

    def int_lincomb(self, coeffs: Sequence[int], arrays: Sequence[Any]) -> Any:
        """sum_j coeffs[j] * arrays[j] exactly in int64 (small integer coefficients, no overflow)."""
        ...

    def checksum(self, q: Any) -> Any:
        """A position-weighted wrapping int64 sum of an int64 array (lazy on a device); equal arrays
        give equal checksums on every backend."""
        ...

    def equal(self, a: Any, b: Any) -> bool:
        """True when a and b have the same shape and identical values."""
        ...

    def deterministic(self) -> ContextManager[None]:
        """A context in which the array library uses deterministic kernels (no-op where always so)."""
        ...


# module prefix of an array type -> "module:attribute" of its backend, imported on first use
# so that the core never imports torch itself.
_REGISTRY: dict[str, str] = {
    "numpy": "linmultistep.numpy_backend:NumpyBackend",
    "torch": "linmultistep.backends.torch:TorchBackend",
}
_INSTANCES: dict[str, ArrayBackend] = {}


def register_backend(module_prefix: str, target: str) -> None:
    """Register ``"pkg.module:Class"`` as the backend for arrays whose type lives in ``module_prefix``."""
    _REGISTRY[module_prefix] = target
    _INSTANCES.pop(module_prefix, None)


def check_interval(backend: ArrayBackend, x: Any) -> int:
    """Steps between reads of the deferred finite checks for arrays like x (a backend may define
    ``check_interval(x)``; host arrays are read every step)."""
    f = getattr(backend, "check_interval", None)
    return int(f(x)) if f is not None else 1


def get_backend(x: Any) -> ArrayBackend:
    """The backend for array x, chosen by the module its type comes from."""
    top = type(x).__module__.split(".")[0]
    if top not in _REGISTRY:
        raise TypeError(
            f"no array backend for {type(x).__module__}.{type(x).__name__}; "
            f"known: {sorted(_REGISTRY)} (see linmultistep.arrays.register_backend)"
        )
    if top not in _INSTANCES:
        mod, _, attr = _REGISTRY[top].partition(":")
        _INSTANCES[top] = getattr(importlib.import_module(mod), attr)()
    return _INSTANCES[top]
