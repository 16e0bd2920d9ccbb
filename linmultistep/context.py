"""What a method step sees: step sizes, scales, the counted vector field, the backend, and
the run's own prepared data.

The finite checks are deferred: each step records a cheap flag (is the sum of the array
finite?) that stays on the array's device; the flags are read every ``check_every`` steps
and at the end of the run, so a GPU run does not synchronise with the host at every step.
A failed flag is confirmed with an exact check and reported with the FIRST grid index that
went bad, as the network's fault (its output) or the state's (rounding growth).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

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
    with point m's time. ``prepared`` holds what the method's :meth:`~Method.prepare` returned
    for this run (its coefficient tables, fixed-point scales, ...), typed by the method.
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
        self.backend = backend
        self.check_finite = check_finite
        self.describe = describe
        self.check_every = check_every  # None: every step on the host, every 8 on a device
        self.nfe = 0
        self.prepared: Any = None
        self._slopes: dict[int, Any] = {}
        self._flags: list[tuple[int, str, Any, Any]] = []  # (grid index, kind, lazy flag, array)
        self._plans: dict[tuple[int, str, int], Any] = {}

    def plan(self, method: Any, direction: str, n: int, build: Callable[["StepContext", int], Any]) -> Any:
        """``build(ctx, n)`` once per run, method, direction and point: a step's float64 coefficients
        depend only on the grid, so they are computed the first time and reused (a scheduler keeps
        its context across calls)."""
        key = (id(method), direction, n)
        got = self._plans.get(key)
        if got is None:
            got = self._plans[key] = build(self, n)
        return got

    def scale(self, m: int) -> float:
        return 1.0 if self._scale is None else float(self._scale[m])

    def evaluate(self, x: Any, m: int) -> Any:
        raw = self._field(x, m)
        if raw is None:
            raise TypeError(f"the vector field returned None at grid index {m} ({self.describe(m)}); "
                            "it must return an array of the state's shape")
        shape = tuple(getattr(x, "shape", ()))
        if shape and tuple(getattr(raw, "shape", ())) != shape:
            # broadcasting a (8,) or scalar output over a (2, 8) state would give a wrong run, silently
            raise ValueError(f"the vector field returned shape {tuple(getattr(raw, 'shape', ()))} at grid index {m} "
                             f"for a state of shape {shape}; it must return the state's shape")
        try:
            out = self.backend.cast_like(raw, x)
        except (AttributeError, TypeError) as exc:
            raise TypeError(f"the vector field returned a {type(raw).__name__} at grid index {m} for a "
                            f"{type(x).__name__} state; it must return the state's array type") from exc
        self.nfe += 1
        if self.check_finite:
            self._flags.append((m, "field", self.backend.finite_flag(out), out))
        return out

    def slope(self, m: int, x: Any) -> Any:
        if m not in self._slopes:
            self._slopes[m] = self.evaluate(x, m)
        return self._slopes[m]

    def forget_outside(self, lo: int, hi: int) -> None:
        for m in [m for m in self._slopes if not lo <= m <= hi]:
            del self._slopes[m]

    def lincomb(self, coeffs: Sequence[float], arrays: Sequence[Any]) -> Any:
        return self.backend.lincomb(coeffs, arrays)

    # --- deferred checks -----------------------------------------------------------------
    def watch_state(self, n: int, x: Any, what: str) -> None:
        """Record the finiteness flag of the state produced at grid index n (``what`` names the step)."""
        if self.check_finite:
            self._flags.append((n, what, self.backend.finite_flag(x), x))

    def watch_equal(self, n: int, value: Any, expected: Any, what: str) -> None:
        """Record a lazy value that must equal ``expected`` once read (a recomputed checksum against the
        one a latent recorded); ``what`` is the error message if it does not."""
        self._flags.append((n, "equal:" + what, value, expected))

    def due(self, steps: int) -> bool:
        every = self.check_every or 1
        return steps % every == 0

    def check(self) -> None:
        """Read the recorded flags (one host synchronisation) and raise for the first that failed."""
        if not self._flags:
            return
        flags, self._flags = self._flags, []
        values = self.backend.read([f for _, _, f, _ in flags])
        for value, (n, kind, _, arr) in zip(values, flags):
            if kind.startswith("equal:"):
                if value != arr:
                    raise NondeterministicNetworkError(kind[len("equal:"):])
                continue
            if value:
                continue
            if self.backend.all_finite(arr):
                continue  # the cheap flag overflowed on large finite values
            if kind == "field":
                raise NonFiniteError(
                    f"the vector field returned NaN or infinity at grid index {n} ({self.describe(n)}) "
                    "for a finite input; the run stopped and nothing you passed in was changed"
                )
            raise NonFiniteError(
                f"the state became NaN or infinite at grid index {n} ({self.describe(n)}) in {kind}: {_ROUNDING_HINT}"
            )
