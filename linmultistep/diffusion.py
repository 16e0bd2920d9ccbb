"""Diffusion sampling and inversion: thin wrappers applying the integrator to the
probability-flow ODE d xbar = epsbar d sigmabar on a :class:`Grid`.

States are kept in model coordinates x = alpha * xbar, so ``eps_fn(x, i)`` receives exactly
the stored array; the 1/alpha scalings live in the float64 step coefficients.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from .arrays import ArrayBackend, get_backend
from .errors import GridError, MethodError
from .grid import Grid
from .integrator import StepContext, StepInfo, integrate
from .methods import Method, get_method
from .state import State

__all__ = ["sample", "invert", "default_mode", "EpsFn"]

#: eps_fn(x, i): the network's noise prediction for x at grid index i (1 <= i <= N).
EpsFn = Callable[[Any, int], Any]


def default_mode(method: Method) -> str:
    """The mode a run takes when nothing asks for another: 'stable' for the 2-step BELMs with
    a_{i,2} = 1 on equal steps (O-BELM, BDIA(gamma=1), consistent belm(k=2) rules of that kind),
    'recurrence' otherwise (BDIA(gamma < 1), EDICT, DDIM, k != 2).

    Measured (benchmarks/precision_table.py, docs/precision.md; O-BELM, SD schedule, 3 seeds):
    the stable form's float32/float16 round trip is 1.5-100x more accurate than the
    recurrence's on a Gaussian problem at 10-500 steps, and 0.8-11x (median about 1.6x) on a
    random MLP, worse only at 20-50 steps in float32 on two of three seeds (0.77-0.95x).
    """
    from .forms import check_two_step_belm

    if method.mode != "recurrence":
        return method.mode
    try:
        check_two_step_belm(method, "stable")
    except MethodError:
        return "recurrence"
    # a_2 != 1 on equal steps (BDIA gamma < 1): the inverse map itself expands by 1/a_2 per step,
    # which no form cures, and the stable form's weights prod a_2 would only move that growth
    # into the range of v (float16/float32 overflow on long grids even when just sampling)
    a, _ = method.coefficients([1.0, 1.0])
    return "stable" if abs(a[1] - 1.0) <= 1e-12 else "recurrence"


def _resolve_mode(method: "str | Method", mode: "str | None", state: "State | None") -> str:
    """An explicit mode wins; then a method object's own non-default mode; then the latent's;
    then :func:`default_mode`."""
    if mode is not None:
        return mode
    if isinstance(method, Method) and method.mode != "recurrence":
        return method.mode
    if state is not None:
        return state.mode
    return default_mode(get_method(method))


def _check_float(x: Any, what: str) -> None:
    """Integer, bool or complex states would compute in the wrong arithmetic (0.93 -> 0) or drop the
    imaginary part: refuse them, naming the dtype (numpy arrays and torch tensors alike)."""
    is_fp = getattr(x, "is_floating_point", None)
    if callable(is_fp):  # torch
        ok = bool(is_fp())
    else:
        kind = getattr(getattr(x, "dtype", None), "kind", None)
        ok = kind == "f"
    if not ok:
        raise TypeError(f"{what} must be a floating-point array, got dtype {getattr(x, 'dtype', type(x).__name__)}; "
                        "convert it first (e.g. x.astype(np.float64) or x.double())")


def _setup(eps_fn: EpsFn, grid: Grid, method: "str | Method", mode: str, check_finite: bool, backend, probe):
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a linmultistep.Grid, got {type(grid).__name__}")
    if not callable(eps_fn):
        raise TypeError(f"eps_fn must be callable as eps_fn(x, i), got {type(eps_fn).__name__}")
    method = get_method(method).with_mode(mode)
    if grid.N < method.k:
        raise GridError(f"{method.spec} needs at least {method.k} steps; the grid has N = {grid.N}")

    def describe(i: int) -> str:
        t = grid.timestep(i)
        return f"timestep {t:g}" if not math.isnan(t) else "clean point"

    ctx = StepContext(grid.h, grid.alpha, eps_fn, backend or get_backend(probe), check_finite, describe)
    return method, ctx


def sample(
    eps_fn: EpsFn,
    start: Any,
    grid: Grid,
    method: "str | Method" = "obelm",
    *,
    stop: int = 0,
    mode: str | None = None,
    callback: Callable[[StepInfo], Any] | None = None,
    progress: bool | dict = False,
    check_finite: bool = True,
    backend: ArrayBackend | None = None,
    return_state: bool = False,
) -> Any:
    """Sample from the noise end (index N) down to grid index ``stop`` (0 = data).

    ``start`` is a noise array x_N (generation; the method's starters make its first steps)
    or the :class:`Latent` that :func:`invert` returned (exact reconstruction: the latent's
    method, grid and mode must match). Returns x_stop, or the end :class:`State` when
    ``return_state`` is true.

    ``mode``: 'recurrence' (the LM recurrence), 'stable' (the well-conditioned floating form of
    a 2-step BELM) or 'bits' (its bit-exact fixed-point form), see docs/precision.md. None
    means: a method object's own mode if not 'recurrence', else the latent's, else
    :func:`default_mode` ('stable' for O-BELM and BDIA(gamma=1), 'recurrence' otherwise).
    """
    mode = _resolve_mode(method, mode, start if isinstance(start, State) else None)
    if isinstance(start, State):
        probe = start.x
        method_obj, ctx = _setup(eps_fn, grid, method, mode, check_finite, backend, probe)
        start.check_compatible(method_obj, grid.fingerprint)
        window = dict(start.window)
    else:
        _check_float(start, "the starting noise")
        method_obj, ctx = _setup(eps_fn, grid, method, mode, check_finite, backend, start)
        if check_finite and not ctx.backend.all_finite(start):
            raise GridError("the starting noise contains NaN or infinity")
        window = {grid.N: method_obj.entry_from_array(start)}
    if not 0 <= stop < min(window):
        raise GridError(f"stop must be a grid index below {min(window)} (where sampling starts), got {stop}")
    window = integrate(ctx, method_obj, window, "forward", stop, callback=callback, progress=progress)
    nfe = ctx.nfe + (start.nfe if isinstance(start, State) else 0)
    state = State(window, method_obj.spec, grid.fingerprint, method_obj.mode, nfe)
    return state if return_state else method_obj.array_from_entry(window[stop])


def invert(
    eps_fn: EpsFn,
    x0: Any,
    grid: Grid,
    method: "str | Method" = "obelm",
    *,
    stop: int | None = None,
    mode: str | None = None,
    callback: Callable[[StepInfo], Any] | None = None,
    progress: bool | dict = False,
    check_finite: bool = True,
    backend: ArrayBackend | None = None,
) -> State:
    """Invert data x0 (grid index 0) to the noise end (or to index ``stop``).

    The first k-1 points come from the starters' approximate inverses (one DDIM-inversion
    step for a 2-step BELM, as the reference code does); every later step solves the BELM
    relation exactly for its oldest point (paper eq. 13). The returned latent holds the last
    k points, e.g. (x_N, x_{N-1}), which is what exact reconstruction needs. A State (from a
    partial inversion or sampling run) may be passed instead of x0 to continue it. ``mode`` as
    in :func:`sample`; the latent records it.
    """
    mode = _resolve_mode(method, mode, x0 if isinstance(x0, State) else None)
    if isinstance(x0, State):
        method_obj, ctx = _setup(eps_fn, grid, method, mode, check_finite, backend, x0.x)
        x0.check_compatible(method_obj, grid.fingerprint)
        window, nfe0 = dict(x0.window), x0.nfe
    else:
        _check_float(x0, "the data to invert")
        method_obj, ctx = _setup(eps_fn, grid, method, mode, check_finite, backend, x0)
        if check_finite and not ctx.backend.all_finite(x0):
            raise GridError("the data to invert contains NaN or infinity")
        window, nfe0 = {0: method_obj.entry_from_array(x0)}, 0
    stop = grid.N if stop is None else int(stop)
    if not max(window) < stop <= grid.N:
        raise GridError(
            f"stop must be a grid index in ({max(window)}, {grid.N}], got {stop}"
        )
    window = integrate(ctx, method_obj, window, "backward", stop, callback=callback, progress=progress)
    return State(window, method_obj.spec, grid.fingerprint, method_obj.mode, nfe0 + ctx.nfe)
