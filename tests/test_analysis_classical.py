"""Classical methods through the same analysis: AB, AM, BDF, leapfrog; the exact root condition."""

from fractions import Fraction

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, strategies as st

from linmultistep import get_method, rules
from linmultistep.analysis import LMRelation, is_zero_stable, local_error, root_condition
from linmultistep.analysis.relation import H, step_symbols
from linmultistep.analysis.rootcond import Z


def _lagrange_deriv_at_0(nodes):
    """l_j'(0) for the Lagrange basis on ``nodes`` (Fractions), by the product rule."""
    out = []
    for j, tj in enumerate(nodes):
        d = Fraction(0)
        for m, tm in enumerate(nodes):
            if m == j:
                continue
            term = Fraction(1, 1) / (tj - tm)
            for n, tn in enumerate(nodes):
                if n not in (j, m):
                    term *= (0 - tn) / (tj - tn)
            d += term
        out.append(d)
    return out


def bdf(k):
    """BDF k at unit steps: interpolate x at tau = 0..k; p'(0) = f(new). x_new = sum a_j x_j + b_0 h f_new."""
    l = _lagrange_deriv_at_0([Fraction(j) for j in range(k + 1)])
    a = [-l[j] / l[0] for j in range(1, k + 1)]
    return LMRelation(tuple(sp.Rational(x.numerator, x.denominator) for x in a),
                      (sp.Rational(1) / sp.Rational(l[0].numerator, l[0].denominator),) + (sp.Integer(0),) * k,
                      tuple([H] * k), H, f"BDF{k}")


def adams_moulton(k):
    """AM k at unit steps: x_new = x(tau_1) - integral_0^1 of the interpolant of f at tau = 0..k."""
    nodes = [Fraction(j) for j in range(k + 1)]
    w = rules.lagrange_integral_weights(nodes, Fraction(1))
    a = (sp.Integer(1),) + (sp.Integer(0),) * (k - 1)
    b = tuple(-sp.Rational(x.numerator, x.denominator) for x in w)
    return LMRelation(a, b, tuple([H] * k), H, f"AM{k}")


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_adams_bashforth_variable_step_order_k(k):
    le = local_error(get_method("adams_bashforth", k=k))
    assert le.order == k and le.uniform_order == k


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_adams_moulton_order_k_plus_1(k):
    rel = adams_moulton(k)
    assert not rel.explicit
    assert local_error(rel).order == k + 1
    assert is_zero_stable(rel)


@pytest.mark.parametrize("k", range(1, 8))
def test_bdf_zero_stable_up_to_6(k):
    rel = bdf(k)
    assert local_error(rel).order == k
    v = is_zero_stable(rel)
    assert bool(v) == (k <= 6), str(v)
    # independent numerical check of the verdict (BDF roots are far from |z| = 1 except z = 1)
    roots = np.roots([1.0] + [-float(x) for x in rel.a])
    others = np.sort(np.abs(roots))[:-1]  # drop the principal root z = 1
    assert bool(np.all(others < 1)) == (k <= 6)


def test_leapfrog_order_2_roots_on_circle():
    rel = LMRelation((sp.Integer(0), sp.Integer(1)), (sp.Integer(0), sp.Integer(-2), sp.Integer(0)), (H, H), H, "leapfrog")
    assert local_error(rel).order == 2
    v = is_zero_stable(rel)
    assert v and v.both_directions
    assert sorted(r.real for r in v.sampling.roots()) == pytest.approx([-1, 1])
    assert "unit circle" in str(v)


def test_table1_lm_orders_from_core_rules():
    assert local_error(get_method("ddim")).order == 1
    g = sp.Symbol("gamma", positive=True)
    bd = local_error(rules.bdia(g), k=2)
    assert bd.order == 1 and bd.uniform_order == 1
    assert local_error(rules.bdia(1), k=2).uniform_order == 2  # gamma = 1: leapfrog at equal steps
    assert local_error(get_method("obelm")).order == 2


@pytest.mark.parametrize("poly,expected", [
    ((Z - 1) ** 2, False), (Z**2 + 1, True), ((Z**2 + 1) ** 2, False), (Z - sp.Rational(1, 2), True),
    (Z**2 - sp.Rational(5, 2) * Z + 1, False), (Z**3, True), (Z**4 + Z**3 + Z**2 + Z + 1, True),
    ((Z + 1) * (Z - sp.Rational(1, 3)) * (Z**2 + Z + 1), True), (Z**2 + 2 * Z + 2, False),
])
def test_root_condition_known_cases(poly, expected):
    assert bool(root_condition(sp.expand(poly))) == expected


@given(st.lists(st.integers(-9, 9), min_size=2, max_size=6), st.integers(1, 9))
def test_root_condition_matches_numerics_away_from_circle(coeffs, den):
    c = [sp.Integer(1)] + [sp.Rational(x, den) for x in coeffs]
    roots = np.roots([float(x) for x in c])
    mods = np.abs(roots)
    if np.min(np.abs(mods - 1)) < 1e-6:
        return  # on/near the circle: the numerical reference is unreliable there
    poly = sum(ci * Z ** (len(c) - 1 - i) for i, ci in enumerate(c))
    assert bool(root_condition(poly)) == bool(np.all(mods < 1))
