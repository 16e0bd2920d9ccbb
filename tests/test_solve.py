"""General ODEs through the same integrator: orders against exact or high-accuracy solutions."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.linalg import expm

import linmultistep as lm
from linmultistep.errors import GridError, LatentMismatchError

M_VALUES = (40, 80, 160, 320)


def smooth_nonuniform(t0, t1, m):
    """A grid smooth in t with step ratios up to ~2.4 (x = u + 0.3 sin(pi u)/pi)."""
    u = np.linspace(0.0, 1.0, m + 1)
    return t0 + (t1 - t0) * (u + 0.3 * np.sin(np.pi * u) / np.pi) / 1.0


def fitted_order(errors):
    """Least-squares slope over the three finest grids (the coarsest is pre-asymptotic for AB4)."""
    slope, _ = np.polyfit(np.log(M_VALUES[1:]), np.log(errors[1:]), 1)
    return -slope


# dy/dt = -y + sin t, y(0) = 1:  y = 1.5 e^{-t} + (sin t - cos t) / 2
def f_scalar(t, y):
    return -y + np.sin(t)


def exact_scalar(t):
    return 1.5 * np.exp(-t) + (np.sin(t) - np.cos(t)) / 2


A = np.array([[0.0, 1.0], [-4.0, -0.3]])  # damped oscillator


def lotka_volterra(t, y):
    return np.array([1.5 * y[0] - y[0] * y[1], -3.0 * y[1] + y[0] * y[1]])


LV_Y0 = np.array([2.0, 1.0])
LV_REF = solve_ivp(lotka_volterra, (0.0, 2.0), LV_Y0, method="DOP853", rtol=1e-13, atol=1e-13).y[:, -1]


def errors_for(method, problem, warm=False):
    errs = []
    for m in M_VALUES:
        if problem == "scalar":
            ts = smooth_nonuniform(0.0, 3.0, m)
            ws = [np.array([exact_scalar(t)]) for t in ts[1 : method.k]] if warm else ()
            y = lm.solve(f_scalar, np.array([1.0]), ts, method, warm_start=ws).y
            errs.append(abs(y[0] - exact_scalar(ts[-1])))
        elif problem == "linear_backwards_in_t":
            ts = smooth_nonuniform(2.0, 0.0, m)  # integrate from t = 2 down to t = 0
            y0 = np.array([1.0, 0.5])
            y = lm.solve(lambda t, y: A @ y, y0, ts, method).y
            errs.append(np.abs(y - expm(A * (0.0 - 2.0)) @ y0).max())
        else:
            ts = smooth_nonuniform(0.0, 2.0, m)
            errs.append(np.abs(lm.solve(lotka_volterra, LV_Y0, ts, method).y - LV_REF).max())
    return errs


@pytest.mark.parametrize("problem", ["scalar", "linear_backwards_in_t", "lotka_volterra"])
@pytest.mark.parametrize(
    "method,order",
    [(lm.adams_bashforth(1), 1), (lm.adams_bashforth(2), 2), (lm.obelm(), 2), (lm.bdia(1.0), 2), (lm.bdia(0.5), 1)],
    ids=["AB1", "AB2", "OBELM", "BDIA1", "BDIA0.5"],
)
def test_global_order_on_nonuniform_grids(method, order, problem):
    errs = errors_for(method, problem)
    assert abs(fitted_order(errs) - order) < 0.25, errs


@pytest.mark.parametrize("k", [3, 4])
def test_adams_bashforth_k_reaches_order_k_with_accurate_start(k):
    m = lm.adams_bashforth(k)
    assert abs(fitted_order(errors_for(m, "scalar", warm=True)) - k) < 0.25
    # with its own Euler-started chain the first step's O(h^2) error caps the order at 2
    assert abs(fitted_order(errors_for(m, "scalar")) - 2) < 0.25


@pytest.mark.parametrize(
    "method,rtol", [(lm.obelm(), 1e-12), (lm.bdia(1.0), 1e-12), (lm.edict(0.93), 1e-16 * 0.93**-200 * 1e3)], ids=str
)
def test_reverse_recovers_the_initial_state(method, rtol):
    ts = smooth_nonuniform(0.0, 2.0, 100)
    sol = lm.solve(lotka_volterra, LV_Y0, ts, method)
    back = lm.solve(lotka_volterra, sol.state, ts, method, reverse=True)
    np.testing.assert_allclose(back.y, LV_Y0, rtol=rtol)  # EDICT: rounding grows like p^-2N
    assert sol.nfe == method.nfe_per_step * 100 and back.nfe == method.nfe_per_step * 99 + (method.k == 1) * method.nfe_per_step


def test_reverse_from_a_plain_end_value_is_an_inversion():
    ts = smooth_nonuniform(0.0, 2.0, 200)
    y_end = lm.solve(lotka_volterra, LV_Y0, ts, lm.obelm()).y
    approx = lm.solve(lotka_volterra, y_end, ts, lm.obelm(), reverse=True)
    assert np.abs(approx.y - LV_Y0).max() < 1e-2  # only the first step is approximate


def test_solve_validates_its_grid_and_state():
    with pytest.raises(GridError, match=r"strictly monotone: ts\[2\] = 1.0 after ts\[1\] = 2.0"):
        lm.solve(f_scalar, np.ones(1), [0.0, 2.0, 1.0], "obelm")
    with pytest.raises(GridError, match=r"ts\[1\] = nan"):
        lm.solve(f_scalar, np.ones(1), [0.0, np.nan, 1.0], "obelm")
    ts = np.linspace(0, 1, 11)
    state = lm.solve(f_scalar, np.ones(1), ts, "obelm").state
    with pytest.raises(LatentMismatchError, match="grid"):
        lm.solve(f_scalar, state, np.linspace(0, 1, 12), "obelm", reverse=True)
    with pytest.raises(LatentMismatchError, match="produced by obelm"):
        lm.solve(f_scalar, state, ts, "bdia", reverse=True)
