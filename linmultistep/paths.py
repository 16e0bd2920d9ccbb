"""Gaussian probability paths, and the coordinates the core integrates each one in.

A Gaussian path noises data as x_t = a_t x0 + s_t eps. Its probability-flow ODE can be written
in any coordinates; the core integrates ONE form, d Y = F d T on a grid T_0 < ... < T_N, with
states stored as x = scale * Y (BELM paper eq. 11-12; :class:`linmultistep.Grid` holds
scale = ``alpha`` and T = ``sigma / alpha``). Which (Y, T, F) to choose is a per-path decision:

``"gaussian"`` (the core's default, DDPM-family models): Y = x / a, T = s / a, F = the noise
    prediction eps(x, t). Conditionally on (x0, eps), x / a = x0 + (s / a) eps, so
    dY/dT = eps exactly; the marginal field is E[eps | x]. Finite as long as a_t > 0.

``"flow"`` (rectified flow, SD3 / FLUX / most video models): a_t = 1 - t, s_t = t, the network
    predicts the velocity v = eps - x0 = dx_t/dt. The core integrates it in the *projective*
    coordinates of blend b in [0, 1) (:func:`flow_grid`, derivation in
    :mod:`linmultistep.analysis.flow_coordinates`):

        Y = x / (1 - b t),   T = t / (1 - b t),   F = dY/dT = b x + (1 - b t) v = b eps + (1 - b) v,

    a :class:`~linmultistep.Grid` with alpha = 1 - b t, sigma = t and the field mix
    (p, q) = (b, 1 - b t) applied by the core to the network's v. b = 0 is the flow's own (x, t);
    b = 1 would be the "gaussian" coordinates, infinite at the noise end t = 1.

Why this family. (1) Euler: DDIM's step Y' = Y + (T' - T) F in these coordinates, multiplied back
by (1 - b t'), is x' = x + (t' - t) v for EVERY b -- diffusers' ``FlowMatchEulerDiscreteScheduler``
-- and the projective maps (Y, T) = (x / c, t / c) with c = 1 - b t are the only coordinates of the
form (x / c(t), T(t)) in which Euler's straight lines x + (t' - t) v stay straight lines, so the
only ones in which the DDIM method is still diffusers' Euler. (2) Exactness: for b < 1 every
coefficient is finite at both ends (T_N = 1 / (1 - b) < inf), all step sizes are positive, so
O-BELM's a_{i,2} = h_i^2 / h_{i+1}^2 is never 0 and every BELM runs backwards exactly. (3) Order:
the change of variables is smooth with c in [1 - b, 1] on [0, 1], so O-BELM keeps order 2.
(4) Sampling: O-BELM's parasitic root is about -a_{i,2}. T = t / (1 - b t) is SD3's timestep
shift with factor 1 - b (T (1 - b) = shift_{1-b}(t)), so on a grid t = shift_s(u), u uniform,
T is proportional to shift_{s (1 - b)}(u): its steps shrink toward the data end (every
a_{i,2} <= 1, a damped parasitic root) whenever s (1 - b) <= 1. b = 0 (the (x, t) coordinates)
has a_{i,2} up to 2.07 on SD3's shift-3 grid and made O-BELM 25-31x less accurate than Euler on
the trained mnist-flow model. The price of b: Y = x / (1 - b t) spans a 1 / (1 - b) times wider range
than x, which costs the floating and fixed-point forms of the exact methods about log2(1 / (1 - b))
bits (mode 'bits' rounds onto a coarser grid; BDIA / EDICT round trips in float32 grow). :data:`FLOW_BLEND`
= 0.96 is the smallest b whose a_{i,2} <= 1 covers the shifts in use, s <= 25 (SD3: 3, FLUX: e^1.15 at
1024 px, about e^3.2 = 25 at 2048 px), at a range of 25x (the DDPM family's x / alpha already spans 15x
on Stable Diffusion's schedule); measured in docs/flow.md against b = 0 and b = 0.99.

The path is part of the grid's identity (:attr:`Grid.path`, in the fingerprint, with the blend):
a flow grid of blend 0 (alpha = 1, sigma = t) has the same numbers as a variance-exploding
gaussian grid, but its field means something else, so a latent of one is refused on the other.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import GridError, LatentMismatchError
from .grid import Grid

__all__ = [
    "PATHS", "FLOW", "GAUSSIAN", "FLOW_BLEND", "flow_blend_of", "shift_sigmas", "time_shift", "dynamic_shift_mu", "flow_sigmas", "flow_grid",
    "gaussian_grid", "is_flow", "require_flow", "check_latent_path", "velocity_from", "flow_to_epsilon",
]

GAUSSIAN = "gaussian"
FLOW = "flow"
#: path tag -> what the field F of the core's ODE is on it
PATHS = {GAUSSIAN: "noise prediction eps, coordinates (x / alpha, sigma / alpha)",
         FLOW: "velocity v = eps - x0 of x_t = (1 - t) x0 + t eps, coordinates (x / (1 - b t), t / (1 - b t))"}

#: the default blend b of flow grids' coordinates (module docstring): a_{i,2} <= 1 on grids shifted up to 1 / (1 - b) = 25
FLOW_BLEND = 0.96


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise GridError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v):
        raise GridError(f"{name} must be finite, got {v}")
    return v


def shift_sigmas(t: Any, shift: float) -> np.ndarray:
    """The timestep shift of SD3 (Esser et al. 2024, eq. 23) as diffusers applies it:
    t' = shift t / (1 + (shift - 1) t). shift > 0 maps [0, 1] onto itself monotonically
    (shift > 1 spends more steps near the noise end); shift <= 0 is refused."""
    s = _number("shift", shift)
    if s <= 0:
        raise GridError(f"shift must be > 0 (t' = shift t / (1 + (shift - 1) t) is a monotone map of [0, 1] "
                        f"only then), got {shift!r}")
    t = np.asarray(t, dtype=np.float64)
    return s * t / (1.0 + (s - 1.0) * t)


def time_shift(t: Any, mu: float, sigma: float = 1.0, kind: str = "exponential") -> np.ndarray:
    """Resolution-dependent ("dynamic") shifting, diffusers' ``time_shift``:
    exponential: e^mu / (e^mu + (1/t - 1)^sigma); linear: mu / (mu + (1/t - 1)^sigma);
    t = 0 maps to 0 and t = 1 to 1. For sigma = 1 the exponential kind is :func:`shift_sigmas`
    with shift = e^mu."""
    m, sg = _number("mu", mu), _number("sigma", sigma)
    if kind not in ("exponential", "linear"):
        raise GridError(f"time shift kind must be 'exponential' or 'linear', got {kind!r}")
    if kind == "linear" and m <= 0:
        raise GridError(f"a linear time shift needs mu > 0, got {mu!r}")
    if sg <= 0:
        raise GridError(f"the time shift's sigma must be > 0, got {sigma!r}")
    t = np.asarray(t, dtype=np.float64)
    a = math.exp(m) if kind == "exponential" else m
    with np.errstate(divide="ignore"):
        odds = np.where(t > 0, (1.0 / np.where(t > 0, t, 1.0) - 1.0), np.inf) ** sg
    return np.where(t > 0, a / (a + odds), 0.0)


def dynamic_shift_mu(image_seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096,
                     base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """mu for dynamic shifting, linear in the image's token count (FLUX / SD3.5 pipelines'
    ``calculate_shift``): mu = base_shift at base_seq_len and max_shift at max_seq_len."""
    if base_seq_len == max_seq_len:
        raise GridError(f"base_seq_len and max_seq_len must differ, both are {base_seq_len}")
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return float(image_seq_len * slope + base_shift - slope * base_seq_len)


def flow_sigmas(num_steps: int, *, shift: float = 1.0, mu: float | None = None, sigmas: Any = None,
                num_train_timesteps: int = 1000, shift_terminal: float | None = None,
                time_shift_type: str = "exponential") -> np.ndarray:
    """The flow times diffusers' ``FlowMatchEulerDiscreteScheduler.set_timesteps`` computes, in
    float64 and in GRID order: t_0 = 0 (the data end it steps to) < t_1 < ... < t_N.

    Without ``sigmas``: N = ``num_steps`` values linspace(1, shift(1/T), N) (T = num_train_timesteps;
    diffusers' smallest training sigma is itself shifted), then shifted by ``shift`` or, with ``mu``,
    by :func:`time_shift`; ``sigmas`` (noise end first, as pipelines pass them) replaces the
    linspace. ``shift_terminal`` stretches the schedule so that its last value is that number.
    diffusers keeps the result in float32; :mod:`linmultistep.backends.diffusers.flow_schedulers`
    reproduces that rounding.
    """
    if isinstance(num_steps, bool) or not hasattr(num_steps, "__index__") or int(num_steps) < 1:
        raise GridError(f"num_steps must be a positive integer, got {num_steps!r}")
    n = int(num_steps)
    T = int(num_train_timesteps)
    if sigmas is None:
        lo = 1.0 / T if mu is not None else float(shift_sigmas(1.0 / T, shift))
        base = np.linspace(1.0, lo, n)
    else:
        base = np.array(sigmas, dtype=np.float64, copy=True)
        if base.ndim != 1 or base.shape[0] != n:
            raise GridError(f"sigmas must be 1-D with num_steps = {n} entries, got shape {base.shape}")
    if mu is not None:
        out = time_shift(base, mu, 1.0, time_shift_type)
    else:
        out = shift_sigmas(base, shift)
    if shift_terminal:
        one_minus = 1.0 - out
        out = 1.0 - one_minus / (one_minus[-1] / (1.0 - _number("shift_terminal", shift_terminal)))
    return np.concatenate([[0.0], out[::-1]])


def flow_grid(t: Any, timesteps: Any = None, *, blend: float = FLOW_BLEND) -> Grid:
    """A rectified-flow grid: times t_0 < ... < t_N in [0, 1] (paper indexing, 0 = data end); the
    field the caller passes is the velocity v = dx/dt. The core integrates it in the projective
    coordinates of ``blend`` b in [0, 1): alpha = 1 - b t, sigma = t (so T = t / (1 - b t)), field
    F = b x + (1 - b t) v (module docstring; b = 0: the flow's own (x, t)). ``timesteps``: the model's
    timestep per point (e.g. 1000 t; NaN at a point never evaluated). A schedule that is not strictly
    increasing, or leaves [0, 1], is refused naming the first bad index (diffusers lists sigmas noise
    first: reverse them)."""
    tt = np.array(t, dtype=np.float64, copy=True)
    if tt.ndim != 1 or tt.shape[0] < 2:
        raise GridError(f"flow times must be a 1-D array of at least 2 points, got shape {tt.shape}")
    bad = ~np.isfinite(tt)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise GridError(f"flow time t[{i}] = {float(tt[i])} is not finite")
    out = (tt < 0) | (tt > 1)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise GridError(f"flow time t[{i}] = {float(tt[i])!r} is outside [0, 1] (x_t = (1 - t) x0 + t eps)")
    down = np.diff(tt) <= 0
    if down.any():
        i = int(np.flatnonzero(down)[0]) + 1
        hint = " (this schedule is descending, noise first: pass it reversed)" if down.all() else ""
        raise GridError(f"flow times must increase strictly from index 0 (data) to N (noise){hint}: "
                        f"t[{i}] = {float(tt[i])!r} <= t[{i - 1}] = {float(tt[i - 1])!r}")
    b = _number("blend", blend)
    if not 0.0 <= b < 1.0:
        raise GridError(f"blend must be in [0, 1) (b = 1 puts the noise end t = 1 at T = t / (1 - b t) = "
                        f"infinity), got {blend!r}")
    if b == 0.0:  # the flow's own coordinates (x, t): no mix, the fingerprint of earlier versions
        return Grid(np.ones_like(tt), tt, timesteps, path=FLOW)
    scale = 1.0 - b * tt
    return Grid(scale, tt, timesteps, path=FLOW, field_mix=(np.full_like(tt, b), scale))


def flow_blend_of(grid: Grid) -> float:
    """The blend b of a flow grid's coordinates (:func:`flow_grid`): 0 for (x, t)."""
    require_flow(grid, "flow_blend_of")
    return 0.0 if grid.field_mix is None else float(grid.field_mix[0][0])


def gaussian_grid(alpha: Any, sigma: Any, timesteps: Any = None) -> Grid:
    """A grid for a general Gaussian path x = alpha x0 + sigma eps with a noise-predicting network,
    given per point (not only from ``alphas_cumprod``); alpha must stay > 0 (use :func:`flow_grid`
    for paths that reach alpha = 0, in their own coordinates)."""
    return Grid(alpha, sigma, timesteps, path=GAUSSIAN)


def is_flow(grid: Grid) -> bool:
    return getattr(grid, "path", GAUSSIAN) == FLOW


def require_flow(grid: Any, what: str = "this function") -> Grid:
    """The grid if it is a flow grid; otherwise a GridError saying what it is instead."""
    if not isinstance(grid, Grid):
        raise TypeError(f"{what} needs a linmultistep.Grid, got {type(grid).__name__}")
    if not is_flow(grid):
        raise GridError(f"{what} needs a rectified-flow grid (linmultistep.paths.flow_grid), got a "
                        f"{getattr(grid, 'path', GAUSSIAN)!r} grid, whose field is a noise prediction")
    return grid


def check_latent_path(latent: Any, grid: Grid) -> None:
    """Refuse, by name, a latent of another path than ``grid``'s (the fingerprint refuses it too,
    with a less specific message): a flow latent's fingerprint starts with 'flow-'."""
    fp = str(getattr(latent, "fingerprint", ""))
    latent_path = fp.split("-", 1)[0] if "-" in fp else GAUSSIAN
    if latent_path != grid.path:
        raise LatentMismatchError(
            f"this latent was inverted on a {latent_path!r} grid ({PATHS.get(latent_path, 'unknown path')}) and "
            f"cannot be continued on a {grid.path!r} grid ({PATHS.get(grid.path, 'unknown path')}): invert it again "
            "with this model's own schedule")


def velocity_from(output: Any, x: Any, t: float, prediction_type: str) -> Any:
    """The velocity v = eps - x0 at x = (1 - t) x0 + t eps from another parametrisation:
    'flow' / 'velocity': v itself; 'epsilon': v = (eps - x) / (1 - t); 'sample': v = (x - x0) / t."""
    if prediction_type in ("flow", "velocity", "flow_prediction"):
        return output
    if prediction_type == "epsilon":
        if t >= 1:
            raise GridError("a noise prediction does not determine the velocity at t = 1")
        return (output - x) * (1.0 / (1.0 - t))
    if prediction_type == "sample":
        if t <= 0:
            raise GridError("a data prediction does not determine the velocity at t = 0")
        return (x - output) * (1.0 / t)
    raise GridError(f"unknown prediction_type {prediction_type!r}; expected 'flow', 'epsilon' or 'sample'")


def flow_to_epsilon(v: Any, x: Any, t: float) -> Any:
    """The noise prediction of a velocity: eps = x + (1 - t) v (and x0 = x - t v)."""
    return x + (1.0 - t) * v
