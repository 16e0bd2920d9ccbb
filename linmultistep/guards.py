"""Precision guards: warnings a run's coefficients and its own states predict (PrecisionWarning),
attributed to the caller's line (:func:`linmultistep.caller.outside_stacklevel`), never to the core's files.

Before a run, from the coefficients alone:

- :func:`rounding_growth_check`: the inverse of a float recurrence amplifies rounding past 1% of the data
  for this dtype (BDIA(gamma < 1), EDICT with small p, over many steps);
- :func:`sampler_checks`: sampling from noise with a 2-step method whose parasitic root -a_{i,2} amplifies
  errors over many steps (|a_{i,2}| > 1: steps growing toward the data end, e.g. O-BELM on SD3's shifted
  flow grid), or carries the starter's error undamped (BDIA(gamma = 1) after a long first step).

During a run, from its states (:class:`RoundingMeter`): the round trip of a float run (modes 'stable'
and 'recurrence') is expected to be off by more than 1% of the data, because the state grew so far beyond
the data (strong classifier-free guidance) that the dtype's rounding of it is no longer small.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping

import numpy as np

from .caller import outside_stacklevel
from .context import StepContext
from .errors import PrecisionWarning
from .methods import Edict, LinearMultistep, Method

__all__ = ["rounding_growth_check", "sampler_checks", "undamped_start_check", "parasitic_growth_check",
           "RoundingMeter", "unit_roundoff", "warn_precision", "TOLERATED_SHARE"]

#: the share of the data's scale a round trip may be off before a run warns
TOLERATED_SHARE = 0.01

#: unit roundoff u = 2^-p (p: significand bits incl. the implicit one) by dtype name; by bytes per element
#: for dtypes without a known name
_ROUNDOFF_BY_NAME = {"bfloat16": 2.0**-8, "float16": 2.0**-11, "half": 2.0**-11, "float32": 2.0**-24,
                     "float": 2.0**-24, "float64": 2.0**-53, "double": 2.0**-53}
_ROUNDOFF = {2: 2.0**-11, 4: 2.0**-24, 8: 2.0**-53}


def unit_roundoff(x: Any) -> float:
    """The unit roundoff of an array's floating dtype (numpy or torch): 2^-24 for float32, 2^-53 for
    float64, 2^-11 for float16, 2^-8 for bfloat16 (which has float16's size but 8 significand bits)."""
    dtype = getattr(x, "dtype", None)
    name = str(dtype).rsplit(".", 1)[-1] if dtype is not None else ""
    if name in _ROUNDOFF_BY_NAME:
        return _ROUNDOFF_BY_NAME[name]
    size = getattr(x, "itemsize", None)
    if not isinstance(size, int):
        size = getattr(dtype, "itemsize", 8)
    return _ROUNDOFF.get(int(size or 8), 2.0**-53)


_unit_roundoff = unit_roundoff  # the earlier private name


def rounding_growth_check(method: Method, ctx: StepContext, x: Any, mode: str) -> None:
    """Warn (PrecisionWarning, pointing at the caller of sample/invert) when the inverse of ``method`` on
    this grid amplifies rounding so much that this dtype's round trip can be off by more than 1% of the
    data: u 2^growth > 1%, with log2 growth read off the coefficients (:meth:`Method.inversion_growth_bits`:
    sum_i -log2 |a_{i,2}| for a 2-step method, BDIA(gamma): N log2(1/gamma); EDICT: N log2(1/p)). The advice
    names what would help *this* run (a p or gamma only when it is outside the customary range)."""
    growth = method.inversion_growth_bits(ctx.h)
    u = unit_roundoff(x)
    budget = math.log2(TOLERATED_SHARE) - math.log2(u)  # bits of growth this dtype can hold
    if not growth > budget:
        return
    N = len(ctx.h) - 1
    name = method.spec.name
    params = dict(method.spec.params)
    n_max = int(N * budget / growth)  # growth is linear in N for a constant gamma or p
    fewer = f"at most {n_max} steps" if n_max >= 1 else "fewer steps"
    exact = "mode 'bits' (exact to the last bit in any dtype)"
    if name == "bdia":
        factor = "prod 1/a_(i,2) = gamma^-N"
        advice = f"use gamma = 1, {fewer} in this dtype, float64, or O-BELM / BDIA(1) in {exact}"
    elif name == "edict":
        factor = "p^-N (EDICT's inverse has determinant p^-2 per step on the pair (x, y))"
        customary = "use p >= 0.9 (0.93 customary), " if float(params.get("p", 1.0)) < 0.9 else "use "
        advice = f"{customary}{fewer} in this dtype or float64 states, or O-BELM in {exact}"
    else:
        factor = "prod 1/a_(i,k)"
        advice = f"use {fewer} in this dtype, float64, or {exact}"
    warn_precision(f"inverting with {method.spec} in mode {mode!r} on this grid (N = {N}) amplifies rounding by about "
                   f"{factor} = 2^{growth:.0f}: with this dtype's unit roundoff {u:.1e} the round trip can be off by "
                   f"more than 1% of the data; {advice}")


# --- sampling from noise ---------------------------------------------------------------------------------
_STARTS_WARNED: set = set()
#: the first step's share of the noise range beyond which an undamped starter error shows in the samples
_LONG_FIRST_STEP = 0.05
#: how much the parasitic root may amplify an error over consecutive steps before sampling from noise warns
_PARASITIC_GROWTH = 10.0
#: the share of the noise range those steps must cover (steps at the data end of a long DDPM grid are tiny)
_PARASITIC_SHARE = 0.05


def sampler_checks(method: Method, ctx: StepContext) -> None:
    """Warnings for sampling from noise that the coefficients predict, at most one per method and grid
    (:func:`parasitic_growth_check`, else :func:`undamped_start_check`). Inversion and the reconstruction
    of a latent are exact whatever these say: they are never warned about here."""
    if not isinstance(method, LinearMultistep) or method.k != 2 or ctx._scale is None:
        return
    h = np.asarray(ctx.h, dtype=np.float64)
    if h.shape[0] - 1 < 3:
        return
    key = (method.plan_key, h.tobytes())
    if key in _STARTS_WARNED:
        return
    a2 = np.array([abs(float(method.coefficients(h[i : i + 2])[0][1])) for i in range(1, h.shape[0] - 1)])
    if parasitic_growth_check(method, h, a2) or undamped_start_check(method, ctx, a2):
        _STARTS_WARNED.add(key)


def _largest_growth(a2: np.ndarray) -> tuple[float, int, int]:
    """(max over runs of consecutive steps of prod |a_(i,2)|, first and last step i of that run): the most
    an error of the parasitic mode can grow between two grid points (Kadane's maximum subarray on log |a|)."""
    logs = np.log(np.maximum(a2, 1e-300))
    best, best_lo, best_hi = 0.0, 0, -1
    cur, lo = 0.0, 0
    for j, v in enumerate(logs):
        if cur <= 0.0:
            cur, lo = v, j
        else:
            cur += v
        if cur > best:
            best, best_lo, best_hi = cur, lo, j
    return math.exp(best), best_lo + 1, best_hi + 1  # a2[j] belongs to step i = j + 1


def parasitic_growth_check(method: Method, h: np.ndarray, a2: np.ndarray) -> bool:
    """Warn when the 2-step recurrence x_{i-1} = a_{i,1} x_i + a_{i,2} x_{i+1} + b_{i,1} h_i eps_i amplifies
    errors when sampling: a perturbation's differences d_i = xbar_i - xbar_{i+1} obey d_{i-1} = -a_{i,2} d_i
    (plus network terms; docs/bdia.md), so over steps where |a_{i,2}| > 1 (steps growing toward the data end,
    e.g. O-BELM a_{i,2} = h_i^2 / h_{i+1}^2 on SD3's shift-3 flow grid, up to 2.07: docs/flow.md) every error
    grows by prod |a_{i,2}|. Warns when that product exceeds _PARASITIC_GROWTH over steps that cover more than
    _PARASITIC_SHARE of the grid's range. Returns whether it warned."""
    growth, lo, hi = _largest_growth(a2)
    share = float(np.sum(h[lo : hi + 1]) / np.sum(h[1:])) if hi >= lo else 0.0
    if growth <= _PARASITIC_GROWTH or share <= _PARASITIC_SHARE:
        return False
    warn_precision(f"sampling from noise with {method.spec} on this grid amplifies errors: its parasitic root "
                   f"-a_(i,2) has |a_(i,2)| up to {a2[lo - 1 : hi].max():.3g} over {hi - lo + 1} consecutive steps "
                   f"(grid indices {lo}..{hi + 1}, {share:.0%} of the range: the steps grow toward the data end), so an "
                   f"error grows by up to prod |a_(i,2)| = {growth:.3g} before the data end. For generation use "
                   "method='ddim' (Euler) or a grid whose steps shrink toward the data end; inversion, reconstruction "
                   "and editing with this method stay exact (a latent holds the pair it needs)")
    return True


def undamped_start_check(method: Method, ctx: StepContext, a2: "np.ndarray | None" = None) -> bool:
    """Warn when sampling from noise carries the starter's error undamped; returns whether it warned.

    A 2-step method's parasitic mode is multiplied by -a_{i,2} at each step. Where prod_i |a_{i,2}| stays
    near 1 (BDIA(gamma = 1): a_2 = 1; any 2-step BELM on a uniform grid) the error of the first step, one
    DDIM step of local error O(h_N^2), is carried to the data end undamped; O-BELM on a grid whose steps
    shrink damps it by (h_1 / h_N)^2. Measured on a Gaussian with the exact flow (Stable Diffusion's
    'leading' grid, 50 steps): BDIA(1) 2.2e-2, DDIM 4.5e-2, O-BELM 7.8e-4 from the same noise.
    """
    if not isinstance(method, LinearMultistep) or method.k != 2 or ctx._scale is None:
        return False
    h = np.asarray(ctx.h, dtype=np.float64)
    N = h.shape[0] - 1
    if N < 3:
        return False
    if a2 is None:
        a2 = np.array([abs(float(method.coefficients(h[i : i + 2])[0][1])) for i in range(1, N)])
    damping = float(np.prod(a2))
    share = h[N] / float(np.sum(h[1:]))
    if damping < 0.5 or share <= _LONG_FIRST_STEP:
        return False
    # O-BELM damps the starter's error only where the grid's steps shrink toward the data: on this grid the
    # advice is another grid (or DDIM), not O-BELM itself
    advice = ("a grid whose steps shrink toward the data end (e.g. the model's own timestep spacing), method='ddim', "
              "or more steps" if method.spec.name == "obelm" else "O-BELM (or more steps)")
    warn_precision(f"sampling from noise with {method.spec}: its first step (the DDIM starter, {share:.0%} of the noise "
                   f"range on this grid) leaves an error that the method carries to the data end undamped (prod "
                   f"|a_(i,2)| = {damping:.2g}); for generation use {advice}. Latents it inverted are not "
                   "affected: their reconstruction starts from the stored pair, without the starter")
    return True


# --- the run's own states --------------------------------------------------------------------------------
class RoundingMeter:
    """The expected round-trip error of a float run (modes 'stable' and 'recurrence') from its own states.

    A step of either form rounds a few sums whose terms are of the size of the states it joins (the shear form
    rounds v_i, w_i v_i and xbar_{i-1}, docs/precision.md section 1; the recurrence its three terms), each by at
    most u times its size: in model coordinates about u r_i at step i, r_i = |x_{i-1}| + 2 |x_i| (max norms).
    Independent roundings add in quadrature (probabilistic rounding error analysis, Higham and Mary 2019), and
    the flow carries an error made at step i to the data end with some gain. On a diffusion model's own scale
    that gain is about 1: the flow contracts an error in xbar by as much as alpha_i scales it down (for data
    N(m, c^2): d xbar_0 / d xbar_i = sqrt(c^2 + sigmabar_0^2) / sqrt(c^2 + sigmabar_i^2)). Where the state grows
    far beyond the data (strong classifier-free guidance drives the latent to thousands), the flow that brings
    it back also spreads perturbations: the gain is taken as that growth, G = max_i |x_i| / max(|x_0|, 1). So

        E = u G sqrt(sum_i r_i^2),

    a first-order estimate of the expected error at the data end, not a bound. On the shipped digits model in
    float32 (50 steps) it says 1e-5 where guidance 1-3 gives 2e-6..2e-5, and warns from guidance 7.5 on, where
    the round trip is off by 1e-2 and more (``python benchmarks/precision_guard.py``).

    One max |x| per step, read lazily (:meth:`ArrayBackend.max_abs_lazy`) at the end of the run.
    """

    def __init__(self, ctx: StepContext, like: Any, direction: str, k: int = 1) -> None:
        self.ctx = ctx
        self.k = int(k)
        self.u = unit_roundoff(like)
        self.direction = direction
        self.dtype = str(getattr(like, "dtype", "?")).rsplit(".", 1)[-1]
        self._sizes: dict[int, Any] = {}

    def add(self, n: int, x: Any) -> None:
        """Record the state produced (or started from) at grid index n."""
        self._sizes[n] = self.ctx.backend.max_abs_lazy(x)

    def expected_error(self) -> tuple[float, float, float]:
        """(E, the data's scale max(|x|, 1) at the run's data-side end, the growth G)."""
        idx = sorted(self._sizes)
        x = dict(zip(idx, (float(v) for v in self.ctx.backend.read([self._sizes[m] for m in idx]))))
        # a latent holds the top k points: the reconstruction starts below them and never recomputes them
        x = {m: v for m, v in x.items() if m <= idx[-1] - (self.k - 1)}
        total = sum((x[lo] + 2.0 * x[lo + 1]) ** 2 for lo in idx if lo + 1 in x)
        data = max(x[idx[0]], 1.0)
        growth = max(1.0, max(x.values()) / data)
        return self.u * growth * math.sqrt(total), data, growth

    def report(self) -> None:
        """Warn (PrecisionWarning) when E exceeds 1% of the data's scale."""
        if len(self._sizes) < self.k + 1:
            return
        E, scale, growth = self.expected_error()
        if not E > TOLERATED_SHARE * scale:  # NaN states are reported by the run's finite checks
            return
        what = ("reconstructing this latent" if self.direction == "backward" else "this reconstruction")
        f64 = E * 2.0**-53 / self.u
        wider = f" or float64 states (expected error about {f64:.0e})" if self.u > 2.0**-53 else ""
        warn_precision(
            f"{what} in {self.dtype} is expected to be off by up to about {E:.2g} (the data's scale is {scale:.2g}): the "
            f"state grew to {growth:.3g} times the data's size along the run (strong classifier-free guidance does "
            f"this, as does a method whose inverse amplifies rounding), and {self.dtype}'s rounding of it (unit roundoff {self.u:.1e}) no longer cancels back to the "
            f"data's size. Use mode 'bits' (exact to the last bit in any dtype; raise its eps_bound if the "
            f"network's |eps| exceeds it){wider}")


def rounding_meter(form: Any, ctx: StepContext, direction: str, window: Mapping[int, Any]) -> "RoundingMeter | None":
    """A meter for a run whose round trip is exact in exact arithmetic and computed in floating point: an
    inversion by an exactly invertible method (2-step BELM, EDICT), or the reconstruction of a latent (a start
    window of entries, not plain noise), in mode 'stable' or 'recurrence' on a diffusion grid."""
    if ctx._scale is None or getattr(getattr(form, "mode_spec", None), "name", None) not in ("stable", "recurrence"):
        return None
    method = form.method
    if direction == "backward":
        exact = isinstance(method, Edict) or (isinstance(method, LinearMultistep) and method.k >= 2
                                               and method.backward_explicit)
        if not exact or (form.mode_spec.name == "recurrence" and method.inversion_growth_bits(ctx.h) >
                         math.log2(TOLERATED_SHARE) - math.log2(unit_roundoff(_first(window)))):
            return None  # (rounding_growth_check has said it before the run)
    elif not any(isinstance(e, tuple) for e in window.values()):
        return None  # sampling from noise: no round trip to keep
    like = _first(window)
    if getattr(getattr(like, "dtype", None), "is_floating_point", True) is False:
        return None
    meter = RoundingMeter(ctx, like, direction, form.k)
    for m, e in window.items():
        meter.add(m, e[0] if isinstance(e, tuple) else e)
    return meter


def _first(window: Mapping[int, Any]) -> Any:
    first = next(iter(window.values()))
    return first[0] if isinstance(first, tuple) else first


def warn_precision(message: str) -> None:
    """A PrecisionWarning attributed to the first frame outside the library (the user's call)."""
    warnings.warn(message, PrecisionWarning, stacklevel=outside_stacklevel())
