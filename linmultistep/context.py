"""What a step sees: step sizes, scales, the counted vector field, the backend, and the
deferred checks. (A mode's per-run state is not here: the :class:`~linmultistep.stepping.Run`
holds it and passes it into each step.)

The finite checks are deferred: each step records one cheap probe of the new state (the sum
of its entries, finite unless a NaN or infinity is in there) that stays on the array's device;
the probes are read every ``check_every`` steps and at the end of the run, so a GPU run does
not synchronise with the host at every step. A state that went bad is confirmed with an exact
check and reported with the FIRST grid index: as the network's fault when one of the network
outputs since the last read is itself non-finite (they are kept by reference, not reduced), as
rounding growth otherwise. Other lazy conditions (a checksum equal to a recorded one, a bound)
are read at the same time.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any, Callable, NamedTuple, Sequence, Union

import numpy as np

from .arrays import ArrayBackend
from .errors import NondeterministicNetworkError, NonFiniteError

__all__ = ["StepContext", "Field"]

#: field(x, m): the vector field (for diffusion the network's eps) at grid point m.
Field = Callable[[Any, int], Any]

_ROUNDING_HINT = "rounding errors grew past the floating-point range (docs/precision.md)"


class StepContext:
    """Step sizes ``h[m] = T[m] - T[m-1]`` (paper indexing), scales s_m (x = s * xbar), the
    counted vector field and the array backend of one run.

    ``slope(m, x)`` is f(x_m) at point m, cached per point; ``evaluate(x, m)`` an uncached call
    with point m's time; ``plan(key, build, *args)`` float64 coefficients computed once per grid.
    """

    def __init__(
        self,
        h: np.ndarray,
        scale: np.ndarray | None,
        field: Field,
        backend: ArrayBackend,
        check_finite: bool = True,
        describe: Callable[[int], str] = str,
        check_every: int | None = None,
    ) -> None:
        self.h = h
        self._scale = scale
        self._field = field
        # (p, q) when the grid's coordinates are not the network's: F_m = p_m x + q_m field(x, m) (Grid.field_mix)
        self._mix = getattr(h, "field_mix", None)
        self.backend = backend
        self.check_finite = check_finite
        self.describe = describe
        self.check_every = check_every  # None: every step on the host, every 8 on a device
        self.nfe = 0
        # set by stepping.step for each step: the step may overwrite the arrays of the entry it reads (the
        # run made them, nobody outside the run can hold them, and the run's result does not include them)
        self.may_overwrite = False
        self._slopes: dict[int, Any] = {}
        # the deferred checks, in the order recorded (see the Check classes below)
        self._flags: list[_Check] = []
        self._plans: dict[Any, Any] = _plans_for(h, scale)

    def plan(self, key: Any, build: Callable[..., Any], *args: Any) -> Any:
        """``build(*args)`` once per ``key`` and grid: a step's float64 coefficients depend only on the
        method (its ``plan_key``, part of ``key``), the point and the grid, so they are computed the first
        time and reused by every later run on the same grid (the last few grids are kept)."""
        got = self._plans.get(key)
        if got is None:
            got = self._plans[key] = build(*args)
        return got

    def scale(self, m: int) -> float:
        return 1.0 if self._scale is None else float(self._scale[m])

    def evaluate(self, x: Any, m: int) -> Any:
        raw = self._field(x, m)
        if type(raw) is type(x) and raw.shape == x.shape and raw.dtype == x.dtype:
            out = self.backend.cast_like(raw, x)  # the usual answer: only the device may differ
        else:
            out = self._checked_output(raw, x, m)
        self.nfe += 1
        if self.check_finite:
            self._flags.append(_Output(m, out))
        if self._mix is not None:
            out = self.backend.lincomb([float(self._mix[0][m]), float(self._mix[1][m])], [x, out])
        return out

    def _checked_output(self, raw: Any, x: Any, m: int) -> Any:
        """The field's output cast to the state's type, or the error naming what is wrong with it."""
        if raw is None:
            raise TypeError(f"the vector field returned None at grid index {m} ({self.describe(m)}); "
                            "it must return an array of the state's shape")
        shape = getattr(x, "shape", ())
        if shape and not hasattr(raw, "shape"):  # a list or a number: shape () would name nothing useful
            raise TypeError(f"the vector field returned a {type(raw).__name__} at grid index {m} ({self.describe(m)}) "
                            f"for a {type(x).__name__} state of shape {tuple(shape)}; it must return an array of the "
                            "state's shape and type")
        if _is_complex(raw):  # casting to the state's real dtype would drop the imaginary part
            raise TypeError(f"the vector field returned complex values ({raw.dtype}) at grid index {m} "
                            f"({self.describe(m)}); it must return real values of the state's dtype")
        if shape and getattr(raw, "shape", ()) != shape:
            # broadcasting a (8,) or scalar output over a (2, 8) state would give a wrong run, silently
            raise ValueError(f"the vector field returned shape {tuple(getattr(raw, 'shape', ()))} at grid index {m} "
                             f"for a state of shape {tuple(shape)}; it must return the state's shape")
        try:
            out = self.backend.cast_like(raw, x)
        except (AttributeError, TypeError) as exc:
            raise TypeError(f"the vector field returned a {type(raw).__name__} at grid index {m} for a "
                            f"{type(x).__name__} state; it must return the state's array type") from exc
        return out

    def slope(self, m: int, x: Any) -> Any:
        if m not in self._slopes:
            self._slopes[m] = self.evaluate(x, m)
        return self._slopes[m]

    def forget_outside(self, lo: int, hi: int) -> None:
        if self._slopes:
            for m in [m for m in self._slopes if not lo <= m <= hi]:
                del self._slopes[m]

    def lincomb(self, coeffs: Sequence[float], arrays: Sequence[Any]) -> Any:
        return self.backend.lincomb(coeffs, arrays)

    # --- deferred checks -----------------------------------------------------------------
    def watch_state(self, n: int, x: Any, what: Any) -> None:
        """Record the finiteness probe of the state produced at grid index n; ``what`` is (direction,
        method spec) of the step (formatted only for an error)."""
        if self.check_finite:
            self._flags.append(_StateProbe(n, self.backend.finite_flag(x), x, what))

    def keep_state(self, n: int, x: Any, what: Any) -> None:
        """Keep the state produced at grid index n without probing it (a later probe of the run finds it
        if it went bad first; see Form.probes)."""
        if self.check_finite:
            self._flags.append(_StateProbe(n, None, x, what))

    def probe_kept(self) -> None:
        """Probe the latest state if it was only kept (a run finished before its next read)."""
        for j in range(len(self._flags) - 1, -1, -1):
            f = self._flags[j]
            if isinstance(f, _StateProbe):
                if f.value is None:
                    self._flags[j] = f._replace(value=self.backend.finite_flag(f.x))
                return

    def watch_equal(self, n: int, value: Any, expected: Any, message: str) -> None:
        """Record a lazy value that must equal ``expected`` once read (a recomputed checksum against the
        one a latent recorded); NondeterministicNetworkError(``message``) if it does not."""
        self._flags.append(_Equal(n, value, expected, message))

    def watch_bound(self, n: int, value: Any, bound: float, error: Callable[[float], Exception]) -> None:
        """Record a lazy value that must be <= ``bound`` (NaN fails); ``error(value)`` is raised if not."""
        self._flags.append(_Bound(n, value, bound, error))

    def due(self, steps: int) -> bool:
        return steps % (self.check_every or 1) == 0

    def check(self) -> None:
        """Read the recorded probes (one host synchronisation) and raise for the first that failed."""
        if not self._flags:
            return
        flags, self._flags = self._flags, []
        lazy = [f.value for f in flags if f.value is not None]
        values = iter(self.backend.read(lazy) if lazy else [])
        for j, f in enumerate(flags):
            if f.value is None:
                continue
            value = next(values)
            if isinstance(f, _Bound):
                if not value <= f.bound:
                    raise f.error(value)
            elif isinstance(f, _Equal):
                if value != f.expected:
                    raise NondeterministicNetworkError(f.message)
            elif not math.isfinite(value) and not self.backend.all_finite(f.x):  # else: the sum overflowed
                self._raise_non_finite(flags[: j + 1])

    def _raise_non_finite(self, flags: list) -> None:
        """The first bad state among ``flags`` (this one, or a kept one before it that was not probed):
        the network's fault when one of its outputs before it is non-finite, rounding growth otherwise."""
        j, bad = next((j, f) for j, f in enumerate(flags)
                      if isinstance(f, _StateProbe) and not self.backend.all_finite(f.x))
        for f in flags[:j]:
            if isinstance(f, _Output) and not self.backend.all_finite(f.out):
                raise NonFiniteError(
                    f"the vector field returned NaN or infinity at grid index {f.n} ({self.describe(f.n)}) "
                    "for a finite input; the run stopped and nothing you passed in was changed"
                )
        direction, spec = bad.what
        raise NonFiniteError(f"the state became NaN or infinite at grid index {bad.n} ({self.describe(bad.n)}) in "
                             f"a {direction} step of {spec}: {_ROUNDING_HINT}")


