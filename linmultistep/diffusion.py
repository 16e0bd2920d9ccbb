"""Diffusion sampling and inversion: thin wrappers applying the integrator to the
probability-flow ODE d xbar = epsbar d sigmabar on a :class:`Grid`.

States are kept in model coordinates x = alpha * xbar, so ``eps_fn(x, i)`` receives exactly
the stored array; the 1/alpha scalings live in the float64 step coefficients.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from .arrays import ArrayBackend, get_backend
from .context import StepContext
from .errors import GridError, LatentMismatchError
from .forms import Form
from .grid import Grid
from .methods import Method, get_method
from .modes import base_method, default_mode, resolve_mode
from .state import State
from .stepping import StepInfo, integrate, records

__all__ = ["sample", "invert", "default_mode", "EpsFn"]

#: eps_fn(x, i): the network's noise prediction for x at grid index i (1 <= i <= N).
EpsFn = Callable[[Any, int], Any]


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
    size = getattr(x, "size", None)
    n = x.numel() if callable(getattr(x, "numel", None)) else (size if isinstance(size, int) else None)
    if n == 0:
        raise ValueError(f"{what} is empty (shape {tuple(getattr(x, 'shape', ()))}); there is nothing to run")


def _index(value: Any, name: str) -> int:
    """A grid index given as an integer (3.7 or "3" would be truncated or parsed silently)."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise GridError(f"{name} must be an integer grid index, got {value!r} ({type(value).__name__})")
    return int(value)


def _method_for(method: "str | Method | Form | None", mode: Any, latent: "State | None") -> Form:
    """The form a run uses, resolved once here: the method given, else the latent's own (its spec
    rebuilt from the catalogue), in the resolved mode (:func:`linmultistep.modes.resolve_mode`)."""
    if method is None:
        if latent is None:
            method = "obelm"
        else:
            if any(k == "rule" for k, _ in latent.method.params):
                raise LatentMismatchError(
                    f"this latent was made by {latent.method}, a belm with a user-supplied rule; pass that method "
                    "object (method=belm(rule=..., k=...)) to continue it"
                )
            method = get_method(latent.method.name, **dict(latent.method.params))
    elif latent is not None:  # before its mode: 'edict has no mode stable' would mislead
        latent.check_method(base_method(method) if isinstance(method, Form) else get_method(method))
    return resolve_mode(method, mode, latent.mode if latent is not None else None)


def _context(eps_fn: EpsFn, grid: Grid, method: Form, check_finite: bool, backend, probe) -> StepContext:
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a linmultistep.Grid, got {type(grid).__name__}")
    if not callable(eps_fn):
        raise TypeError(f"eps_fn must be callable as eps_fn(x, i), got {type(eps_fn).__name__}")
    if grid.N < method.k:
        raise GridError(f"{method.spec} needs at least {method.k} steps; the grid has N = {grid.N}")

    def describe(i: int) -> str:
        t = grid.timestep(i)
        return f"timestep {t:g}" if not math.isnan(t) else "clean point"

    return StepContext(grid.h, grid.alpha, eps_fn, backend or get_backend(probe), check_finite, describe)


def sample(
    eps_fn: EpsFn,
    start: Any,
    grid: Grid,
    method: "str | Method | Form | None" = None,
    *,
    stop: int = 0,
    mode: Any = None,
    callback: Callable[[StepInfo], Any] | None = None,
    progress: bool | dict = False,
    check_finite: bool = True,
    backend: ArrayBackend | None = None,
    return_state: bool = False,
) -> Any:
    """Sample from the noise end (index N) down to grid index ``stop`` (0 = data).

    ``start`` is a noise array x_N (generation; the method's starters make its first steps)
    or the :class:`Latent` that :func:`invert` returned (exact reconstruction with the latent's
    own method, grid and mode; a method or mode given must match it). ``method`` defaults to the
    latent's, or 'obelm' from noise. Returns x_stop, or the end :class:`State` when
    ``return_state`` is true.

    ``mode``: 'recurrence' (the LM recurrence), 'stable' (the well-conditioned floating form of
    a 2-step BELM) or 'bits' (its bit-exact fixed-point form), see docs/precision.md; a string or
    a mode object (:mod:`linmultistep.forms`). None means: a method's own mode if it is given in
    one (``in_mode``), else the latent's, else :func:`default_mode` ('stable' for O-BELM and
    BDIA(gamma=1), 'recurrence' otherwise). The step that runs: :meth:`Form.forward` of the
    resolved form (mode 'stable': :class:`linmultistep.stable.StableBelm`).
    """
    latent = start if isinstance(start, State) else None
    method_obj = _method_for(method, mode, latent)
    stop = _index(stop, "stop")
    if latent is not None:
        ctx = _context(eps_fn, grid, method_obj, check_finite, backend, latent.x)
        latent.check_compatible(method_obj, grid.fingerprint, grid.N)
        window, nfe0, meta = dict(latent.window), latent.nfe, latent.metadata
    else:
        _check_float(start, "the starting noise")
        ctx = _context(eps_fn, grid, method_obj, check_finite, backend, start)
        if check_finite and not ctx.backend.all_finite(start):
            raise GridError("the starting noise contains NaN or infinity")
        window, nfe0, meta = {grid.N: start}, 0, None
    if not 0 <= stop < min(window):
        raise GridError(f"stop must be a grid index below {min(window)} (where sampling starts), got {stop}")
    run = integrate(ctx, method_obj, window, "forward", stop, callback=callback, progress=progress, metadata=meta)
    state = State(run.window, method_obj.spec, grid.fingerprint, method_obj.mode, nfe0 + ctx.nfe)
    return state if return_state else run.window[stop].x


def invert(
    eps_fn: EpsFn,
    x0: Any,
    grid: Grid,
    method: "str | Method | Form | None" = None,
    *,
    stop: int | None = None,
    mode: Any = None,
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
    partial inversion or sampling run) may be passed instead of x0 to continue it, with its own
    method by default. ``method`` defaults to 'obelm'; ``mode`` as in :func:`sample`; the
    latent records both.
    """
    latent = x0 if isinstance(x0, State) else None
    method_obj = _method_for(method, mode, latent)
    if latent is not None:
        ctx = _context(eps_fn, grid, method_obj, check_finite, backend, latent.x)
        latent.check_compatible(method_obj, grid.fingerprint, grid.N)
        window, nfe0 = dict(latent.window), latent.nfe
    else:
        _check_float(x0, "the data to invert")
        ctx = _context(eps_fn, grid, method_obj, check_finite, backend, x0)
        if check_finite and not ctx.backend.all_finite(x0):
            raise GridError("the data to invert contains NaN or infinity")
        window, nfe0 = {0: x0}, 0
    stop = grid.N if stop is None else _index(stop, "stop")
    if not max(window) < stop <= grid.N:
        raise GridError(f"stop must be a grid index in ({max(window)}, {grid.N}], got {stop}")
    run = integrate(ctx, method_obj, window, "backward", stop, callback=callback, progress=progress)
    metadata = records(run)
    if latent is not None:
        metadata = _merge_digests(latent.metadata, metadata)
    return State(run.window, method_obj.spec, grid.fingerprint, method_obj.mode, nfe0 + ctx.nfe, metadata)


def _merge_digests(old: Any, new: dict) -> dict:
    """A continued inversion keeps the per-step records of the part before it."""
    out = {k: v for k, v in dict(old or {}).items()}
    for key, val in new.items():
        out[key] = {**dict(out.get(key) or {}), **val} if isinstance(val, dict) else val
    return out
