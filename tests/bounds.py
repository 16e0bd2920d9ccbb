"""Float round-trip bounds derived from the dtype and the method, never a rounding magnitude measured on one
machine (users' CPUs round differently: AVX-512, AVX2 and torch's portable kernels differ in the last bits).

A round trip (inversion then reconstruction, N steps each) of an exact method in floating point (O-BELM, BDIA(1)
in mode 'stable' or 'recurrence') rounds a few sums per step, each by at most u, the dtype's unit roundoff,
times the size of the state. In the scaled coordinates xbar = x / alpha, where the steps are taken, the state
is up to 1/min(alpha) times the data's size, and the shear form passes an error on with coefficient 1
(docs/precision.md). So, relative to the data's size,

    |round trip - data| <= ROUNDINGS * 2N * u / min_m alpha_m,

ROUNDINGS = 8: a step of the stable form rounds c eps, v, w v, xbar and x = s xbar (5), the network's output enters
rounded (1), with room for a backend that groups the sums differently (2). The linear sum (not the quadrature
sum) keeps it a bound for rounding errors that happen to align. A broken inversion misses it by orders of
magnitude (DDIM inversion: 1e-2 and more).
"""

from __future__ import annotations

from typing import Any

#: roundings per step and direction (module docstring)
ROUNDINGS = 8


def unit_roundoff(dtype: Any) -> float:
    """u = eps / 2 of a numpy or torch floating dtype, from the array library's own finfo."""
    if type(dtype).__module__.startswith("torch"):
        import torch

        return float(torch.finfo(dtype).eps) / 2
    import numpy as np

    return float(np.finfo(dtype).eps) / 2


def round_trip_bound(dtype: Any, grid: Any) -> float:
    """The relative round-trip bound of the module docstring for states of ``dtype`` on ``grid``."""
    import numpy as np

    return ROUNDINGS * 2 * int(grid.N) * unit_roundoff(dtype) / float(np.min(grid.alpha))
