"""Precision guards: warnings a run's coefficients predict before it starts (PrecisionWarning), attributed
to the caller's line (the first frame outside the core), never to the core's own files.

- :func:`rounding_growth_check`: the inverse of a float recurrence amplifies rounding past 1% of the data
  for this dtype (BDIA(gamma < 1), EDICT with small p, over many steps);
- :func:`undamped_start_check`: sampling from noise with a 2-step method whose parasitic mode is not damped
  (BDIA(gamma = 1)) carries the starter's error to the data end.
"""

from __future__ import annotations

import math
import sys
import warnings
from typing import Any

import numpy as np

from .context import StepContext
from .errors import PrecisionWarning
from .methods import LinearMultistep, Method

__all__ = ["rounding_growth_check", "undamped_start_check", "warn_precision"]


#: unit roundoff by bytes per element (float16, float32, float64)
_ROUNDOFF = {2: 2.0**-11, 4: 2.0**-24, 8: 2.0**-53}


def _unit_roundoff(x: Any) -> float:
    size = getattr(x, "itemsize", None)
    if not isinstance(size, int):
        size = getattr(getattr(x, "dtype", None), "itemsize", 8)
    return _ROUNDOFF.get(int(size or 8), 2.0**-53)


def rounding_growth_check(method: Method, ctx: StepContext, x: Any, mode: str) -> None:
    """Warn (PrecisionWarning, pointing at the caller of sample/invert) when the inverse of ``method`` on
    this grid amplifies rounding so much that this dtype's round trip can be off by more than 1% of the
    data: log2 growth = sum_i -log2 |a_{i,k}| for a 2-step method (BDIA(gamma): N log2(1/gamma)),
    -2 N log2 p for EDICT (its mixing step divides by p twice), from the coefficients."""
    growth = method.inversion_growth_bits(ctx.h)
    u = _unit_roundoff(x)
    if not growth > 0 or growth + math.log2(u) <= math.log2(0.01):
        return
    N = len(ctx.h) - 1
    name = method.spec.name
    factor = {"bdia": "prod 1/a_(i,2) = gamma^-N", "edict": "p^(-2N) (EDICT's inverse divides by p twice per step)"}.get(
        name, "prod 1/a_(i,k)")
    advice = {"bdia": "use gamma = 1, fewer steps, float64, or mode 'bits' (exact to the last bit in any dtype)",
              "edict": "use p >= 0.9 (0.93 customary), fewer steps or float64, or O-BELM"}.get(
        name, "use fewer steps, float64, or mode 'bits' (exact to the last bit in any dtype)")
    warn_precision(f"inverting with {method.spec} in mode {mode!r} on this grid (N = {N}) amplifies rounding by about "
          f"{factor} = 2^{growth:.0f}: with this dtype's unit roundoff {u:.1e} the round trip can be off by more "
          f"than 1% of the data; {advice}")


_STARTS_WARNED: set = set()
#: the first step's share of the noise range beyond which an undamped starter error shows in the samples
_LONG_FIRST_STEP = 0.05


def undamped_start_check(method: Method, ctx: StepContext) -> None:
    """Warn once per method and grid when sampling from noise carries the starter's error undamped.

    A 2-step method's parasitic mode is multiplied by -a_{i,2} at each step. Where prod_i |a_{i,2}| stays
    near 1 (BDIA(gamma = 1): a_2 = 1; any 2-step BELM on a uniform grid) the error of the first step, one
    DDIM step of local error O(h_N^2), is carried to the data end undamped; O-BELM on a grid whose steps
    shrink damps it by (h_1 / h_N)^2. Measured on a Gaussian with the exact flow (Stable Diffusion's
    'leading' grid, 50 steps): BDIA(1) 2.2e-2, DDIM 4.5e-2, O-BELM 7.8e-4 from the same noise.
    """
    if not isinstance(method, LinearMultistep) or method.k != 2 or ctx._scale is None:
        return
    h = np.asarray(ctx.h, dtype=np.float64)
    N = h.shape[0] - 1
    if N < 3:
        return
    damping = 1.0
    for i in range(1, N):
        damping *= abs(float(method.coefficients(h[i : i + 2])[0][1]))
    share = h[N] / float(np.sum(h[1:]))
    key = (method.plan_key, h.tobytes())
    if damping < 0.5 or share <= _LONG_FIRST_STEP or key in _STARTS_WARNED:
        return
    _STARTS_WARNED.add(key)
    warn_precision(f"sampling from noise with {method.spec}: its first step (the DDIM starter, {share:.0%} of the noise "
          f"range on this grid) leaves an error that the method carries to the data end undamped (prod |a_(i,2)| = "
          f"{damping:.2g}); for generation use O-BELM (or more steps). Latents it inverted are not affected: their "
          "reconstruction starts from the stored pair, without the starter")


def warn_precision(message: str) -> None:
    """A PrecisionWarning attributed to the first frame outside the core (the user's call)."""
    warnings.warn(message, PrecisionWarning, stacklevel=_outside_core_level())


def _outside_core_level() -> int:
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("linmultistep"):
        frame, level = frame.f_back, level + 1
    return level