def _is_complex(a: Any) -> bool:
    is_complex = getattr(a, "is_complex", None)  # torch
    if callable(is_complex):
        return bool(is_complex())
    return getattr(getattr(a, "dtype", None), "kind", None) == "c"


# --- the deferred checks: ``value`` is lazy (read in one go by check()) or None (nothing to read) -----------
class _Output(NamedTuple):
    """A network output at grid index n, kept by reference: examined only when a state went bad."""

    n: int
    out: Any
    value: Any = None


class _StateProbe(NamedTuple):
    """The state produced at grid index n with its finiteness probe (None: kept, not probed)."""

    n: int
    value: Any
    x: Any
    what: Any


class _Equal(NamedTuple):
    """A lazy value that must equal ``expected`` (else NondeterministicNetworkError(message))."""

    n: int
    value: Any
    expected: Any
    message: str


class _Bound(NamedTuple):
    """A lazy value that must be <= ``bound`` (NaN fails; else ``error(value)`` is raised)."""

    n: int
    value: Any
    bound: float
    error: Callable[[float], Exception]


_Check = Union[_Output, _StateProbe, _Equal, _Bound]


# plans depend only on the method and the grid: shared by the contexts of one grid (a few grids kept)
_PLAN_CACHE: "OrderedDict[tuple[bytes, bytes], dict[Any, Any]]" = OrderedDict()
_PLAN_CACHE_SIZE = 16


_PLAN_LOCK = threading.Lock()


def _plans_for(h: Any, scale: Any) -> dict:
    with _PLAN_LOCK:  # runs in several threads share the cache
        return _plans_locked(h, scale)


def _plans_locked(h: Any, scale: Any) -> dict:
    try:
        key = (np.asarray(h, dtype=np.float64).tobytes(),
               b"" if scale is None else np.asarray(scale, dtype=np.float64).tobytes())
    except (TypeError, ValueError):
        return {}
    got = _PLAN_CACHE.get(key)
    if got is None:
        got = _PLAN_CACHE[key] = {}
        while len(_PLAN_CACHE) > _PLAN_CACHE_SIZE:
            _PLAN_CACHE.popitem(last=False)
    else:
        _PLAN_CACHE.move_to_end(key)
    return got

