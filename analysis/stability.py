"""Zero-stability and convergence verdicts for any method, and variable-step growth on a real grid.

The verdicts are read from the one model (:class:`.relation.LMRelation`: :meth:`~.relation.LMRelation.zero_stability`,
:meth:`~.relation.LMRelation.convergence`); this module only dispatches (EDICT is not a linear
multistep relation: its two-state step map at h -> 0 is analysed instead) and adds the growth
of perturbations on a given variable grid: the homogeneous recurrence is driven by companion
matrices M_i (from the coefficients a_{i,1..k}); their products bound how perturbations
(rounding, starting errors) grow. The inversion runs with M_i^{-1}, whose determinant is ±1/a_{i,k}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy as sp

from .relation import Convergence, LMRelation, ZeroStability, as_relation
from .rootcond import Z, root_condition

__all__ = [
    "ZeroStability",
    "Convergence",
    "GridGrowth",
    "is_zero_stable",
    "convergence",
    "grid_growth",
    "as_uniform_relation",
]


def as_uniform_relation(x: Any, params: dict | None = None) -> LMRelation:
    """The model of ``x`` at equal steps (params substituted): ``as_relation(x, params=...).fixed()``."""
    return as_relation(x, params=params).fixed()


def _matrix_verdict(label: str, M: sp.Matrix) -> ZeroStability:
    """Power-boundedness of a fixed matrix: root condition on its minimal polynomial.

    minimal polynomial = charpoly / gcd of the (n-1)-minors of zI - M (entries of the adjugate).
    """
    n = M.shape[0]
    A = Z * sp.eye(n) - M
    chi = sp.factor(A.det())
    adj = A.adjugate()
    d = sp.Integer(0)
    for e in adj:
        d = sp.gcd(d, sp.expand(e))
    mp = sp.Poly(sp.cancel(chi / d), Z).monic().as_expr() if n > 1 else chi
    samp = root_condition(mp)
    inv = None
    if M.det() != 0:
        inv = root_condition(sp.Poly(mp, Z).monic().as_expr().subs(Z, 1 / Z) * Z ** sp.degree(mp, Z))
    return ZeroStability(label, mp, samp, inv)


def is_zero_stable(x: Any, params: dict | None = None) -> ZeroStability:
    """Exact zero-stability at uniform steps of a derivation, LMRelation or catalogue method.

    For EDICT (not a linear multistep rule) the two-state step map at h -> 0 is analysed:
    it is power-bounded exactly when its minimal polynomial satisfies the root condition.
    """
    from linmultistep.methods import Edict

    if isinstance(x, Edict):
        from .edict import edict_zero_step_matrix

        p = sp.Rational(float(x.p))
        return _matrix_verdict(f"edict(p={float(x.p)})", edict_zero_step_matrix(p))
    return as_relation(x, params=params).zero_stability()


def convergence(x: Any, params: dict | None = None) -> Convergence:
    """Dahlquist's equivalence at uniform steps: convergent iff consistent and zero-stable."""
    return as_relation(x, params=params).convergence()


@dataclass
class GridGrowth:
    """Growth of homogeneous perturbations over a grid, both directions (float64, max-row norm).

    ``sampling_worst`` = max over runs m..n of ||M_m ... M_n||_inf; ``inversion_worst`` likewise
    for the inverse matrices; ``inversion_det_product`` = prod_i 1/|a_{i,k}| (the volume the
    inversion expands by; for O-BELM it telescopes to (h_N/h_k... )^2).
    """

    label: str
    steps: int
    sampling_worst: float
    sampling_total: float
    inversion_worst: float
    inversion_total: float
    inversion_det_product: float

    def __str__(self) -> str:
        return (f"{self.label} over {self.steps} relations: sampling growth worst {self.sampling_worst:.4g} "
                f"(whole run {self.sampling_total:.4g}); inversion growth worst {self.inversion_worst:.4g} "
                f"(whole run {self.inversion_total:.4g}); prod 1/|a_i,k| = {self.inversion_det_product:.4g}")


def _companion(a: np.ndarray) -> np.ndarray:
    """Maps (x_i, ..., x_{i+k-1}) to (x_{i-1}, ..., x_{i+k-2})."""
    k = a.shape[0]
    M = np.zeros((k, k))
    M[0, :] = a
    M[1:, :-1] = np.eye(k - 1)
    return M


def _worst_product(mats: list[np.ndarray]) -> tuple[float, float]:
    """max_{m<=n} ||mats[m] @ ... @ mats[n]||_inf and the norm of the whole product."""
    worst, total = 1.0, 1.0
    n = len(mats)
    for start in range(n):
        P = np.eye(mats[0].shape[0])
        for m in range(start, n):
            P = P @ mats[m]
            worst = max(worst, float(np.abs(P).sum(axis=1).max()))
        if start == 0:
            total = float(np.abs(P).sum(axis=1).max())
    return worst, total


def grid_growth(method: Any, grid: Any) -> GridGrowth:
    """Companion-matrix growth of a LinearMultistep's relations i = 1..N-k+1 on a Grid (or h array).

    Sampling applies M_{N-k+1} first and M_1 last; the inversion applies the inverses in reverse.
    """
    h = np.asarray(getattr(grid, "h", grid), dtype=np.float64)
    k = method.k
    N = h.shape[0] - 1
    if N < k:
        raise ValueError(f"a {k}-step method needs a grid with at least {k} steps, got N = {N}")
    coeffs = [method.coefficients(h[i : i + k])[0] for i in range(1, N - k + 2)]
    Ms = [_companion(a) for a in coeffs]
    # sampling: x at the low end = M_1 M_2 ... M_{N-k+1} x at the high end
    s_worst, s_total = _worst_product(Ms)
    if any(a[-1] == 0 for a in coeffs):
        inv_worst = inv_total = det = float("inf")
    else:
        invs = [np.linalg.inv(M) for M in Ms]
        inv_worst, inv_total = _worst_product(list(reversed(invs)))
        det = float(np.prod([1.0 / abs(a[-1]) for a in coeffs]))
    return GridGrowth(str(getattr(method, "spec", method)), len(Ms), s_worst, s_total, inv_worst, inv_total, det)
