"""The flow-matching problem: the exact velocity and flow checked against independent truths, and the
fitted convergence orders on it (Euler ~1, O-BELM ~2 in the default coordinates and the flow's own)."""

from __future__ import annotations

import numpy as np
import pytest

from linmultistep.analysis.flow_problems import flow_orders, flow_problem


def test_the_velocity_is_the_conditional_mean_of_eps_minus_x0():
    """Monte Carlo truth: regress eps - x0 on x_t for Gaussian data (linear posterior), compare with v."""
    prob = flow_problem("gaussian")
    rng = np.random.default_rng(0)
    t = 0.4
    x0 = prob.data.sample(rng, 400_000)
    eps = rng.standard_normal(x0.shape)
    xt = (1 - t) * x0 + t * eps
    design = np.hstack([xt, np.ones((xt.shape[0], 1))])
    coef, *_ = np.linalg.lstsq(design, eps - x0, rcond=None)
    probe = np.array([[0.3, -0.7], [1.1, 0.4]])
    fitted = np.hstack([probe, np.ones((2, 1))]) @ coef
    assert np.abs(fitted - prob.velocity(probe, t)).max() < 0.02


@pytest.mark.parametrize("t", [0.0, 0.37, 1.0])
def test_the_closed_form_flow_has_the_velocity_as_its_derivative(t):
    prob = flow_problem("gaussian")
    x = np.array([[0.3, -0.7], [1.1, 0.4]])
    h = 1e-5 if t < 1 else -1e-5  # second-order differences, one-sided at the ends of [0, 1]
    f = [prob.flow_closed_form(x, t, t + k * h) for k in (0, 1, 2)]
    deriv = (-3 * f[0] + 4 * f[1] - f[2]) / (2 * h)
    assert np.abs(deriv - prob.velocity(x, t)).max() < 1e-6


def test_the_closed_form_flow_agrees_with_the_high_accuracy_solve():
    prob = flow_problem("gaussian")
    x = np.random.default_rng(1).standard_normal((5, 2))
    assert np.abs(prob.flow_closed_form(x, 1.0, 0.0) - prob.flow_reference(x, 1.0, 0.0)).max() < 1e-10


def test_the_flow_transports_noise_to_the_data_distribution():
    """Mean and covariance of the pushed-forward noise equal the data's (exact flow of a Gaussian)."""
    prob = flow_problem("gaussian")
    z = np.random.default_rng(2).standard_normal((200_000, 2))
    x0 = prob.flow_closed_form(z, 1.0, 0.0)
    assert np.abs(x0.mean(0) - prob.data.mean()).max() < 0.01
    assert np.abs(np.cov(x0.T) - prob.data.cov()).max() < 0.01


@pytest.mark.parametrize("blend", [None, 0.0], ids=["default-coordinates", "x-t"])
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_fitted_orders_euler_one_obelm_two(shift, blend):
    """Against the closed-form flow: Euler ~1 and O-BELM ~2, in the default coordinates and in (x, t)."""
    res = flow_orders(flow_problem("gaussian"), ["ddim", "obelm"], [10, 20, 40, 80, 160], shift=shift, samples=64,
                      blend=blend)
    assert 0.85 <= res.orders["ddim"] <= 1.15, res
    assert 1.8 <= res.orders["obelm"] <= 2.3, res
    assert res.errors["obelm"][-1] < res.errors["ddim"][-1] / 10
