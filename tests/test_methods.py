"""Coefficient rules: consistency, order conditions, structure, catalogue."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import linmultistep as lm
from linmultistep import rules
from linmultistep.errors import MethodError
from linmultistep.integrator import StepContext
from linmultistep.backends.numpy import NumpyBackend

steps = st.floats(0.01, 10.0)


def order_defect(method, h, q):
    """sum_j a_j tau_j^q/q! + sum_j b_j h_{i-1+j} tau_j^(q-1)/(q-1)! - [q == 0].

    Zero for q = 0..p exactly when the relation is exact on polynomials of degree p
    (tau_j = h_i + ... + h_{i-2+j} is point i-1+j's distance from the new point).
    """
    a, b = method.coefficients(h)
    tau = np.cumsum(h)
    val = sum(a[j] * tau[j] ** q / math.factorial(q) for j in range(method.k))
    if q >= 1:
        val += sum(b[j + 1] * h[j] * tau[j] ** (q - 1) / math.factorial(q - 1) for j in range(method.k))
    return val - (q == 0)


CONSISTENT = [lm.ddim(), lm.obelm(), lm.bdia(1.0), lm.bdia(0.5), lm.bdia(0.13)] + [
    lm.adams_bashforth(k) for k in (1, 2, 3, 4)
]


@pytest.mark.parametrize("method", CONSISTENT, ids=str)
@given(h=st.lists(steps, min_size=4, max_size=4))
def test_rules_are_consistent(method, h):
    h = np.array(h[: method.k])
    a, b = method.coefficients(h)
    # a_j can be large when step ratios are (O-BELM: h_i^2/h_{i+1}^2): their sum cancels to 1 with
    # rounding relative to the largest term
    assert a.sum() == pytest.approx(1.0, abs=1e-14 * max(1.0, np.abs(a).max()))
    assert order_defect(method, h, 1) == pytest.approx(0.0, abs=1e-9 * np.abs(b).max() * h.max())


@given(h=st.lists(steps, min_size=2, max_size=2))
def test_obelm_is_exact_on_quadratics_not_cubics(h):
    h = np.array(h)
    m = lm.obelm()
    scale = (h.sum() / h.min()) ** 2
    for q in (0, 1, 2):
        assert order_defect(m, h, q) == pytest.approx(0.0, abs=1e-12 * scale * h.sum() ** q)
    # the cubic defect vanishes with either step (it is a multiple of h_i h_{i+1} (h_i + h_{i+1}))
    assert abs(order_defect(m, h, 3)) > 1e-6 * h.prod() * h.sum()


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@given(h=st.lists(st.floats(0.1, 3.0), min_size=4, max_size=4))
def test_adams_bashforth_has_order_k(k, h):
    m, h = lm.adams_bashforth(k), np.array(h[:k])
    for q in range(k + 1):
        assert order_defect(m, h, q) == pytest.approx(0.0, abs=1e-9 * h.sum() ** q * (h.sum() / h.min()) ** k)


def test_uniform_steps_reduce_to_the_reference_forms():
    # O-BELM and BDIA(1) at equal steps: x_{i-1} = x_{i+1} - 2 h eps_i (leapfrog)
    for m in (lm.obelm(), lm.bdia(1.0)):
        a, b = m.coefficients([0.7, 0.7])
        np.testing.assert_allclose(a, [0.0, 1.0], atol=1e-15)
        np.testing.assert_allclose(b, [0.0, -2.0, 0.0], atol=1e-15)
    a, b = lm.bdia(0.4).coefficients([0.7, 0.7])
    np.testing.assert_allclose(a, [0.6, 0.4])
    np.testing.assert_allclose(b, [0.0, -1.4, 0.0])


@given(st.integers(0, 2**31), st.integers(3, 30))
def test_obelm_step_matches_reference_x_form(seed, n):
    """REFERENCE eq. 18: x_{i-1} = (h_i^2/h_{i+1}^2)(a_{i-1}/a_{i+1}) x_{i+1}
    + ((h_{i+1}^2 - h_i^2)/h_{i+1}^2)(a_{i-1}/a_i) x_i - h_i (h_i + h_{i+1})/h_{i+1} a_{i-1} eps(x_i, i)."""
    rng = np.random.default_rng(seed)
    grid = lm.Grid.from_sigmabar(np.concatenate([[0.0], np.cumsum(rng.uniform(0.1, 2.0, n))]))
    x = {j: rng.standard_normal(5) for j in range(n + 1)}
    window = {j: lm.Point(v) for j, v in x.items()}
    eps = {j: rng.standard_normal(5) for j in range(n + 1)}
    ctx = StepContext(grid.h, grid.alpha, lambda y, j: eps[j], NumpyBackend())
    i = int(rng.integers(1, n))
    got = lm.obelm().forward(ctx, i - 1, window).x
    h0, h1, al = grid.h[i], grid.h[i + 1], grid.alpha
    want = (h0**2 / h1**2) * (al[i - 1] / al[i + 1]) * x[i + 1] \
        + ((h1**2 - h0**2) / h1**2) * (al[i - 1] / al[i]) * x[i] \
        - h0 * (h0 + h1) / h1 * al[i - 1] * eps[i]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_structure_is_read_off_the_coefficients():
    assert lm.ddim().explicit and not lm.ddim().backward_explicit
    assert lm.obelm().explicit and lm.obelm().backward_explicit
    assert lm.bdia(0.5).backward_explicit
    assert lm.adams_bashforth(2).explicit and not lm.adams_bashforth(2).backward_explicit
    trapezoid = lm.LinearMultistep("trapezoid", 1, lambda h: ([1], [-0.5, -0.5]))
    assert not trapezoid.explicit
    with pytest.raises(MethodError, match="not explicit"):
        lm.belm(lambda h: ([0, 1], [-1, -1, 0]), k=2, name="implicit2")
    with pytest.raises(MethodError, match="not backward explicit"):
        lm.belm(lambda h: ([1, 0], [0, -1, 0.5]), k=2, name="ab-like")


def test_custom_belm_from_a_rule_runs_exactly():
    # leapfrog written by hand, valid on uniform grids only, is still a BELM
    leap = lm.belm(lambda h: ([0, 1], [0, -2, 0]), k=2, name="leapfrog")
    grid = lm.Grid.from_sigmabar(np.linspace(0, 3, 31))
    f = lambda x, i: np.sin(x) * 0.3
    x0 = np.linspace(-1, 1, 7)
    back = lm.sample(f, lm.invert(f, x0, grid, leap), grid, leap)
    np.testing.assert_allclose(back, x0, rtol=0, atol=1e-13)


def test_catalogue():
    assert set(lm.available_methods()) >= {"ddim", "obelm", "bdia", "edict", "belm", "adams_bashforth"}
    assert lm.get_method("bdia", gamma=0.5).spec == lm.MethodSpec("bdia", (("gamma", 0.5),))
    assert lm.get_method("EDICT").spec.as_dict() == {"name": "edict", "params": {"p": 0.93}}
    m = lm.obelm()
    assert lm.get_method(m) is m
    assert [s.name for s in lm.adams_bashforth(3).chain()] == ["adams_bashforth"] * 3
    assert [s.name for s in m.chain()] == ["obelm", "ddim"]
    with pytest.raises(MethodError, match="unknown method 'dpm'"):
        lm.get_method("dpm")
    with pytest.raises(MethodError, match="gamma must be in"):
        lm.get_method("bdia", gamma=0.0)
    with pytest.raises(MethodError, match="p must be in"):
        lm.get_method("edict", p=1.5)
    with pytest.raises(MethodError, match="bad parameters for method 'obelm'"):
        lm.get_method("obelm", gamma=1)
    with pytest.raises(MethodError, match="parameters"):
        lm.get_method(m, gamma=1)
    with pytest.raises(MethodError, match="needs a starter"):
        lm.LinearMultistep("twostep", 2, rules.obelm)
