"""The one integration loop of linmultistep.

Every method in every direction runs through :func:`integrate`: it picks the method (or a
starter while the window is still short), counts network evaluations, checks them for
NaN, and reports progress. Sampling (``forward``) goes from high to low grid index,
inversion (``backward``) from low to high; both use the paper's indexing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import numpy as np

from .arrays import ArrayBackend
from .errors import MethodError, NonFiniteError
from .methods import Method

__all__ = ["StepContext", "StepInfo", "integrate", "Direction"]

Direction = Literal["forward", "backward"]
Field = Callable[[Any, int], Any]


class StepContext:
    """What a method step sees: step sizes, scales, the counted vector field and the backend.

    ``h[m] = T[m] - T[m-1]`` in the paper's indexing; ``scale(m)`` is s_m in x = s * xbar.
    ``slope(m, x)`` is f(x_m) at point m, cached per point; ``evaluate(x, m)`` is an uncached
    call with point m's time (used where the state and the time differ).
    """

    def __init__(
        self,
        h: np.ndarray,
        scale: np.ndarray | None,
        field: Field,
        backend: ArrayBackend,
        check_finite: bool = True,
        describe: Callable[[int], str] = str,
    ) -> None:
        self.h = h
        self._scale = scale
        self._field = field
        self.backend = backend
        self.check_finite = check_finite
        self.describe = describe
        self.nfe = 0
        self._slopes: dict[int, Any] = {}
        self.memo: dict[str, Any] = {}  # per-run data a method prepares in Method.begin

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
        if self.check_finite and not self.backend.all_finite(out):
            raise NonFiniteError(
                f"the vector field returned NaN or infinity at grid index {m} ({self.describe(m)}) "
                "for a finite input; the run stopped and nothing you passed in was changed"
            )
        return out

    def slope(self, m: int, x: Any) -> Any:
        if m not in self._slopes:
            self._slopes[m] = self.evaluate(x, m)
        return self._slopes[m]

    def forget_outside(self, lo: int, hi: int) -> None:
        for m in [m for m in self._slopes if not lo <= m <= hi]:
            del self._slopes[m]

    def lincomb(self, coeffs: Sequence[float], arrays: Sequence[Any]) -> Any:
        return self.backend.lincomb([float(c) for c in coeffs], arrays)

    def entry_finite(self, entry: Any) -> bool:
        parts = entry if isinstance(entry, tuple) else (entry,)
        return all(self.backend.all_finite(p) for p in parts if p is not None)  # None: part not yet known


@dataclass(frozen=True)
class StepInfo:
    """Passed to callbacks after every step."""

    index: int  # grid index just produced
    entry: Any  # its value (an array, or (x, y) for EDICT)
    direction: Direction
    method: str  # name of the method (or starter) that made the step
    exact: bool  # False for an approximate inverse step (DDIM inversion)
    nfe: int  # network evaluations so far in this run
    step: int  # 1-based count of steps in this run
    total: int  # steps this run will take


def _pick(method: Method, have: int) -> Method:
    for m in method.chain():
        if m.k <= have:
            return m
    raise MethodError(f"no method in the starter chain of {method.spec} can step from {have} point(s)")


def integrate(
    ctx: StepContext,
    method: Method,
    window: dict[int, Any],
    direction: Direction,
    stop: int,
    *,
    callback: Callable[[StepInfo], Any] | None = None,
    progress: bool | dict = False,
) -> dict[int, Any]:
    """Advance ``window`` (grid index -> entry, consecutive indices) to grid index ``stop``.

    ``forward`` produces indices min(window)-1 down to ``stop``; ``backward`` produces
    max(window)+1 up to ``stop``. Returns the last ``method.k`` points (fewer only if the run
    never had that many). The input window is not modified.
    """
    window = dict(window)
    K = method.k
    if direction == "forward":
        targets = range(min(window) - 1, stop - 1, -1)
    elif direction == "backward":
        targets = range(max(window) + 1, stop + 1)
    else:
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        opts = progress if isinstance(progress, dict) else {}
        bar = tqdm(total=len(targets), desc=f"{method.spec} {direction}", **opts)
    try:
        window = method.begin(ctx, window, direction)  # end() runs even if begin() fails half-way
        for count, n in enumerate(targets, 1):
            if direction == "forward":
                have = next(j for j in range(K + 1) if n + j + 1 not in window)
                m = _pick(method, have)
                entry = m.forward(ctx, n, window)
                exact = True
                window[n] = entry
                keep = (n, n + K - 1)
            else:
                have = next(j for j in range(K + 1) if n - j - 1 not in window)
                m = _pick(method, have)
                exact = m.exact_backward(ctx, n)
                entry = m.backward(ctx, n, window)
                window[n] = entry
                keep = (n - K + 1, n)
            if ctx.check_finite and not ctx.entry_finite(entry):
                raise NonFiniteError(
                    f"the state became NaN or infinite at grid index {n} ({ctx.describe(n)}) in a {direction} "
                    f"step of {m.spec}: rounding errors grew past the floating-point range "
                    "(see docs/custom-integrators.md on rounding in the reverse direction)"
                )
            for j in [j for j in window if not keep[0] <= j <= keep[1]]:
                del window[j]
            ctx.forget_outside(*keep)
            if bar is not None:
                bar.update(1)
            if callback is not None:
                callback(StepInfo(n, entry, direction, m.spec.name, exact, ctx.nfe, count, len(targets)))
    finally:
        if bar is not None:
            bar.close()
        method.end(ctx)
    return window
