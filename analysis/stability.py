"""Zero-stability (uniform steps, exact), convergence verdicts and variable-step growth on a grid.

At equal steps a k-step relation xbar_{i-1} = sum_j a_j xbar_{i-1+j} + h(...) has, in its own
direction of travel, the first characteristic polynomial rho(z) = z^k - a_1 z^{k-1} - ... - a_k.
It is zero-stable when rho satisfies the root condition (:mod:`.rootcond`). Run backwards
(inversion, solved for the oldest point) the recurrence has the reciprocal polynomial
z^k rho(1/z) / (-a_k): a method is zero-stable in BOTH directions only if every zero of rho lies
on the unit circle. Convergence at uniform steps = consistency + zero-stability (Dahlquist).

On a given variable grid, the homogeneous recurrence is driven by companion matrices
M_i (from the coefficients a_{i,1..k}); their products bound how perturbations (rounding,
starting errors) grow. The inversion runs with M_i^{-1}, whose determinant is ±1/a_{i,k}.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy as sp

from .relation import LMRelation, H, relation_from_method
from .rootcond import RootCondition, Z, root_condition

__all__ = [
    "ZeroStability",
    "Convergence",
    "GridGrowth",
    "is_zero_stable",
    "characteristic_polynomial",
    "convergence",
    "grid_growth",
    "as_uniform_relation",
]


def as_uniform_relation(x: Any, params: dict | None = None) -> LMRelation:
    """A derivation, relation or LinearMultistep as an LMRelation at equal steps (params substituted)."""
    from .derive import BELMDerivation

    if isinstance(x, BELMDerivation):
        rel = x.relation
    elif isinstance(x, LMRelation):
        rel = x
    elif hasattr(x, "rule") and hasattr(x, "k"):
        rel = relation_from_method(x)
    else:
        raise TypeError(f"cannot analyse {x!r}: give a derivation, an LMRelation or a LinearMultistep")
    if params:
        rel = rel.subs(params)
    if rel.params:
        raise ValueError(f"{rel.label} has free parameters {list(map(str, rel.params))}; give them values "
                         "(params={...}) or use linmultistep.analysis.search_zero_stable for the family")
    rel = rel.uniform()
    free = set().union(*[sp.sympify(c).free_symbols for c in rel.a]) - {H}
    if free:
        raise ValueError(f"{rel.label}: coefficients at equal steps still contain {sorted(map(str, free))}")
    if any(sp.sympify(c).has(H) for c in rel.a):
        raise ValueError(f"{rel.label}: a_j at equal steps depend on h; not a fixed-coefficient method")
    return rel


def characteristic_polynomial(rel: LMRelation) -> sp.Expr:
    """rho(z) = z^k - sum_j a_j z^{k-j} of a uniform-step relation."""
    return sp.expand(Z ** rel.k - sum(rel.a[j - 1] * Z ** (rel.k - j) for j in range(1, rel.k + 1)))


@dataclass
class ZeroStability:
    """Verdict of :func:`is_zero_stable`: truthy exactly when zero-stable at uniform steps (sampling
    direction). ``inversion`` is the same verdict for the recurrence run backwards (None if a_k = 0)."""

    label: str
    rho: sp.Expr
    sampling: RootCondition
    inversion: RootCondition | None

    def __bool__(self) -> bool:
        return bool(self.sampling)

    @property
    def both_directions(self) -> bool:
        return bool(self.sampling) and bool(self.inversion)

    def __str__(self) -> str:
        roots = ", ".join(_fmt_root(r) for r in self.sampling.roots())
        lines = [f"{self.label}: {'zero-stable' if self else 'NOT zero-stable'} at uniform steps",
                 f"  rho(z) = {sp.factor(self.rho)}   roots: {roots}"]
        lines += [f"  - {r}" for r in self.sampling.reasons]
        if self.inversion is None:
            lines.append("  inversion: a_k = 0, cannot run backwards")
        else:
            lines.append(f"  inversion direction (reciprocal polynomial): "
                         f"{'zero-stable' if self.inversion else 'NOT zero-stable'}")
            lines += [f"  - {r}" for r in self.inversion.reasons]
        return "\n".join(lines)


def _fmt_root(r: complex) -> str:
    if abs(r.imag) < 1e-12:
        return f"{r.real:.4g}"
    return f"{r.real:.4g}{r.imag:+.4g}j"


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
    if type(x).__name__ == "Edict":
        from .edict import edict_zero_step_matrix

        p = sp.Rational(float(x.p))
        return _matrix_verdict(f"edict(p={float(x.p)})", edict_zero_step_matrix(p))
    rel = as_uniform_relation(x, params)
    rho = characteristic_polynomial(rel)
    samp = root_condition(rho)
    ak = sp.simplify(rel.a[-1])
    inv = None
    if ak != 0:
        inv = root_condition(sp.expand(sp.cancel(Z ** rel.k * rho.subs(Z, 1 / Z) / (-ak))))
    return ZeroStability(rel.label, rho, samp, inv)


@dataclass
class Convergence:
    """Convergence at uniform steps = consistency (order >= 1) + zero-stability; says why."""

    label: str
    order: int
    zero_stability: ZeroStability
    reasons: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.order >= 1 and bool(self.zero_stability)

    def __str__(self) -> str:
        head = f"{self.label}: {'convergent' if self else 'NOT convergent'} at uniform steps"
        return "\n".join([head] + [f"  - {r}" for r in self.reasons])


def convergence(x: Any, params: dict | None = None) -> Convergence:
    """Dahlquist's equivalence at uniform steps: convergent iff consistent and zero-stable."""
    from .relation import local_error

    zs = is_zero_stable(x, params)
    rel = as_uniform_relation(x, params)
    le = local_error(rel)
    reasons = [f"consistent of order {le.order} at uniform steps (LTE O(h^{le.order + 1}))" if le.order >= 1
               else "not consistent (order 0)"]
    reasons.append("zero-stable: root condition holds" if zs else
                   "not zero-stable: " + "; ".join(zs.sampling.reasons))
    if zs and le.order >= 1:
        reasons.append(f"hence convergent with global error O(h^{le.order})")
    return Convergence(rel.label, le.order, zs, reasons)


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
