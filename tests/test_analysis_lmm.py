"""The LM method object against classical truth (HNW III.2-3, Lambert ch. 3) and the core's own rules."""

import doctest

import numpy as np
import pytest
import sympy as sp

import linmultistep as lm
from linmultistep.analysis import lmm
from linmultistep.analysis.lmm import LinearMultistepMethod, adams_bashforth, adams_moulton, bdf, leapfrog
from linmultistep.analysis.relation import local_error, relation_from_method
from linmultistep.analysis.stability import is_zero_stable

R = sp.Rational


def test_doctests():
    res = doctest.testmod(lmm)
    assert res.attempted >= 10 and res.failed == 0


@pytest.mark.parametrize("k, beta", [(1, [1]), (2, [R(-1, 2), R(3, 2)]), (3, [R(5, 12), R(-16, 12), R(23, 12)]),
                                     (4, [R(-9, 24), R(37, 24), R(-59, 24), R(55, 24)])])
def test_adams_bashforth_coefficients(k, beta):
    m = adams_bashforth(k)
    assert list(m.beta) == beta + [0] and m.alpha[-2:] == (-1, 1)


@pytest.mark.parametrize("k, const", [(1, R(1, 2)), (2, R(5, 12)), (3, R(3, 8)), (4, R(251, 720))])
def test_adams_bashforth_order_and_error_constant(k, const):
    m = adams_bashforth(k)
    assert m.order() == k and m.error_constant() == const and bool(m.is_zero_stable())


@pytest.mark.parametrize("k, const", [(1, R(-1, 12)), (2, R(-1, 24)), (3, R(-19, 720))])
def test_adams_moulton_order_and_error_constant(k, const):
    m = adams_moulton(k)
    assert m.order() == k + 1 and m.error_constant() == const


def test_bdf_coefficients():
    assert bdf(2).alpha == (R(1, 3), R(-4, 3), 1) and bdf(2).beta == (0, 0, R(2, 3))
    assert bdf(3).alpha == (R(-2, 11), R(9, 11), R(-18, 11), 1) and bdf(3).beta[-1] == R(6, 11)


@pytest.mark.parametrize("k", range(1, 8))
def test_bdf_order_error_constant_zero_stability(k):
    m = bdf(k)
    assert m.order() == k
    assert m.error_constant() == R(-1, k + 1)          # HNW III.2: -1/(k+1)
    assert m.lte_constant() == R(-1, k + 1) * m.beta[-1]  # Lambert's normalisation: BDF2 -2/9
    assert bool(m.is_zero_stable()) == (k <= 6)          # BDF7 is not zero-stable


def test_lte_constant_bdf2_lambert():
    assert bdf(2).lte_constant() == R(-2, 9)


def test_a_stability():
    assert bdf(1).is_A_stable() and bdf(2).is_A_stable() and adams_moulton(1).is_A_stable()
    for m in (bdf(3), bdf(4), adams_moulton(2), adams_bashforth(1), adams_bashforth(2), leapfrog()):
        assert not m.is_A_stable(), m.name


def test_a_stability_needs_the_exterior_too():
    """Trapezoid run backwards: Re(rho/sigma) = 0 on the whole circle, but the exterior maps to Re z < 0."""
    m = LinearMultistepMethod([-1, 1], [R(-1, 2), R(-1, 2)])
    assert not m.is_A_stable()
    assert not m.is_absolutely_stable([-1.0, -0.1 + 2j]).any() and m.is_absolutely_stable([1.0]).all()


def test_a_stability_agrees_with_a_grid_of_the_left_half_plane():
    rng = np.random.default_rng(0)
    z = -rng.exponential(3.0, 2000) + 1j * rng.normal(0, 5.0, 2000)
    assert bdf(2).is_absolutely_stable(z).all()
    assert not bdf(3).is_absolutely_stable(z).all()


@pytest.mark.parametrize("m, lo", [(adams_bashforth(1), -2.0), (adams_bashforth(2), -1.0), (adams_bashforth(3), -6 / 11),
                                   (adams_bashforth(4), -0.3), (adams_moulton(2), -6.0), (adams_moulton(3), -3.0)])
def test_real_stability_intervals_of_adams_methods(m, lo):
    (iv,) = m.real_stability_intervals()
    assert iv[0] == pytest.approx(lo, abs=1e-9) and iv[1] == pytest.approx(0.0, abs=1e-9)


def test_bdf2_real_axis_is_all_but_0_to_4():
    ivs = bdf(2).real_stability_intervals()
    assert len(ivs) == 2 and ivs[0][0] == -np.inf and ivs[0][1] == pytest.approx(0, abs=1e-9)
    assert ivs[1][0] == pytest.approx(4.0) and ivs[1][1] == np.inf


def test_forward_euler_region_is_the_disk():
    X, Y, S = adams_bashforth(1).stability_grid((-2.5, 0.5, -1.5, 1.5), 121)
    d = np.abs(X + 1j * Y + 1)
    clear = np.abs(d - 1) > 0.03
    assert np.array_equal(S[clear], (d <= 1)[clear]) and S.sum() > 1000


def test_ab2_region_matches_root_moduli_independently():
    """Independent check: np.roots per point, max modulus <= 1."""
    m = adams_bashforth(2)
    X, Y, S = m.stability_grid((-1.2, 0.2, -0.8, 0.8), 41)
    for x, y, s in zip(X.ravel(), Y.ravel(), S.ravel()):
        z = x + 1j * y
        rmax = np.abs(np.roots([1, -1 - 1.5 * z, 0.5 * z])).max()
        if abs(rmax - 1) > 1e-6:
            assert s == (rmax < 1)


