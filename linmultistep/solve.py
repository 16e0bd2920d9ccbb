"""General ODE integration with any explicit coefficient rule: the library's custom-integrator API.

``solve(f, y0, ts, method)`` integrates dy/dt = f(t, y) along a strictly monotone grid ts
(either direction). Internally the grid is put in the paper's indexing, T = ts reversed, so
that the method's own direction runs from index M = len(ts)-1 down to 0 and
h_m = T_m - T_{m-1}; ``reverse=True`` runs the other way, exactly for a bidirectional
explicit method started from the state a forward run returned.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .arrays import ArrayBackend, get_backend
from .context import StepContext
from .errors import GridError, LatentMismatchError
from .forms import Form, as_form
from .methods import Method, get_method
from .state import State
from .stepping import StepInfo, integrate

__all__ = ["solve", "Solution", "time_grid"]


@dataclass(frozen=True)
class Solution:
    """Result of :func:`solve`: ``y`` at the end of the run, ``state`` to continue or reverse it."""

    y: Any
    state: State
    nfe: int
    ts: np.ndarray


def time_grid(ts) -> tuple[np.ndarray, str]:
    """Validated float64 copy of ts and its fingerprint."""
    t = np.array(ts, dtype=np.float64, copy=True)
    if t.ndim != 1 or t.shape[0] < 2:
        raise GridError(f"ts must be a 1-d grid of at least 2 times, got shape {t.shape}")
    if not np.isfinite(t).all():
        i = int(np.flatnonzero(~np.isfinite(t))[0])
        raise GridError(f"ts[{i}] = {t[i]} is not finite")
    d = np.diff(t)
    sign = np.sign(d[0])
    bad = np.flatnonzero(np.sign(d) != sign) if sign != 0 else np.array([0])
    if bad.size:
        i = int(bad[0]) + 1
        raise GridError(f"ts must be strictly monotone: ts[{i}] = {float(t[i])!r} after ts[{i - 1}] = {float(t[i - 1])!r}")
    t.setflags(write=False)
    return t, hashlib.sha256(t.astype("<f8").tobytes()).hexdigest()[:16]


def solve(
    f: Callable[[float, Any], Any],
    start: Any,
    ts,
    method: "str | Method | Form | None" = None,
    *,
    reverse: bool = False,
    warm_start: "list | tuple" = (),
    callback: Callable[[StepInfo], Any] | None = None,
    progress: bool | dict = False,
    check_finite: bool = True,
    backend: ArrayBackend | None = None,
) -> Solution:
    """Integrate dy/dt = f(t, y) over ts with an explicit linear multistep method.

    Forward (default): ``start`` is y(ts[0]); returns y at ts[-1] and the end state.
    ``reverse=True``: ``start`` is the :class:`Solution` (or its :class:`State`) of a forward run
    on the same ts (an exact run back for a bidirectional explicit method, with the solution's own
    method unless one is given), or an array y(ts[-1]) (then the first k-1 points come from the
    starters' approximate inverses); returns y at ts[0]. ``method`` defaults to the start's own,
    else 'adams_bashforth'.

    ``warm_start`` = [y(ts[1]), ..., y(ts[j])] (j < k) replaces the starter's first j steps
    of a forward run. A low-order starter caps the global order: one explicit Euler step
    leaves an O(h^2) error, so Adams-Bashforth k >= 3 needs accurate starting values to
    show order k.
    """
    if isinstance(start, Solution):
        start = start.state
    if method is None:
        if isinstance(start, State):
            if any(k == "rule" for k, _ in start.method.params):
                raise LatentMismatchError(f"this state was made by {start.method}, a belm with a user-supplied "
                                          "rule; pass that method object to continue it")
            method = get_method(start.method.name, **dict(start.method.params))
        else:
            method = "adams_bashforth"
    method = as_form(method if isinstance(method, Form) else get_method(method))  # a plain method: its recurrence
    t, fingerprint = time_grid(ts)
    M = t.shape[0] - 1
    if M < method.k:
        raise GridError(f"{method.spec} needs at least {method.k} steps, ts has {M}")
    T = t[::-1].copy()  # paper order: index M is ts[0], index 0 is ts[-1]
    h = np.empty_like(T)
    h[0] = T[0]
    h[1:] = np.diff(T)

    def field(y: Any, m: int) -> Any:
        return f(float(T[m]), y)

    if isinstance(start, State):
        start.check_compatible(method, fingerprint, M)
        window, nfe0 = dict(start.window), start.nfe
    else:
        window, nfe0 = {0 if reverse else M: start}, 0
        if warm_start:
            if reverse or len(warm_start) >= method.k:
                raise GridError(f"warm_start takes at most k-1 = {method.k - 1} values, and only forward")
            for j, y in enumerate(warm_start, 1):
                window[M - j] = y
    first = window[max(window)] if not reverse else window[min(window)]
    probe = first.x if isinstance(first, tuple) else first
    ctx = StepContext(h, None, field, backend or get_backend(probe), check_finite, lambda m: f"t = {T[m]!r}")
    if ctx.check_finite and not ctx.backend.all_finite(probe):
        raise GridError("the initial state contains NaN or infinity")
    direction, stop = ("backward", M) if reverse else ("forward", 0)
    run = integrate(ctx, method, window, direction, stop, callback=callback, progress=progress)
    state = State(run.window, method.spec, fingerprint, method.mode, nfe0 + ctx.nfe)
    return Solution(run.window[stop].x, state, ctx.nfe, t)
