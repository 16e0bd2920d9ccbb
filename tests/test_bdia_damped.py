"""analysis/bdia_damped.py: the symbolic verdicts checked against independent numeric steps on toy networks.

Truth here is computed inline, from the BDIA paper's formulas (eqs. 6, 23-24, 29) and the authors'
re-estimate of the stored state, on a toy network -- never from the module's own numeric helpers -- and,
for the library's BDIA, from :func:`linmultistep.sample` itself.
"""

import numpy as np
import pytest
import sympy as sp

import linmultistep as lm
from linmultistep.analysis import bdia_damped as bd

# a variance-preserving grid whose alpha changes a lot per step, as at a diffusion model's noise end
SIGMABAR = np.array([0.0, 0.05, 0.3, 0.9, 2.0, 4.5, 9.0, 16.0])
ALPHA = 1.0 / np.sqrt(1.0 + SIGMABAR**2)
SIGMA = SIGMABAR * ALPHA
W = np.random.default_rng(7).standard_normal((6, 6)) / 3


def toy_eps(x, i):
    """A nonlinear, index-dependent noise predictor."""
    return np.tanh(x @ W) * (1.0 + 0.1 * i) + 0.2 * x


def ddim(z, e, i, j):  # paper eq. 6 (forward) / 23 (backward): from grid point i to grid point j
    return ALPHA[j] * (z - SIGMA[i] * e) / ALPHA[i] + SIGMA[j] * e


def paper_step(s, z, i, gamma):  # paper eq. 29: z_{i-1} = z_i + gamma (z_{i+1} - z_i) - gamma Delta_back + Delta_fwd
    e = toy_eps(z, i)
    return z + gamma * (s - z) - gamma * (ddim(z, e, i, i + 1) - z) + (ddim(z, e, i, i - 1) - z)


def authors_damped_step(x_last, x, i, gamma):  # the authors' public sampler, verbatim in structure
    e = toy_eps(x, i)
    back = ddim(x, e, i, i + 1)
    x_prev = x_last - (1 - gamma) * (x_last - x) - gamma * (back - x) + (ddim(x, e, i, i - 1) - x)
    x_last = x_last - 0.5 * (x_last - x) - 0.5 * (back - x)
    return x_last, x_prev