def test_leapfrog_region_is_the_open_imaginary_segment():
    m = leapfrog()
    assert m.is_absolutely_stable([0, 0.5j, -0.99j, 0.999j]).all()
    assert not m.is_absolutely_stable([1j, -1j, 1.01j, -0.01, 0.01, 0.01 + 0.5j, -0.01 - 0.5j]).any()
    _, _, S = m.stability_grid((-2, 2, -2, 2), 80)  # even n: no grid point on the imaginary axis
    assert not S.any()  # no interior
    z = m.boundary_locus(101)
    assert np.allclose(z.real, 0, atol=1e-12) and np.abs(z.imag).max() == pytest.approx(1.0, abs=1e-3)


def test_boundary_locus_lies_on_the_region_edge():
    m = adams_bashforth(2)
    z = m.boundary_locus(50)
    z = z[np.isfinite(z)]
    roots = m.stability_polynomial_roots(z)
    assert np.all(np.min(np.abs(np.abs(roots) - 1), axis=-1) < 1e-9)


# --- catalogue methods of the core ------------------------------------------------------------------
def test_from_method_equal_steps_matches_classical():
    ab = {k: LinearMultistepMethod.from_method("adams_bashforth", k=k) for k in (1, 2, 3)}
    for k, m in ab.items():
        ref = adams_bashforth(k)
        assert m.alpha == ref.alpha and m.beta == ref.beta and m.uniform
    assert LinearMultistepMethod.from_method("ddim").alpha == adams_bashforth(1).alpha
    for name, kw in (("obelm", {}), ("bdia", {"gamma": 1.0})):  # both are leapfrog at equal steps
        m = LinearMultistepMethod.from_method(name, **kw)
        assert (m.alpha, m.beta) == (leapfrog().alpha, leapfrog().beta) and m.order() == 2


@pytest.mark.parametrize("name, kw", [("obelm", {}), ("bdia", {"gamma": 0.5}), ("adams_bashforth", {"k": 2}),
                                      ("adams_bashforth", {"k": 3}), ("belm", {"k": 3})])
@pytest.mark.parametrize("ratio", [R(1, 2), R(3, 2), 2])
def test_order_at_a_ratio_matches_the_symbolic_variable_step_order(name, kw, ratio):
    """Independent implementation: relation.local_error works with symbolic step sizes."""
    method = lm.get_method(name, **kw)
    m = LinearMultistepMethod.from_method(method, ratio=ratio)
    assert m.order() == local_error(relation_from_method(method)).order
    # exact and float64 coefficients agree
    a, b = method.coefficients([float(sp.Rational(ratio) ** (-j)) for j in range(method.k)])
    assert np.allclose([-float(x) for x in m.alpha[-2::-1]], a, rtol=1e-12)


@pytest.mark.parametrize("name, kw", [("ddim", {}), ("obelm", {}), ("bdia", {"gamma": 0.5}), ("belm", {"k": 3}),
                                      ("adams_bashforth", {"k": 3})])
def test_zero_stability_agrees_with_the_stability_module(name, kw):
    method = lm.get_method(name, **kw)
    assert bool(LinearMultistepMethod.from_method(method).is_zero_stable()) == bool(is_zero_stable(method))


def test_obelm_zero_stability_at_constant_ratio():
    """At r = h_i/h_{i+1}, rho = (zeta - 1)(zeta + r^2): zero-stable exactly when r <= 1 (r = 1: simple roots +-1)."""
    for r, ok in ((R(1, 2), True), (R(9, 10), True), (1, True), (R(11, 10), False), (2, False)):
        m = LinearMultistepMethod.from_method("obelm", ratio=r)
        assert sp.factor(m.rho - (lmm.ZETA - 1) * (lmm.ZETA + sp.Rational(r) ** 2)) == 0
        assert bool(m.is_zero_stable()) == ok


def test_float_ratio_is_read_exactly():
    assert LinearMultistepMethod.from_method("obelm", ratio=0.5).step_ratio == R(1, 2)


def test_edict_is_rejected_with_a_reason():
    with pytest.raises(TypeError, match="not a linear multistep"):
        LinearMultistepMethod.from_method("edict")


def test_bad_coefficients_rejected():
    with pytest.raises(ValueError, match="alpha_k"):
        LinearMultistepMethod([1, 0], [1, 0])
    with pytest.raises(ValueError, match="same length"):
        LinearMultistepMethod([1, -1, 1], [1, 0])


def test_plot_structure():
    pytest.importorskip("matplotlib")
    fig = adams_bashforth(2).plot_stability_region(n=60)
    (ax,) = fig.axes
    assert "Re" in ax.get_xlabel() and "Im" in ax.get_ylabel() and "AB2" in ax.get_title()
    assert len(ax.lines) >= 1 and ax.collections  # locus line and the shaded region
    fig2 = LinearMultistepMethod.from_method("obelm", ratio=R(1, 2)).plot_stability_region(n=40)
    assert "step ratio 1/2" in fig2.axes[0].get_title()


def test_exported_lazily_from_the_analysis_package():
    import linmultistep.analysis as a

    assert a.LinearMultistepMethod is LinearMultistepMethod and "LinearMultistepMethod" in a.__all__
