"""Derivation of BELM coefficients against the paper's closed forms and an independent order check."""

from fractions import Fraction
import random

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, strategies as st

from linmultistep import generated_belm, get_method, rules
from linmultistep.analysis import derive_belm, is_zero_stable
from linmultistep.analysis.relation import step_symbols


def _same(x, y):
    return sp.simplify(sp.sympify(x) - sp.sympify(y)) == 0


def test_k2_is_obelm_prop4():
    d = derive_belm(2)
    a, b = rules.obelm(list(d.h))
    assert all(_same(x, y) for x, y in zip(d.a, a))
    assert _same(d.b[0], b[1])
    assert d.lte_order == 3


def test_k3_reproduces_paper_eq29():
    d = derive_belm(3)
    h, h1, h2 = d.h
    # REFERENCE.md, paper eq. 29, typed from the paper
    ref_a3 = h**2 * (h + h1) ** 2 / (h2**2 * (h1 + h2) ** 2)
    ref_b1 = -(h + h1) ** 2 * (h + h1 + h2) / (h1**2 * (h1 + h2))
    ref_b2 = -h**2 * (h + h1) * (h + h1 + h2) / (h1**3 * h2)
    ref_a1 = -(h + h1) ** 2 * (h + h1 + h2) * (3 * h * h1 + 2 * h * h2 - h1**2 - h1 * h2) / (h1**3 * (h1 + h2) ** 2)
    ref_a2 = -h**2 * (h + h1 + h2) * (h * h1 - 2 * h * h2 + h1**2 - 3 * h1 * h2) / (h1**3 * h2**2)
    for got, ref in zip([*d.a, *d.b], [ref_a1, ref_a2, ref_a3, ref_b1, ref_b2]):
        assert _same(got, ref)
    u = d.uniform()
    assert [*u.a, *u.b[1:-1]] == [-9, 9, 1, -6, -6]


def test_k3_optimal_not_zero_stable_with_reference_roots():
    v = is_zero_stable(derive_belm(3))
    assert not v
    roots = sorted(r.real for r in v.sampling.roots())
    assert roots == pytest.approx([-5 - 24**0.5, -5 + 24**0.5, 1.0], abs=1e-12)  # {-9.90, -0.10, 1}
    assert "NOT zero-stable" in str(v)
    m = get_method("belm", k=3)  # still constructs: exactly invertible
    assert m.backward_explicit and not is_zero_stable(m)


def _conditions_fraction(a, b, h, qmax):
    """Independent order check in exact Fractions: C_q for q = 0..qmax of a BELM (b = b_0..b_k)."""
    k = len(a)
    tau = [Fraction(0)]
    for x in h:
        tau.append(tau[-1] + x)
    out = []
    fact = 1
    for q in range(qmax + 1):
        fact = fact * q if q else 1
        c = Fraction(1 if q == 0 else 0)
        for j in range(1, k + 1):
            c -= a[j - 1] * tau[j] ** q / fact
            if q >= 1:
                c -= b[j] * h[j - 1] * tau[j] ** (q - 1) / (fact // q)
        out.append(c)
    return out


@pytest.mark.parametrize("k", generated_belm.available_k())
def test_generated_rules_satisfy_taylor_conditions_exactly(k):
    rng = random.Random(k)
    for _ in range(3):
        h = [Fraction(rng.randint(1, 40), rng.randint(1, 9)) for _ in range(k)]
        a, b = generated_belm.optimal_rule(k)(h)
        assert b[0] == 0 and b[-1] == 0
        c = _conditions_fraction([Fraction(x) for x in a], [Fraction(x) for x in b], h, 2 * k - 1)
        assert all(x == 0 for x in c[: 2 * k - 1]), c
        assert c[2 * k - 1] != 0  # exactly order 2k-2, not more
    assert generated_belm.consistency_order(k) == 2 * k - 2
    assert generated_belm.global_order(k) == (2 if k == 2 else None)


def test_generated_rule_rejects_unknown_k():
    with pytest.raises(ValueError, match="available k"):
        generated_belm.optimal_rule(9)
    with pytest.raises(ValueError):
        get_method("belm", k=9)


@given(st.lists(st.floats(1e-3, 1e3), min_size=2, max_size=2))
def test_core_obelm_equals_derived_k2(h):
    a0, b0 = get_method("obelm").coefficients(h)
    a1, b1 = get_method("belm", k=2).coefficients(h)
    np.testing.assert_allclose(a1, a0, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(a0).max()))
    np.testing.assert_allclose(b1, b0, rtol=1e-12)


def test_derived_rule_on_symbols_matches_derivation():
    for k in (2, 3):
        d = derive_belm(k)
        a, b = generated_belm.optimal_rule(k)(list(d.h))
        assert all(_same(x, y) for x, y in zip(a, d.a))
        assert all(_same(x, y) for x, y in zip(b[1:-1], d.b))


def test_lower_order_keeps_free_parameters_and_gives_bdia():
    d = derive_belm(2, order=1)
    (g,) = d.params
    a, b = rules.bdia(g)(list(d.h))
    assert all(_same(x, y) for x, y in zip(d.a, a)) and _same(d.b[0], b[1])
    assert d.lte_order == 2
    with pytest.raises(ValueError, match="order must be in"):
        derive_belm(2, order=3)


def test_generated_module_is_up_to_date():
    from linmultistep.analysis import codegen

    assert codegen.TARGET.read_text() == codegen.generate(), "run: python -m linmultistep.analysis.codegen"


def test_core_and_generated_rules_never_import_sympy():
    import subprocess
    import sys

    code = ("import sys, linmultistep, linmultistep.analysis; m = linmultistep.get_method('belm', k=3); "
            "m.coefficients([1.0, 2.0, 3.0]); assert 'sympy' not in sys.modules, 'sympy imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
