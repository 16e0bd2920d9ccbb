"""Local error in model coordinates x = alpha xbar, by Taylor expansion of a smooth exact solution.

The exact solution of d xbar / d sigmabar = F(xbar, sigmabar) and the schedule alpha(sigmabar) are
left general: their Taylor coefficients at the new point (X, S) are symbols
F_{a,b} = d^a/dxbar^a d^b/dsigmabar^b F(X, S) and A_m = alpha^{(m)}(S), and the derivatives of the
solution follow from the chain rule (X' = F, X'' = F_x F + F_s, ...). Step sizes are h_j = eps * hat h_j
and every quantity is a truncated power series in eps. A method's step is computed on these series
with the model evaluated exactly as the library does (eps(x, m) = F(x / alpha_m, sigmabar_m)), and the
error e = x_exact(new) - x_method is expanded: its first nonzero eps power is the LTE order in h, its
coefficient the leading term, including how it scales with alpha.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import sympy as sp

__all__ = ["Jets", "XError", "lm_x_error", "x_error_of"]

EPS = sp.Symbol("epsilon")


class Jets:
    """Truncated series arithmetic in EPS (degree <= order) over symbolic Taylor coefficients."""

    def __init__(self, order: int) -> None:
        self.order = order
        self.X = sp.Symbol("X")  # xbar(new point)
        self._F: dict[tuple[int, int], sp.Symbol] = {}
        self._A: dict[int, sp.Symbol] = {}

    def F(self, a: int, b: int) -> sp.Symbol:
        return self._F.setdefault((a, b), sp.Symbol(f"F_{a}{b}"))

    def A(self, m: int) -> sp.Symbol:
        return self._A.setdefault(m, sp.Symbol(f"alpha_{m}") if m else sp.Symbol("alpha"))

    def trunc(self, e: sp.Expr) -> sp.Expr:
        p = sp.Poly(sp.expand(e), EPS)
        return sum((c * EPS ** m[0] for m, c in zip(p.monoms(), p.coeffs()) if m[0] <= self.order), sp.Integer(0))

    def total_derivative(self, e: sp.Expr) -> sp.Expr:
        """d/dsigmabar along the exact solution."""
        out = sp.Integer(0)
        for s in e.free_symbols:
            de = sp.diff(e, s)
            if s == self.X:
                out += de * self.F(0, 0)
            elif s in self._F.values():
                (a, b), = [key for key, v in self._F.items() if v == s]
                out += de * (self.F(a + 1, b) * self.F(0, 0) + self.F(a, b + 1))
            elif s in self._A.values():
                (m,), = [(key,) for key, v in self._A.items() if v == s]
                out += de * self.A(m + 1)
        return sp.expand(out)

    def solution_derivatives(self) -> list[sp.Expr]:
        out = [self.X]
        for _ in range(self.order + 1):
            out.append(self.total_derivative(out[-1]))
        return out

    def xbar_at(self, tau: sp.Expr) -> sp.Expr:
        """Exact xbar at sigmabar = S + eps*tau."""
        d = self.solution_derivatives()
        return self.trunc(sum(d[m] * (EPS * tau) ** m / sp.factorial(m) for m in range(self.order + 1)))

    def alpha_at(self, tau: sp.Expr) -> sp.Expr:
        return self.trunc(sum(self.A(m) * (EPS * tau) ** m / sp.factorial(m) for m in range(self.order + 1)))

    def inverse(self, s: sp.Expr) -> sp.Expr:
        """1/s for a series with a nonzero constant term."""
        c0 = sp.Poly(sp.expand(s), EPS).coeff_monomial(1)
        d = sp.expand(s / c0 - 1)
        out, term = sp.Integer(1), sp.Integer(1)
        for _ in range(self.order):
            term = self.trunc(-term * d)
            out += term
        return self.trunc(out / c0)

    def field(self, xbar: sp.Expr, tau: sp.Expr) -> sp.Expr:
        """F(xbar, S + eps*tau) for a series xbar (constant term X)."""
        dx = sp.expand(xbar - self.X)
        ds = EPS * tau
        out = sp.Integer(0)
        for a in range(self.order + 1):
            for b in range(self.order + 1 - a):
                out += self.F(a, b) * dx ** a * ds ** b / (sp.factorial(a) * sp.factorial(b))
        return self.trunc(out)


@dataclass(frozen=True)
class XError:
    """e = x_exact(new) - x_method = leading * eps^order + O(eps^(order+1)), h_j = eps * hat h_j."""

    label: str
    order: int
    leading: sp.Expr
    alpha_power: sp.Expr | None

    def __str__(self) -> str:
        return f"{self.label}: e = ({sp.factor(self.leading)}) h^{self.order} + O(h^{self.order + 1})"


def _leading(jets: Jets, label: str, e: sp.Expr, alpha_dependence: Callable[[sp.Expr], sp.Expr | None]) -> XError:
    p = sp.Poly(sp.expand(e), EPS)
    for m in range(jets.order + 1):
        c = sp.factor(p.coeff_monomial(EPS ** m))
        if c != 0:
            return XError(label, m, c, alpha_dependence(c))
    raise ValueError(f"{label}: no error term up to h^{jets.order}; raise the expansion order")


def alpha_power(jets: Jets) -> Callable[[sp.Expr], sp.Expr | None]:
    """The power of alpha (at the new point) that the leading term is proportional to, if it is one."""

    def f(c: sp.Expr) -> sp.Expr | None:
        A0 = jets.A(0)
        others = [jets.A(m) for m in range(1, jets.order + 2)]
        if any(c.has(o) for o in others):
            return None  # depends on alpha's derivatives too: not a pure power of alpha
        t = sp.Symbol("t", positive=True)
        ratio = sp.simplify(c.subs(A0, t * A0) / c)
        pw = sp.simplify(sp.log(ratio) / sp.log(t))
        return pw if not pw.has(t) else None

    return f


def lm_x_error(a: Sequence[sp.Expr], b: Sequence[sp.Expr], hats: Sequence[sp.Expr], label: str,
               order: int) -> XError:
    """x-error of one step of a k-step relation, computed the way the library runs it:
    x_{i-1} = alpha_{i-1} [sum_j a_j x_{i-1+j}/alpha_{i-1+j} + sum_j b_j h_{i-1+j} eps(x_{i-1+j}, i-1+j)].
    ``a`` (a_1..a_k), ``b`` (b_0..b_k) are numbers or expressions of the hat steps ``hats``; explicit only."""
    if b[0] != 0:
        raise ValueError(f"{label} is implicit (b_0 != 0): the x-error expansion runs explicit steps only")
    jets = Jets(order)
    k = len(hats)
    taus = [sp.Integer(0)]
    for hh in hats:
        taus.append(taus[-1] + hh)
    total = sp.Integer(0)
    for j in range(1, k + 1):
        xbar_j = jets.xbar_at(taus[j])
        x_j = jets.trunc(jets.alpha_at(taus[j]) * xbar_j)  # stored coordinates
        inv_alpha = jets.inverse(jets.alpha_at(taus[j]))
        total += a[j - 1] * jets.trunc(x_j * inv_alpha)
        if b[j] != 0:
            eps_j = jets.field(jets.trunc(x_j * inv_alpha), taus[j])  # network sees x_j at its own time
            total += b[j] * EPS * hats[j - 1] * eps_j
    x_method = jets.trunc(jets.A(0) * total)
    e = jets.trunc(jets.A(0) * jets.X - x_method)
    return _leading(jets, label, e, alpha_power(jets))


def x_error_of(step: Callable[[Jets], sp.Expr], label: str, order: int) -> XError:
    """x-error of a custom one-step map: ``step(jets)`` returns the stored new x as a series."""
    jets = Jets(order)
    e = jets.trunc(jets.A(0) * jets.X - step(jets))
    return _leading(jets, label, e, alpha_power(jets))
