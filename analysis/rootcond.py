"""Exact root condition: are all zeros of a polynomial in |z| <= 1, those on |z| = 1 simple?

Decided in exact rational arithmetic (no float tolerance), in three parts:

1. g = gcd(P, P*) with P*(z) = z^n P(1/z) the reciprocal polynomial. It collects every zero on
   the unit circle (with its full multiplicity) and every pair z0, 1/z0 of reciprocal zeros.
2. P / g must have all zeros strictly inside the disk: the Schur-Cohn test (Jury's form for
   real coefficients): |a_0| < |a_n| and the reduced polynomial (a_n P - a_0 P*)/z passes too.
3. g must be squarefree with every zero on the circle. After removing the factors z - 1 and
   z + 1, g is palindromic of degree 2m, g(z) = z^m G(z + 1/z), and its zeros lie on the circle
   exactly when G has m distinct real zeros in (-2, 2) (counted exactly by Sturm sequences).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

__all__ = ["RootCondition", "root_condition", "schur_cohn_inside", "Z"]

Z = sp.Symbol("z")


def _reciprocal(p: sp.Poly) -> sp.Poly:
    return sp.Poly(list(reversed(p.all_coeffs())), p.gen, domain=p.domain)


def schur_cohn_inside(p: sp.Poly, trace: list[str] | None = None) -> bool:
    """True exactly when every zero of the real polynomial p lies in the open unit disk."""
    p = sp.Poly(p, Z)
    while p.degree() > 0:
        c = p.all_coeffs()
        an, a0 = c[0], c[-1]
        if trace is not None:
            trace.append(f"degree {p.degree()}: |a_0| = {abs(a0)} vs |a_n| = {abs(an)}")
        if abs(a0) >= abs(an):
            return False
        p = sp.Poly(sp.cancel((an * p.as_expr() - a0 * _reciprocal(p).as_expr()) / Z), Z)
    return True


def _palindromic_reduced(g: sp.Poly) -> sp.Poly:
    """G with g(z) = z^m G(z + 1/z) for a palindromic g of degree 2m (Dickson polynomials)."""
    x = sp.Symbol("x")
    c = g.all_coeffs()
    m = (len(c) - 1) // 2
    D = [sp.Integer(2), x]  # D_k(x) = z^k + z^-k expressed in x = z + 1/z
    for kk in range(2, m + 1):
        D.append(sp.expand(x * D[-1] - D[-2]))
    G = c[m] + sum(c[m - kk] * D[kk] for kk in range(1, m + 1))
    return sp.Poly(sp.expand(G), x)


@dataclass
class RootCondition:
    """Outcome of :func:`root_condition`; truthy when the root condition holds."""

    holds: bool
    polynomial: sp.Expr
    reasons: list[str] = field(default_factory=list)
    unit_circle_factor: sp.Expr = sp.Integer(1)

    def __bool__(self) -> bool:
        return self.holds

    def roots(self) -> list[complex]:
        """Numerical roots, for display only (the verdict never uses them)."""
        return [complex(r) for r in sp.Poly(self.polynomial, Z).nroots(n=15)]


def root_condition(poly: sp.Expr | sp.Poly) -> RootCondition:
    """Exact root condition for a polynomial in :data:`Z` with rational coefficients."""
    P = sp.Poly(poly, Z)
    if P.degree() < 1:
        return RootCondition(True, P.as_expr(), ["constant polynomial: no zeros"])
    if not P.domain.is_QQ and not P.domain.is_ZZ:
        P = sp.Poly(P.as_expr(), Z, domain=sp.QQ)  # raises if coefficients are not rational
    reasons: list[str] = []
    expr = P.as_expr()
    # zeros at z = 0 are inside; strip them so the reciprocal keeps the degree
    while P.all_coeffs()[-1] == 0:
        P = sp.Poly(sp.cancel(P.as_expr() / Z), Z)
    g = sp.gcd(P, _reciprocal(P)).monic()
    inner = sp.Poly(sp.quo(P, g), Z)
    trace: list[str] = []
    inside = schur_cohn_inside(inner, trace)
    if not inside:
        reasons.append(f"Schur-Cohn: {inner.as_expr()} has a zero with |z| >= 1 ({trace[-1]})")
    ok_circle = True
    if g.degree() > 0:
        if sp.gcd(g, g.diff(Z)).degree() > 0:
            ok_circle = False
            reasons.append(f"repeated zero on or mirrored across the unit circle: {sp.factor(g.as_expr())}")
        else:
            rest = g
            for s in (1, -1):
                if rest.eval(s) == 0:
                    rest = sp.Poly(sp.quo(rest, sp.Poly(Z - s, Z)), Z)
            if rest.degree() > 0:
                if rest.degree() % 2 or _reciprocal(rest).monic() != rest.monic():
                    ok_circle = False  # pragma: no cover - gcd(P, P*) is self-reciprocal
                    reasons.append(f"{rest.as_expr()} is not palindromic")
                else:
                    G = _palindromic_reduced(rest)
                    n_in = G.count_roots(-2, 2) - (G.eval(-2) == 0) - (G.eval(2) == 0)
                    if n_in != G.degree():
                        ok_circle = False
                        reasons.append(f"{sp.factor(rest.as_expr())} has a pair of zeros z0, 1/z0 off the unit circle "
                                       f"(G(x) = {G.as_expr()} has {n_in} of {G.degree()} zeros in (-2, 2))")
            if ok_circle:
                reasons.append(f"simple zeros on the unit circle: {sp.factor(g.as_expr())}")
    holds = inside and ok_circle
    if holds:
        reasons.append(f"all other zeros strictly inside (Schur-Cohn on {inner.as_expr()})")
    return RootCondition(holds, expr, reasons, g.as_expr())
