"""Derivation of variable-step k-step BELM coefficients by LTE minimisation (BELM paper app. A.5).

A k-step BELM (b_0 = b_k = 0) has 2k-1 unknowns a_{i,1..k}, b_{i,1..k-1}. Requiring the order
conditions C_0 = ... = C_p = 0 of the model :mod:`.relation` (built here by Taylor expansion of the
relation with symbolic coefficients, not typed in) gives a linear system; p = 2k-2 (the
default) determines every coefficient and the LTE is O((h_i + ... + h_{i+k-1})^(2k-1)).
For a lower order the 2k-2-p coefficients listed in ``free`` stay symbolic parameters.

The system is solved over the field Q(tau_1..tau_k) (tau_j = h_i + ... + h_{i-2+j}), where its
entries are polynomials, and the factored result is then written in the step sizes.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Sequence

import sympy as sp
from sympy.polys.matrices import DomainMatrix

from .relation import LMRelation, LocalError, H_PREV, step_symbols

__all__ = ["BELMDerivation", "derive_belm", "unknown_symbols"]


def unknown_symbols(k: int) -> tuple[list[sp.Symbol], list[sp.Symbol]]:
    """The unknowns a_{i,1..k} and b_{i,1..k-1} as symbols a_1.., b_1.."""
    return [sp.Symbol(f"a_{j}") for j in range(1, k + 1)], [sp.Symbol(f"b_{j}") for j in range(1, k)]


@dataclass(frozen=True)
class BELMDerivation:
    """Result of :func:`derive_belm`.

    ``a`` = [a_{i,1}..a_{i,k}], ``b`` = [b_{i,1}..b_{i,k-1}] (sympy, in ``h`` = [h_i..h_{i+k-1}] and
    the free ``params``); ``order`` p: C_0..C_p vanish; the LTE is ``leading`` * xbar^{(p+1)} +
    O(h^{p+2}) with ``leading`` = C_{p+1} (the relation's, derivative in sigmabar). Everything
    else is read from :attr:`relation`, the one model (e.g. :attr:`error_constant`).
    """

    k: int
    order: int
    h: tuple[sp.Symbol, ...]
    a: tuple[sp.Expr, ...]
    b: tuple[sp.Expr, ...]
    params: tuple[sp.Symbol, ...]
    leading: sp.Expr

    @property
    def lte_order(self) -> int:
        """The LTE is O(h^lte_order), h = h_i + ... + h_{i+k-1}."""
        return self.order + 1

    @property
    def relation(self) -> LMRelation:
        """As a general LM relation (b including b_0 = b_k = 0)."""
        return LMRelation(self.a, (sp.Integer(0), *self.b, sp.Integer(0)), self.h, H_PREV,
                          f"BELM k={self.k} order {self.order}", self.params)

    @property
    def error_constant(self) -> sp.Expr:
        """The error constant C_{p+1}/sigma(1) at equal steps (the one convention, :mod:`.relation`)."""
        return self.relation.error_constant(order=self.order)

    def local_error(self) -> LocalError:
        return self.relation.local_error()

    def uniform(self) -> LMRelation:
        return self.relation.uniform()

    def rule(self, **values: float):
        """A plain-float coefficient rule (linmultistep.rules convention), via sympy.lambdify.

        Free parameters must be given as keyword values (by symbol name, e.g. ``a_3=0.5``).
        """
        names = {str(p) for p in self.params}
        missing = names - set(values)
        if missing:
            raise ValueError(f"free parameters {sorted(missing)} need values")
        rel = self.relation.subs({sp.Symbol(n): v for n, v in values.items() if n in names})
        fa = sp.lambdify([list(self.h)], list(rel.a), "math")
        fb = sp.lambdify([list(self.h)], list(rel.b), "math")

        def rule(h):
            return list(fa(list(h))), list(fb(list(h)))

        return rule

    def latex(self) -> str:
        lines = [rf"a_{{i,{j + 1}}} = {sp.latex(x)}" for j, x in enumerate(self.a)]
        lines += [rf"b_{{i,{j + 1}}} = {sp.latex(x)}" for j, x in enumerate(self.b)]
        lines.append(rf"\tau_i = {sp.latex(self.leading)}\, \bar x^{{({self.order + 1})}} + O(h^{{{self.order + 2}}})")
        return "\n".join(lines)

    def __str__(self) -> str:
        lines = [f"{self.k}-step BELM of order {self.order} (LTE O(h^{self.lte_order}))"
                 + (f", free parameters {', '.join(map(str, self.params))}" if self.params else "")]
        lines += [f"  a_i,{j + 1} = {x}" for j, x in enumerate(self.a)]
        lines += [f"  b_i,{j + 1} = {x}" for j, x in enumerate(self.b)]
        lines.append(f"  LTE = ({self.leading}) * xbar^({self.order + 1}) + O(h^{self.order + 2})")
        try:
            const = f"{self.error_constant}"
        except ValueError:
            const = "undefined (sigma(1) = 0)"
        lines.append(f"  error constant C_(p+1)/sigma(1) at equal steps: {const}")
        return "\n".join(lines)


def _tau_symbols(k: int) -> list[sp.Symbol]:
    return [sp.Symbol(f"tau_{j}") for j in range(1, k + 1)]


def _system(k: int, order: int) -> tuple[list[sp.Symbol], sp.Matrix, sp.Matrix, list[sp.Symbol]]:
    """Order conditions C_0..C_order of the BELM with symbolic coefficients, as M u = r, in tau."""
    tau = _tau_symbols(k)
    steps = [tau[0]] + [tau[j] - tau[j - 1] for j in range(1, k)]
    a, b = unknown_symbols(k)
    # a relation with unknown coefficients, written on tau: the "steps" are differences of taus
    rel = LMRelation(tuple(a), (sp.Integer(0), *b, sp.Integer(0)), tuple(sp.Dummy(f"s{j}") for j in range(k)))
    sub = dict(zip(rel.h, steps))
    eqs = [sp.expand(rel.order_condition(q, simplify=False).subs(sub)) for q in range(order + 1)]
    unknowns = a + b
    M, r = sp.linear_eq_to_matrix(eqs, unknowns)
    return unknowns, M, r, tau


def _default_free(k: int, n_free: int) -> list[list[int]]:
    """Candidate index sets of free unknowns in [a_1..a_k, b_1..b_{k-1}]: a_k, a_{k-1}, ... first."""
    pref = list(range(k - 1, -1, -1)) + list(range(k, 2 * k - 1))
    first = pref[:n_free]
    rest = [list(c) for c in itertools.combinations(pref, n_free) if list(c) != first]
    return [first] + rest


def derive_belm(k: int, order: int | None = None, free: Sequence[str] | None = None) -> BELMDerivation:
    """Variable-step k-step BELM coefficients of the given order by solving the Taylor conditions.

    order defaults to 2k-2 (LTE-optimal; k = 2 gives O-BELM, paper Prop. 4; k = 3 paper eq. 29).
    With order < 2k-2, ``free`` names the coefficients kept as parameters (default a_k, a_{k-1}, ...).
    """
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    p = 2 * k - 2 if order is None else int(order)
    if not 0 <= p <= 2 * k - 2:
        raise ValueError(f"a {k}-step BELM has 2k-1 = {2 * k - 1} coefficients: order must be in 0..{2 * k - 2}, got {order}")
    unknowns, M, r, tau = _system(k, p + 1)  # row p+1 gives the leading LTE term
    M_lead, r_lead = M[p + 1, :], r[p + 1, 0]
    M, r = M[: p + 1, :], r[: p + 1, :]
    n_free = 2 * k - 2 - p
    names = [str(u) for u in unknowns]
    if free is not None:
        if len(free) != n_free or any(f not in names for f in free):
            raise ValueError(f"order {p} leaves {n_free} free coefficients; choose them among {names}, got {list(free)}")
        candidates = [[names.index(f) for f in free]]
    else:
        candidates = _default_free(k, n_free)
    rng = random.Random(0)
    for free_idx in candidates:
        solve_idx = [j for j in range(2 * k - 1) if j not in free_idx]
        A = M[:, solve_idx]
        # singular for every step size? test at random rational taus (exact)
        pt = {t: sp.Rational(rng.randint(1, 97), rng.randint(1, 13)) for t in tau}
        pt_sorted = dict(zip(tau, sorted(pt.values())))
        if A.subs(pt_sorted).det() == 0:
            if free is not None:
                raise ValueError(f"with free coefficients {list(free)} the order conditions are singular")
            continue
        rhs = r - M[:, free_idx] * sp.Matrix([unknowns[j] for j in free_idx]) if free_idx else r
        dA = DomainMatrix.from_Matrix(A)
        dr = DomainMatrix.from_Matrix(rhs)
        K = sp.QQ.frac_field(*tau, *[unknowns[j] for j in free_idx])
        dsol = dA.convert_to(K).lu_solve(dr.convert_to(K))
        break
    else:  # pragma: no cover - the Hermite-type system always has a solvable choice
        raise ValueError(f"no choice of {n_free} free coefficients makes the order-{p} system solvable")
    params = tuple(unknowns[j] for j in free_idx)
    # the leading LTE term: linear_eq_to_matrix wrote C_q = (M u)_q - r_q; row p+1, in the same field
    full = [None] * (2 * k - 1)
    for n, j in enumerate(solve_idx):
        full[j] = dsol[n, 0].element
    for j in free_idx:
        full[j] = K.from_sympy(unknowns[j])
    lead_K = _combine(K, [K.from_sympy(M_lead[0, j]) for j in range(2 * k - 1)], full) - K.from_sympy(r_lead)
    values = {u: sp.factor(K.to_sympy(full[j])) for j, u in enumerate(unknowns)}
    h = step_symbols(k)
    to_h = {tau[j]: sum(h[: j + 1]) for j in range(k)}
    a = tuple(_in_steps(values[u], to_h) for u in unknowns[:k])
    b = tuple(_in_steps(values[u], to_h) for u in unknowns[k:])
    lead = _in_steps(K.to_sympy(lead_K), to_h)
    return BELMDerivation(k, p, tuple(h), a, b, params, lead)


def _combine(K, coeffs: list, fracs: list):
    """sum_j coeffs[j] * fracs[j] (coeffs polynomial) in the fraction field K over one denominator.

    The denominators are products of differences tau_a - tau_b; their lcm is assembled from
    their factorisations, which avoids a multivariate gcd at every addition (slow for k >= 5).
    """
    powers: dict = {}
    for f in fracs:
        for base, e in f.denom.factor_list()[1]:
            powers[base] = max(powers.get(base, 0), e)
    R = K.field.ring
    D = R.one
    for base, e in powers.items():
        D = D * base**e
    num = R.zero
    for c, f in zip(coeffs, fracs):
        num += (c.numer * f.numer * D.exquo(f.denom)).exquo(c.denom) if c.denom != R.one else c.numer * f.numer * D.exquo(f.denom)
    return K.field.new(num, D)


def _in_steps(expr: sp.Expr, to_h: dict) -> sp.Expr:
    """Substitute tau_j = h_i + .. factor by factor, keeping the product form sympy factored in tau."""
    expr = sp.factor(expr)
    if expr.is_Mul:
        return sp.Mul(*[_in_steps(f, to_h) for f in expr.args])
    if expr.is_Pow:
        base = _in_steps(expr.base, to_h)
        if base.could_extract_minus_sign() and expr.exp.is_integer:
            return (-1) ** expr.exp * sp.Pow(-base, expr.exp)
        return sp.Pow(base, expr.exp)
    return sp.factor(expr.subs(to_h))
