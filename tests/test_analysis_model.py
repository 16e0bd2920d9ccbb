"""The one symbolic LM model (analysis.relation) against independent truth.

- the error-constant convention C = C_{p+1}/sigma(1) is the constant of the global error
  (y(t) - y_n = C h^p t lambda^{p+1} y(t) + O(h^{p+1}) on y' = lambda y), measured by running the
  core's own coefficients (or the classical view's) on the closed-form ODE, with the fitted order;
- for the BELMs that do not converge, the constant of the measured one-step defect (mpmath);
- the Lagrange-weight families equal the core's independent variable-step rule and have the
  textbook orders at variable steps; the classical view and the model are one object.
"""

from fractions import Fraction

import mpmath
import numpy as np
import pytest
import sympy as sp

from linmultistep import get_method, rules
from linmultistep.analysis import relation as model
from linmultistep.analysis.lmm import LinearMultistepMethod, adams_bashforth, adams_moulton, bdf, leapfrog
from linmultistep.analysis.stability import is_zero_stable
from linmultistep.methods import Edict

R = sp.Rational


def _core_equal_step_coefficients(name, **params):
    """The core's rule evaluated on exact unit steps (Fractions): (a_1..a_k, b_0..b_k)."""
    m = get_method(name, **params)
    a, b = m.rule([Fraction(1)] * m.k)
    return m.k, [Fraction(x) for x in a], [Fraction(x) for x in b]


def _global_error_core(name, n_steps, **params):
    """Run x_{i-1} = sum a_j x_{i-1+j} + sum b_j h f_{i-1+j} on dx/dsigma = -x from sigma = 1 to 0
    (travel t = 1 - sigma: y' = y), exact start values; return (h, x(0) - x_0)."""
    k, a, b = _core_equal_step_coefficients(name, **params)
    assert b[0] == 0  # explicit
    h = 1.0 / n_steps
    a = [float(x) for x in a]
    b = [float(x) for x in b]
    x = {n: np.exp(-n * h) for n in range(n_steps - k + 1, n_steps + 1)}
    for i in range(n_steps - k + 1, 0, -1):  # produce point i-1
        x[i - 1] = sum(a[j - 1] * x[i - 1 + j] for j in range(1, k + 1)) + \
            sum(b[j] * h * (-x[i - 1 + j]) for j in range(1, k + 1))
    return h, 1.0 - x[0]


def _global_error_classical(m, n_steps, lam=1.0):
    """sum alpha_j y_{n+j} = h lam sum beta_j y_{n+j} on [0, 1], exact start; (h, y(1) - y_N)."""
    k = m.k
    h = 1.0 / n_steps
    al = [float(x) for x in m.alpha]
    be = [float(x) for x in m.beta]
    y = [np.exp(lam * n * h) for n in range(k)]
    for n in range(n_steps - k + 1):
        rhs = sum((h * lam * be[j] - al[j]) * y[n + j] for j in range(k))
        y.append(rhs / (al[k] - h * lam * be[k]))
    return h, np.exp(lam) - y[n_steps]


def _measured_constant(run, p, n=(200, 400)):
    """Richardson-extrapolated e / h^p, and the fitted order log2(e(h) / e(h/2))."""
    (h1, e1), (h2, e2) = run(n[0]), run(n[1])
    c1, c2 = e1 / h1**p, e2 / h2**p
    return 2 * c2 - c1, np.log2(e1 / e2)


@pytest.mark.parametrize("name, params", [("ddim", {}), ("obelm", {}), ("bdia", {"gamma": 1.0}),
                                          ("bdia", {"gamma": 0.5}), ("adams_bashforth", {"k": 2}),
                                          ("adams_bashforth", {"k": 3})])
def test_error_constant_is_the_global_error_constant_of_the_core_methods(name, params):
    """x(sigma) = exp(-sigma): at t = 1, y = 1 and lambda = 1, so x(0) - x_0 -> C h^p."""
    rel = model.relation_from_method(get_method(name, **params))
    C, p = rel.error_constant(), rel.fixed().order()
    measured, fitted = _measured_constant(lambda n: _global_error_core(name, n, **params), p)
    assert fitted == pytest.approx(p, abs=0.05)
    assert measured == pytest.approx(float(C), rel=5e-3), (name, params, C, measured)


@pytest.mark.parametrize("m", [adams_bashforth(2), adams_moulton(1), adams_moulton(2), bdf(2), bdf(3), leapfrog()],
                         ids=lambda m: m.name)