def _state(seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((3, 6)), rng.standard_normal((3, 6))


def _num(expr, i, gamma, **values):
    """A sympy expression of the module at grid point i, gamma and the given symbol values."""
    subs = {bd.AM: ALPHA[i - 1], bd.A0: ALPHA[i], bd.AP: ALPHA[i + 1], bd.SM: SIGMA[i - 1], bd.S0: SIGMA[i],
            bd.SP: SIGMA[i + 1], bd.GAMMA: gamma}
    syms = sorted(expr.free_symbols - set(subs), key=str)
    f = sp.lambdify(syms, expr.subs(subs), "numpy")
    return f(*[values[str(s)] for s in syms])


# --- coordinates -------------------------------------------------------------------------------
@pytest.mark.parametrize("gamma", [0.5, 1.0])
def test_paper_bdia_is_the_belm_with_gamma_times_alpha_ratio(gamma):
    c = bd.derive_coordinates()
    assert not c.same_as_library
    s, z = _state(1)
    for i in range(1, len(SIGMABAR) - 1):
        e = toy_eps(z, i)
        h_i, h_p = SIGMABAR[i] - SIGMABAR[i - 1], SIGMABAR[i + 1] - SIGMABAR[i]
        a1, a2, b1h = (float(_num(x, i, gamma)) if x.free_symbols else float(x) for x in (c.a1, c.a2, c.b1h))
        np.testing.assert_allclose(a2, gamma * ALPHA[i + 1] / ALPHA[i - 1], rtol=1e-14)
        np.testing.assert_allclose(b1h, -(h_i + a2 * h_p), rtol=1e-12)
        belm = ALPHA[i - 1] * (a1 * z / ALPHA[i] + a2 * s / ALPHA[i + 1] + b1h * e)
        np.testing.assert_allclose(belm, paper_step(s, z, i, gamma), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(bd.bdia_step(toy_eps, ALPHA, SIGMA, i, s, z, gamma, "model"),
                                   paper_step(s, z, i, gamma), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("gamma", [0.5, 1.0])
def test_library_bdia_is_the_scaled_form_not_the_papers(gamma):
    grid = lm.Grid.from_sigmabar(SIGMABAR)
    x_n = np.random.default_rng(3).standard_normal((3, 6))
    traj = {len(SIGMABAR) - 1: x_n}
    lm.sample(toy_eps, x_n, grid, lm.bdia(gamma), mode="recurrence", callback=lambda info: traj.__setitem__(info.index, info.entry.x))
    # an independent loop of the library's form in z: D + gamma alpha_{i-1}/alpha_{i+1} (z_{i+1} - B)
    N = grid.N
    prev, z = x_n, ddim(x_n, toy_eps(x_n, N), N, N - 1)
    paper_prev, paper_z = prev, z
    for i in range(N - 1, 0, -1):
        e = toy_eps(z, i)
        prev, z = z, ddim(z, e, i, i - 1) + gamma * ALPHA[i - 1] / ALPHA[i + 1] * (prev - ddim(z, e, i, i + 1))
        np.testing.assert_allclose(traj[i - 1], z, rtol=1e-11, atol=1e-11)
        np.testing.assert_allclose(bd.bdia_step(toy_eps, ALPHA, SIGMA, i, traj[i + 1], traj[i], gamma, "scaled"),
                                   traj[i - 1], rtol=1e-11, atol=1e-11)
        paper_prev, paper_z = paper_z, paper_step(paper_prev, paper_z, i, gamma)
    assert np.abs(paper_z - z).max() > 1e-3  # a different method where alpha_{i+1} != alpha_{i-1}


# --- plain BDIA: explicit inverse --------------------------------------------------------------
@pytest.mark.parametrize("gamma", [0.5, 0.9, 1.0])
def test_plain_bdia_inverse_is_explicit_and_round_trips(gamma):
    v = bd.derive_plain()
    assert v.explicit_inverse and v.implicit_equation is None
    assert v.small_step_roots == sorted([sp.Integer(1), -bd.GAMMA], key=sp.default_sort_key)
    inv_s = v.inverse["s (= z_{i+1})"]
    eps_sym = bd.EPS(sp.Symbol("z"))
    s, z = _state(2)
    for i in range(1, len(SIGMABAR) - 1):
        z_new = paper_step(s, z, i, gamma)
        e = toy_eps(z, i)  # the network at z, which the output (z, z_new) holds
        s_back = _num(inv_s.subs(eps_sym, sp.Symbol("E")), i, gamma, E=e, z=z, z_new=z_new)
        np.testing.assert_allclose(s_back, s, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(bd.bdia_inverse_step(toy_eps, ALPHA, SIGMA, i, z, z_new, gamma), s, rtol=1e-10, atol=1e-10)


# --- damped BDIA: no explicit inverse ----------------------------------------------------------
def test_damped_step_is_the_authors_update():
    x_last, x = _state(4)
    for i in range(1, len(SIGMABAR) - 1):
        want = authors_damped_step(x_last, x, i, 0.8)
        got = bd.damped_step(toy_eps, ALPHA, SIGMA, i, x_last, x, 0.8)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("gamma", [0.5, 1.0])
def test_damped_inverse_needs_the_network_at_the_unknown_point(gamma):
    v = bd.derive_damped()
    assert not v.explicit_inverse
    assert v.implicit_equation.has(bd.EPS(sp.Symbol("z")))
    eq = v.implicit_equation.subs(bd.EPS(sp.Symbol("z")), sp.Symbol("E"))
    s, z = _state(5)
    i = 3
    s_new, z_new = authors_damped_step(s, z, i, gamma)
    # at the true z the implicit equation holds and the explicit s-formula gives s back
    res = _num(eq, i, gamma, E=toy_eps(z, i), z=z, s_new=s_new, z_new=z_new)
    assert np.abs(res).max() < 1e-10
    s_back = _num(v.inverse["s"].subs(bd.EPS(sp.Symbol("z")), sp.Symbol("E")), i, gamma, E=toy_eps(z, i), z=z, s_new=s_new)
    np.testing.assert_allclose(s_back, s, rtol=1e-10, atol=1e-10)
    # at the point the output holds (s_new, as "x" in a naive (x_last, x) -> (x, x_prev) reading), it does not
    wrong = _num(eq, i, gamma, E=toy_eps(s_new, i), z=s_new, s_new=s_new, z_new=z_new)
    assert np.abs(wrong).max() > 1e-3


@pytest.mark.parametrize("gamma", [0.5, 0.8, 1.0])
def test_damped_step_is_not_injective_where_the_derived_determinant_vanishes(gamma):
    """A linear network eps(z) = lam z with a_i + b_i lam = 2 gamma: two different inputs, one output."""
    v = bd.derive_damped()
    i = 2
    a = ALPHA[i - 1] / ALPHA[i]
    b = SIGMA[i - 1] - SIGMA[i] * a
    lam = (2 * gamma - a) / b
    det = _num(v.jacobian_det, i, gamma, J=lam)
    assert abs(det) < 1e-12
    c = ALPHA[i + 1] / ALPHA[i]
    d = SIGMA[i + 1] - SIGMA[i] * c

    def linear_eps(x, _i):
        return lam * x

    s, z = _state(6)
    dz = np.random.default_rng(8).standard_normal(z.shape)
    ds = -(2 - (c + d * lam)) * dz  # the null direction of the step's (exact, linear) Jacobian
    out1 = authors_damped_step_with(linear_eps, s, z, i, gamma)
    out2 = authors_damped_step_with(linear_eps, s + ds, z + dz, i, gamma)
    assert np.abs(dz).max() > 0.1
    for p, q in zip(out1, out2):
        np.testing.assert_allclose(p, q, rtol=1e-10, atol=1e-10)


def authors_damped_step_with(eps, x_last, x, i, gamma):
    e = eps(x, i)
    back = ddim(x, e, i, i + 1)
    return (x_last - 0.5 * (x_last - x) - 0.5 * (back - x),
            x_last - (1 - gamma) * (x_last - x) - gamma * (back - x) + (ddim(x, e, i, i - 1) - x))


@pytest.mark.parametrize("gamma", [0.3, 0.5, 1.0])
def test_jacobian_determinant_matches_finite_differences(gamma):
    """Scalar state, nonlinear network: det d(s', z')/d(s, z) = (a_i + b_i eps'(z)) / 2 - gamma."""
    v = bd.derive_damped()
    i, s0, z0, h = 3, 0.4, -0.7, 1e-6

    def f(x, _i):
        return np.tanh(1.3 * x) + 0.3 * x

    def step(s, z):
        return np.array(authors_damped_step_with(f, s, z, i, gamma))

    jac = np.column_stack([(step(s0 + h, z0) - step(s0 - h, z0)) / (2 * h), (step(s0, z0 + h) - step(s0, z0 - h)) / (2 * h)])
    fprime = 1.3 / np.cosh(1.3 * z0) ** 2 + 0.3
    np.testing.assert_allclose(np.linalg.det(jac), float(_num(v.jacobian_det, i, gamma, J=fprime)), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("gamma", [0.5, 0.8, 1.0])
def test_small_step_roots_match_the_step_matrix(gamma):
    """As the steps shrink (alphas equal, sigmas equal) the linear part's eigenvalues tend to the derived roots."""
    g = sp.Rational(gamma).limit_denominator(10)
    plain = sorted(float(r) for r in bd.small_step_roots(False, g))
    damped = sorted(float(r) for r in bd.small_step_roots(True, g))
    assert plain == pytest.approx(sorted([1.0, -gamma])) and damped == pytest.approx(sorted([1.0, 0.5 - gamma]))
    # numerically: a flat grid (alpha, sigma constant) makes D = B = identity for any network
    alpha = np.full(3, 0.6)
    sigma = np.sqrt(1 - alpha**2)

    def eig(step):
        cols = [step(1.0, 0.0), step(0.0, 1.0)]
        return sorted(np.linalg.eigvals(np.column_stack(cols)).real)

    zero = lambda x, i: 0.0 * x  # noqa: E731
    np.testing.assert_allclose(eig(lambda s, z: np.array([z, bd.bdia_step(zero, alpha, sigma, 1, s, z, gamma)])), plain, atol=1e-12)
    np.testing.assert_allclose(eig(lambda s, z: np.array(bd.damped_step(zero, alpha, sigma, 1, s, z, gamma))), damped, atol=1e-12)
