"""Ground-truth problems: closed forms checked against independent computations."""

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from linmultistep import Grid
from linmultistep.analysis.problems import (
    GaussianMixture,
    default_gaussian,
    default_mixture,
    eps_fn_for,
    gaussian,
    make_problem,
)


def _scipy_log_density(mix: GaussianMixture, x: np.ndarray, s: float) -> np.ndarray:
    """log sum_k w_k N(x; m_k, C_k + s^2 I) by scipy.stats, independently of the module."""
    comps = [np.log(w) + multivariate_normal(m, c + s * s * np.eye(mix.dim)).logpdf(x)
             for w, m, c in zip(mix.weights, mix.means, mix.covs)]
    return logsumexp(np.stack(comps, -1), axis=-1)


@pytest.mark.parametrize("s", [0.05, 0.4, 2.0, 14.0])
@pytest.mark.parametrize("dim", [1, 2, 3])
def test_mixture_eps_is_minus_s_times_finite_difference_score(s, dim):
    mix = default_mixture(dim, seed=dim)
    rng = np.random.default_rng(7)
    x = mix.sample(rng, 6, s)
    step = 1e-5 * max(1.0, s)
    fd = np.stack([(_scipy_log_density(mix, x + step * e, s) - _scipy_log_density(mix, x - step * e, s)) / (2 * step)
                   for e in np.eye(dim)], -1)
    np.testing.assert_allclose(mix.epsbar(x, s), -s * fd, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(mix.log_density(x, s), _scipy_log_density(mix, x, s), rtol=1e-12, atol=1e-10)


def test_single_gaussian_closed_form_agrees_with_scipy_reference():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 3))
    g = gaussian([0.3, -1.0, 2.0], a @ a.T * 0.2 + 0.01 * np.eye(3))  # full covariance
    x = g.sample(rng, 16, 14.6)
    closed = g.flow_closed_form(x, 14.6, 0.0)
    ref = g.flow_reference(x, 14.6, 0.0)
    np.testing.assert_allclose(ref, closed, rtol=0, atol=1e-9)
    # and back up: the flow is a bijection
    np.testing.assert_allclose(g.flow_reference(closed, 0.0, 14.6), x, rtol=0, atol=1e-8)


def test_closed_form_flow_solves_the_ode():
    g = default_gaussian(4, seed=1)
    x = g.sample(np.random.default_rng(0), 5, 3.0)
    for s in (0.05, 0.7, 2.5):
        d = 1e-6
        deriv = (g.flow_closed_form(x, 3.0, s + d) - g.flow_closed_form(x, 3.0, s - d)) / (2 * d)
        np.testing.assert_allclose(deriv, g.epsbar(g.flow_closed_form(x, 3.0, s), s), rtol=1e-6, atol=1e-8)


def test_diagonal_and_scalar_covariances_and_moments():
    g = gaussian([1.0, 2.0], [0.5, 0.1])
    np.testing.assert_allclose(g.covs[0], np.diag([0.5, 0.1]))
    iso = GaussianMixture.create([1, 3], [[0, 0], [1, 1]], 0.2)
    np.testing.assert_allclose(iso.weights, [0.25, 0.75])
    # exact draws of the marginal at s have the closed-form mean and covariance
    x = iso.sample(np.random.default_rng(0), 200_000, 0.5)
    np.testing.assert_allclose(x.mean(0), iso.mean(), atol=0.01)
    np.testing.assert_allclose(np.cov(x.T), iso.cov(0.5), atol=0.01)


def test_bad_input_is_refused_and_inputs_are_not_aliased():
    means = np.zeros((2, 2))
    mix = GaussianMixture.create([1, 1], means, [np.eye(2), np.eye(2)])
    means[0, 0] = 5.0
    assert mix.means[0, 0] == 0.0
    with pytest.raises(ValueError, match="positive"):
        GaussianMixture.create([1, -1], means, 1.0)
    with pytest.raises(ValueError, match="semi-definite"):
        gaussian([0, 0], [[1, 2], [2, 1]])
    with pytest.raises(ValueError, match="single Gaussian"):
        default_mixture().flow_closed_form(np.zeros((1, 2)), 1.0, 0.0)
    with pytest.raises(ValueError, match="unknown problem"):
        make_problem("nope")


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_eps_fn_uses_model_coordinates_and_keeps_dtype(dtype):
    mix = default_mixture(2)
    grid = Grid.from_sigmabar([0.0, 0.5, 1.5])
    xbar = mix.sample(np.random.default_rng(1), 4, 1.5)
    x = (grid.alpha[2] * xbar).astype(dtype)
    out = eps_fn_for(mix, grid)(x, 2)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, mix.epsbar(x.astype(np.float64) / grid.alpha[2], 1.5),
                               rtol=np.finfo(dtype).eps * 8, atol=np.finfo(dtype).eps * 8)