def test_error_constant_is_the_global_error_constant_of_classical_views(m):
    """y' = y, y(1) - y_N -> C h^p * 1 * e (HNW III.4: e' = f_y e + y^{(p+1)})."""
    p = m.order()
    measured, fitted = _measured_constant(lambda n: _global_error_classical(m, n), p)
    assert fitted == pytest.approx(p, abs=0.05)
    assert measured / np.e == pytest.approx(float(m.error_constant()), rel=5e-3)


@pytest.mark.parametrize("k", [3, 4])
def test_error_constant_of_nonconvergent_belm_from_the_measured_defect(k):
    """The core's generated rule on exact unit steps; defect of x = exp(-sigma) at new point 0
    (t = -sigma: y^{(p+1)} = 1), d(h) = C_{p+1} h^{p+1} + ..., C = d / (h^{p+1} sigma(1))."""
    _, a, b = _core_equal_step_coefficients("belm", k=k)
    sigma1 = -sum(b)
    p = 2 * k - 2
    mpmath.mp.dps = 60

    def d(h):
        h = mpmath.mpf(h)
        return 1 - sum(mpmath.mpf(a[j - 1].numerator) / a[j - 1].denominator * mpmath.e ** (-j * h)
                       for j in range(1, k + 1)) \
            - sum(mpmath.mpf(b[j].numerator) / b[j].denominator * h * (-mpmath.e ** (-j * h)) for j in range(1, k + 1))

    h = mpmath.mpf("1e-4")
    c1, c2 = d(h) / h ** (p + 1), d(h / 2) / (h / 2) ** (p + 1)
    measured = float((2 * c2 - c1) / (mpmath.mpf(sigma1.numerator) / sigma1.denominator))
    model_c = model.relation_from_method(get_method("belm", k=k)).error_constant()
    assert measured == pytest.approx(float(model_c), rel=1e-6)


def test_obelm_and_leapfrog_share_the_textbook_constant():
    """HNW: the explicit midpoint rule has C_3 = 1/3 (alpha_k = 1) and C = 1/6; O-BELM is it at equal steps."""
    assert (leapfrog().lte_constant(), leapfrog().error_constant()) == (R(1, 3), R(1, 6))
    assert model.relation_from_method(get_method("obelm")).error_constant() == R(1, 6)
    from linmultistep.analysis import derive_belm

    assert derive_belm(2).error_constant == R(1, 6)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_adams_from_lagrange_weights_equals_the_core_rule(k):
    """Two implementations: sympy integration of the Lagrange basis vs rules.adams_bashforth's plain arithmetic."""
    rel = model.adams(k)
    a, b = rules.adams_bashforth(k)(list(rel.h))
    assert all(sp.simplify(x - y) == 0 for x, y in zip(rel.a, a))
    assert all(sp.simplify(x - sp.sympify(y)) == 0 for x, y in zip(rel.b, b))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_lagrange_families_have_textbook_orders_at_variable_steps(k):
    assert model.adams(k).order() == k
    assert model.adams(k, implicit=True).order() == k + 1
    assert model.bdf(k).order() == k


def test_bdf2_variable_step_coefficients_closed_form():
    """Variable-step BDF2 (HNW III.5, eq. 5.12 in the direction of travel, omega = h_i / h_{i+1})."""
    rel = model.bdf(2)
    hi, hi1 = rel.h
    w = hi / hi1
    ref_a1 = (1 + w) ** 2 / (1 + 2 * w)
    ref_a2 = -w**2 / (1 + 2 * w)
    ref_b0h = -hi * (1 + w) / (1 + 2 * w)  # b_0 h_{i-1}: the slope term, negative in sigmabar
    assert sp.simplify(rel.a[0] - ref_a1) == 0 and sp.simplify(rel.a[1] - ref_a2) == 0
    assert sp.simplify(rel.b[0] * rel.h_prev - ref_b0h) == 0


def test_classical_view_and_model_round_trip():
    m = LinearMultistepMethod([R(1, 3), R(-4, 3), 1], [0, 0, R(2, 3)], name="BDF2 by hand")
    assert m.relation.classical() == (list(m.alpha), list(m.beta), [-2, -1, 0])
    assert m.order() == 2 and m.error_constant() == bdf(2).error_constant() == R(-1, 3)
    ob = LinearMultistepMethod.from_method("obelm", ratio=R(1, 2))
    assert ob.relation.rho() == sp.expand(ob.rho.subs(sp.Symbol("zeta"), sp.Symbol("z")))


def test_a_subclass_of_edict_is_still_edict():
    """Dispatch is by type, not by class name."""
    class MyEdict(Edict):
        pass

    v = is_zero_stable(MyEdict(p=0.9))
    assert v and not v.inversion  # eigenvalues 1 and p^2 forwards; 1/p^2 > 1 backwards

