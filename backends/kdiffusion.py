"""k-diffusion-compatible samplers and exact inverters for every linmultistep method.

k-diffusion's convention (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models", sec. 2 and Table 1): the data is noised as x = x0 + sigma * eps, a *denoiser*
``model(x, sigma, **extra_args)`` returns D(x; sigma) ~ E[x0 | x] with ``sigma`` a tensor of shape
(batch,), and a sampler walks a descending ``sigmas`` tensor that ends at the data end (usually 0).
The probability-flow ODE is dx/dsigma = (x - D(x; sigma)) / sigma (their eq. 3 with s = 1).

Mapping to the core (BELM paper, Wang et al. 2024, eq. 11): k-diffusion's sigma IS the core's
sigmabar = sigma_VP / alpha, and k-diffusion's x is the core's xbar = x_VP / alpha. The grid is
:meth:`linmultistep.Grid.from_sigmabar` of the sigmas read from the data end (alpha =
1/sqrt(1 + sigma^2)), and the denoiser becomes the core's noise prediction

    eps(x_VP, i) = (x_VE - D(x_VE; sigma_i)) / sigma_i,   x_VE = x_VP / alpha_i.

Where the coordinates change: the core's run (and every :class:`~linmultistep.State`) stays in
VP coordinates x_VP = alpha * x_VE, which keep the stored arrays O(1) at every noise level (the
'bits' mode's default range fits them); k-diffusion's x is converted only at the two ends of a
run (x_N * alpha_N when sampling from noise, x0 * alpha_0 when inverting, / alpha_0 when returning
x0) and inside the network call, which is a fixed function of the stored array. Exactness of a
round trip only needs the network call to be the same function in both directions, so invert
then sample with the same sigmas gives x0 back to rounding (~1e-15 in float64); with sigmas
ending in 0, alpha_0 = 1 exactly and the end conversions are no-ops.

sigma = 0 is never evaluated: the explicit steps evaluate the network at grid indices 1..N only
(an inversion's first, approximate step evaluates x_0 at sigma_1), so the division by sigma_i is
always by a positive number.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch

import linmultistep as lm
from linmultistep import Grid, GridError, LatentMismatchError, Method, State, StepInfo

__all__ = [
    "Denoiser", "check_sigmas", "grid_from_sigmas", "karras_sigmas", "DenoiserEps",
    "sample_lms", "invert_lms",
    "sample_ddim", "sample_obelm", "sample_bdia", "sample_edict", "sample_belm", "sample_adams_bashforth",
    "invert_ddim", "invert_obelm", "invert_bdia", "invert_edict", "invert_belm",
]

#: model(x, sigma, **extra_args) -> denoised D(x; sigma), x = x0 + sigma * eps, sigma of shape (batch,).
Denoiser = Callable[..., torch.Tensor]
#: callback({'x', 'i', 'sigma', 'sigma_hat', 'denoised'}) as k-diffusion calls it.
Callback = Callable[[dict], Any]


# --- sigmas and grid ------------------------------------------------------------------------------
def check_sigmas(sigmas: Any) -> np.ndarray:
    """The sigmas as float64 values (descending, as given), or a GridError naming what is wrong:
    not 1-D, fewer than 2 entries, NaN/infinite, negative, or not strictly descending."""
    if isinstance(sigmas, torch.Tensor):
        values = sigmas.detach().to("cpu", torch.float64).numpy()
    else:
        try:
            values = np.array(sigmas, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise GridError(f"sigmas must be a 1-D tensor of noise levels, got {type(sigmas).__name__}: "
                            f"{exc}") from None
    if values.ndim != 1:
        raise GridError(f"sigmas must be 1-D (one noise level per grid point), got shape {tuple(values.shape)}")
    if values.shape[0] < 2:
        raise GridError(f"sigmas needs at least 2 entries (one step), got {values.shape[0]}")
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise GridError(f"sigmas[{i}] = {float(values[i])} is not finite")
    if (values < 0).any():
        i = int(np.flatnonzero(values < 0)[0])
        raise GridError(f"sigmas[{i}] = {float(values[i])!r} is negative; noise levels are >= 0")
    up = np.diff(values) >= 0
    if up.any():
        i = int(np.flatnonzero(up)[0])
        hint = " (the schedule is ascending: pass sigmas.flip(0))" if up.all() else ""
        raise GridError(f"sigmas must be strictly descending (noise end first, data end last){hint}: "
                        f"sigmas[{i + 1}] = {float(values[i + 1])!r} >= sigmas[{i}] = {float(values[i])!r}")
    return values


def grid_from_sigmas(sigmas: Any) -> Grid:
    """The core's grid for k-diffusion sigmas: index 0 = sigmas[-1] (data end), N = sigmas[0].

    sigmabar = sigma (k-diffusion's sigma is the VP grid's sigma/alpha), alpha = 1/sqrt(1 + sigma^2)
    (:meth:`linmultistep.Grid.from_sigmabar`). Equal sigmas give equal grids and fingerprints.
    """
    return _checked_grid(sigmas)[1]


def _checked_grid(sigmas: Any) -> tuple[np.ndarray, Grid]:
    """The checked sigma values (descending, as given) and :func:`grid_from_sigmas` of them."""
    values = check_sigmas(sigmas)
    return values, Grid.from_sigmabar(values[::-1])


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0,
                  dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """n + 1 descending sigmas ending in 0: Karras et al. 2022 eq. (5),
    sigma_i = (sigma_max^(1/rho) + i/(n-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, i < n."""
    if n < 1 or not 0 < sigma_min < sigma_max:
        raise GridError(f"need n >= 1 and 0 < sigma_min < sigma_max, got n={n}, sigma_min={sigma_min}, "
                        f"sigma_max={sigma_max}")
    ramp = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    values = np.append((hi + ramp * (lo - hi)) ** rho, 0.0)
    return torch.tensor(values, dtype=dtype)


# --- the denoiser as the core's eps_fn ------------------------------------------------------------
class DenoiserEps:
    """A k-diffusion denoiser as the core's ``eps_fn(x, i)`` on :func:`grid_from_sigmas`.

    eps(x_VP, i) = (x_VE - D(x_VE; sigma_i)) / sigma_i with x_VE = x_VP / alpha_i (Karras et al.
    2022 eq. 3: the ODE's slope is (x - D) / sigma = eps). The model gets the exact sigma values
    given (not values recomputed from the grid), as ``x.new_full((batch,), sigma_i)``.
    ``last_denoised`` is the most recent D (for k-diffusion callbacks).
    """

    def __init__(self, model: Denoiser, sigmas: np.ndarray, grid: Grid,
                 extra_args: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self.sigma = np.ascontiguousarray(sigmas[::-1])  # grid order: index 0 = data end
        self.grid = grid
        self.extra_args = dict(extra_args or {})
        self.last_denoised: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, i: int) -> torch.Tensor:
        sigma = float(self.sigma[i])
        if sigma <= 0.0:  # the samplers never ask for it (module docstring); a custom run might
            raise GridError(f"the denoiser cannot give eps at sigma = 0 (grid index {i})")
        x_ve = x / float(self.grid.alpha[i])
        denoised = self.model(x_ve, x.new_full((x.shape[0],), sigma), **self.extra_args)
        if not isinstance(denoised, torch.Tensor) or denoised.shape != x.shape:
            # (1, 8) for a (3, 8) batch would be broadcast over every row: a wrong result, silently
            got = tuple(denoised.shape) if isinstance(denoised, torch.Tensor) else type(denoised).__name__
            raise ValueError(f"the denoiser returned {got} for x of shape {tuple(x.shape)} at sigma = {sigma:g} "
                             "(grid index {i}); it must return the denoised x, of x's shape".replace("{i}", str(i)))
        self.last_denoised = denoised
        return (x_ve - denoised) / sigma


# --- shared plumbing --------------------------------------------------------------------------------
def _check_x(x: Any, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch tensor (or the State an invert_* returned), got {type(x).__name__}")
    if x.ndim < 1:
        raise ValueError(f"{what} needs a batch dimension first (k-diffusion passes sigma per batch row), "
                         "got a 0-d tensor")


def _progress(disable: bool | None) -> bool | dict:
    """k-diffusion's ``disable`` for the core's tqdm bar (None: tqdm disables it off a terminal)."""
    return False if disable is True else {"disable": disable}


def _check_state(state: State, method: Method, grid: Grid) -> None:
    """Refuse a State of another method or other sigmas with a k-diffusion-phrased message
    (the core would also refuse it; this says which argument to change)."""
    if state.method != method.spec:
        raise LatentMismatchError(f"this State was inverted with {state.method}, not {method.spec}: sample it with "
                                  "the method it was inverted with")
    if state.fingerprint != grid.fingerprint:
        raise LatentMismatchError(f"this State was inverted with other sigmas (grid {state.fingerprint}, these "
                                  f"sigmas give {grid.fingerprint}): pass the same sigmas, values and length, to "
                                  "invert and sample")


def _as_ve(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return x if alpha == 1.0 else x / alpha


def _sigma_at(sigmas: Any, values: np.ndarray, j: int) -> torch.Tensor:
    """sigmas[j] as k-diffusion's callback gives it: an element of the caller's tensor."""
    return sigmas[j] if isinstance(sigmas, torch.Tensor) else torch.tensor(values[j], dtype=torch.float64)


def _sampling_callback(callback: Callback, den: DenoiserEps, sigmas: Any, values: np.ndarray, grid: Grid,
                       first: torch.Tensor) -> Callable[[StepInfo], None]:
    """The core's per-step callback as k-diffusion's: one call per step i = 0.. with the x the step
    started from (at sigmas[i]) and the denoiser's output there."""
    current = {"x": first}

    def on_step(info: StepInfo) -> None:
        i = grid.N - (info.index + 1)  # the step went from grid point index+1 = sigmas[i] to index
        sigma = _sigma_at(sigmas, values, i)
        callback({"x": current["x"], "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": den.last_denoised})
        current["x"] = _as_ve(info.entry.x, float(grid.alpha[info.index]))

    return on_step


def _inversion_callback(callback: Callback, den: DenoiserEps, sigmas: Any, values: np.ndarray,
                        grid: Grid) -> Callable[[StepInfo], None]:
    """Per inversion step i = 0..: the new point x (k-diffusion coordinates) at its sigma."""

    def on_step(info: StepInfo) -> None:
        sigma = _sigma_at(sigmas, values, grid.N - info.index)
        callback({"x": _as_ve(info.entry.x, float(grid.alpha[info.index])), "i": info.step - 1, "sigma": sigma,
                  "sigma_hat": sigma, "denoised": den.last_denoised})

    return on_step


# --- generic sampler and inverter -----------------------------------------------------------------
def sample_lms(
    model: Denoiser,
    x: "torch.Tensor | State",
    sigmas: Any,
    extra_args: Mapping[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    method: "str | Method" = "obelm",
    mode: str | None = None,
) -> torch.Tensor:
    """Sample with any linmultistep method from ``x`` at sigmas[0] down to sigmas[-1] (k-diffusion API).

    ``x``: noise in k-diffusion coordinates (x = sigmas[0] * randn for generation), or the
    :class:`~linmultistep.State` an ``invert_*`` returned with the same sigmas and method (exact
    reconstruction). ``method``: a name ('ddim', 'obelm', 'bdia', 'edict', 'belm',
    'adams_bashforth') or a method object such as ``linmultistep.bdia(0.5)``; ``mode`` as in
    :func:`linmultistep.sample`. Runs :func:`linmultistep.sample` on :func:`grid_from_sigmas` with
    :class:`DenoiserEps`; the ODE is dx/dsigma = (x - D(x; sigma)) / sigma (Karras et al. 2022).
    """
    values, grid = _checked_grid(sigmas)
    m = lm.get_method(method)
    den = DenoiserEps(model, values, grid, extra_args)
    if isinstance(x, State):
        _check_state(x, m, grid)
        start, first = x, _as_ve(x.window[x.lo].x, float(grid.alpha[x.lo]))
    else:
        _check_x(x, "the starting noise x")
        start, first = x * float(grid.alpha[grid.N]), x  # VP coordinates: x_VP = alpha_N x_VE
    hook = None if callback is None else _sampling_callback(callback, den, sigmas, values, grid, first)
    out = lm.sample(den, start, grid, m, mode=mode, callback=hook, progress=_progress(disable))
    return _as_ve(out, float(grid.alpha[0]))


def invert_lms(
    model: Denoiser,
    x0: torch.Tensor,
    sigmas: Any,
    extra_args: Mapping[str, Any] | None = None,
    callback: Callback | None = None,
    disable: bool | None = None,
    method: "str | Method" = "obelm",
    mode: str | None = None,
) -> State:
    """Invert data ``x0`` (at sigmas[-1], usually 0) to the noise end sigmas[0] (exact for BELMs and EDICT).

    Returns the core's :class:`~linmultistep.State`: the last k points of the run in VP coordinates
    (x_N, x_{N-1} for a 2-step method; EDICT's coupled pair (x_N, y_N)) with the method, mode and
    grid fingerprint (``state.x / alpha_N`` is x_N in k-diffusion coordinates). Pass the State itself
    to ``sample_*`` with the same sigmas and method for the exact round trip. The callback gets
    one call per step i = 0..N-1 with the new point x (k-diffusion coordinates) at its sigma.
    """
    values, grid = _checked_grid(sigmas)
    m = lm.get_method(method)
    _check_x(x0, "the data x0")
    den = DenoiserEps(model, values, grid, extra_args)
    start = x0 if grid.alpha[0] == 1.0 else x0 * float(grid.alpha[0])
    hook = None if callback is None else _inversion_callback(callback, den, sigmas, values, grid)
    return lm.invert(den, start, grid, m, mode=mode, callback=hook, progress=_progress(disable))


# --- named samplers (thin) ------------------------------------------------------------------------
def sample_ddim(model: Denoiser, x: "torch.Tensor | State", sigmas: Any, extra_args: Mapping[str, Any] | None = None,
                callback: Callback | None = None, disable: bool | None = None, mode: str | None = None) -> torch.Tensor:
    """DDIM = explicit Euler in sigma (Song et al. 2021; Karras et al. 2022 Alg. 1 without the Heun
    correction): x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (x_i - D(x_i; sigma_i)) / sigma_i."""
    return sample_lms(model, x, sigmas, extra_args, callback, disable, method="ddim", mode=mode)


def sample_obelm(model: Denoiser, x: "torch.Tensor | State", sigmas: Any, extra_args: Mapping[str, Any] | None = None,
                 callback: Callback | None = None, disable: bool | None = None,
                 mode: str | None = None) -> torch.Tensor:
    """O-BELM (BELM paper Prop. 4), 2-step, order 2, started by one DDIM step; in grid order with
    h_i = sigma_i - sigma_{i-1}: x_{i-1} = (h_{i+1}^2 - h_i^2)/h_{i+1}^2 x_i + h_i^2/h_{i+1}^2 x_{i+1}
    - (h_i + h_{i+1}) h_i / h_{i+1} eps_i (in xbar = k-diffusion's x; grid index 0 = data end)."""
    return sample_lms(model, x, sigmas, extra_args, callback, disable, method="obelm", mode=mode)


def sample_bdia(model: Denoiser, x: "torch.Tensor | State", sigmas: Any, extra_args: Mapping[str, Any] | None = None,
                callback: Callback | None = None, disable: bool | None = None, gamma: float = 1.0,
                mode: str | None = None) -> torch.Tensor:
    """BDIA(gamma) (Zhang et al. 2023) as a 2-step BELM (BELM paper sec. 3.2); gamma = 1 is time-symmetric."""
    return sample_lms(model, x, sigmas, extra_args, callback, disable, method=lm.bdia(gamma), mode=mode)


def sample_edict(model: Denoiser, x: "torch.Tensor | State", sigmas: Any, extra_args: Mapping[str, Any] | None = None,
                 callback: Callback | None = None, disable: bool | None = None, p: float = 0.93,
                 mode: str | None = None) -> torch.Tensor:
    """EDICT (Wallace et al. 2023; BELM paper sec. 3.2): coupled DDIM steps on (x, y) mixed with weight p,
    two denoiser calls per step."""
    return sample_lms(model, x, sigmas, extra_args, callback, disable, method=lm.edict(p), mode=mode)


def sample_belm(model: Denoiser, x: "torch.Tensor | State", sigmas: Any, extra_args: Mapping[str, Any] | None = None,
                callback: Callback | None = None, disable: bool | None = None, k: int = 2,
                rule: Callable | None = None, mode: str | None = None) -> torch.Tensor:
    """A k-step BELM (BELM paper eq. 12): the LTE-optimal rule for k (k = 2 is O-BELM's) or any
    bidirectional explicit coefficient ``rule`` (see docs/custom-integrators.md)."""
    return sample_lms(model, x, sigmas, extra_args, callback, disable, method=lm.belm(rule, k=k), mode=mode)


def sample_adams_bashforth(model: Denoiser, x: torch.Tensor, sigmas: Any, extra_args: Mapping[str, Any] | None = None,
                           callback: Callback | None = None, disable: bool | None = None, k: int = 2) -> torch.Tensor:
    """Variable-step Adams-Bashforth of order k in sigma (not invertible: a sampler only)."""
    return sample_lms(model, x, sigmas, extra_args, callback, disable, method=lm.adams_bashforth(k))


# --- named inverters (thin) -----------------------------------------------------------------------
def invert_ddim(model: Denoiser, x0: torch.Tensor, sigmas: Any, extra_args: Mapping[str, Any] | None = None,
                callback: Callback | None = None, disable: bool | None = None, mode: str | None = None) -> State:
    """DDIM inversion, approximate: each step takes the slope from the lower-noise point evaluated with the
    higher sigma (diffusers' DDIMInverseScheduler convention); for comparison with the exact inverters."""
    return invert_lms(model, x0, sigmas, extra_args, callback, disable, method="ddim", mode=mode)


def invert_obelm(model: Denoiser, x0: torch.Tensor, sigmas: Any, extra_args: Mapping[str, Any] | None = None,
                 callback: Callback | None = None, disable: bool | None = None, mode: str | None = None) -> State:
    """Exact O-BELM inversion (BELM paper eq. 13): the State holds (x_N, x_{N-1})."""
    return invert_lms(model, x0, sigmas, extra_args, callback, disable, method="obelm", mode=mode)


def invert_bdia(model: Denoiser, x0: torch.Tensor, sigmas: Any, extra_args: Mapping[str, Any] | None = None,
                callback: Callback | None = None, disable: bool | None = None, gamma: float = 1.0,
                mode: str | None = None) -> State:
    """Exact BDIA(gamma) inversion; rounding grows like gamma^-N for gamma < 1."""
    return invert_lms(model, x0, sigmas, extra_args, callback, disable, method=lm.bdia(gamma), mode=mode)


def invert_edict(model: Denoiser, x0: torch.Tensor, sigmas: Any, extra_args: Mapping[str, Any] | None = None,
                 callback: Callback | None = None, disable: bool | None = None, p: float = 0.93,
                 mode: str | None = None) -> State:
    """Exact EDICT inversion: the State holds the coupled pair (x_N, y_N)."""
    return invert_lms(model, x0, sigmas, extra_args, callback, disable, method=lm.edict(p), mode=mode)


def invert_belm(model: Denoiser, x0: torch.Tensor, sigmas: Any, extra_args: Mapping[str, Any] | None = None,
                callback: Callback | None = None, disable: bool | None = None, k: int = 2,
                rule: Callable | None = None, mode: str | None = None) -> State:
    """Exact k-step BELM inversion: the State holds the last k points (x_N, ..., x_{N-k+1})."""
    return invert_lms(model, x0, sigmas, extra_args, callback, disable, method=lm.belm(rule, k=k), mode=mode)
