"""Rectified-flow grids (linmultistep.paths): the coordinates' derivation checked symbolically and
numerically, every method sampling and inverting on them in every mode, the path in the grid's
identity, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp

import linmultistep as lm
from linmultistep.analysis.flow_problems import flow_problem, v_fn_for
from linmultistep.context import StepContext
from linmultistep.entries import Point
from linmultistep.paths import (FLOW_BLEND, check_latent_path, dynamic_shift_mu, flow_blend_of, flow_grid, flow_sigmas,
                                flow_to_epsilon, shift_sigmas, time_shift, velocity_from)
from linmultistep.stepping import start_on


def test_ddim_in_gaussian_coordinates_of_the_flow_is_euler_in_x_t_symbolically():
    """x = (1-t) x0 + t eps; the core's gaussian coordinates Y = x/(1-t), T = t/(1-t) with field
    eps = x + (1-t) v: one DDIM step Y' = Y + (T' - T) eps, mapped back, is x + (t' - t) v."""
    x, v, t, tp = sp.symbols("x v t t_prev")
    eps = x + (1 - t) * v
    Y, T, Tp = x / (1 - t), t / (1 - t), tp / (1 - tp)
    x_prev = sp.simplify((Y + (Tp - T) * eps) * (1 - tp))
    assert sp.simplify(x_prev - (x + (tp - t) * v)) == 0
    # and eps = x + (1-t) v is the noise of the path: x0 = x - t v, eps - x0 = v, (1-t) x0 + t eps = x
    x0 = x - t * v
    assert sp.simplify(eps - x0 - v) == 0 and sp.simplify((1 - t) * x0 + t * eps - x) == 0


def test_ddim_in_the_projective_coordinates_is_euler_for_every_blend_symbolically():
    """Y = x / (1 - b t), T = t / (1 - b t), F = b x + (1 - b t) v (linmultistep.paths): F is dY/dT along
    any trajectory with dx/dt = v, and one DDIM step Y' = Y + (T' - T) F, mapped back, is x + (t' - t) v."""
    x, v, t, tp, b = sp.symbols("x v t t_prev b")
    xt = sp.Function("x")(t)
    c = 1 - b * t
    dY_dT = sp.diff(xt / c, t) / sp.diff(t / c, t)
    F = (b * xt + c * sp.diff(xt, t))
    assert sp.simplify(dY_dT - F) == 0
    Fp = b * x + c * v
    x_prev = sp.simplify((x / c + (tp / (1 - b * tp) - t / c) * Fp) * (1 - b * tp))
    assert sp.simplify(x_prev - (x + (tp - t) * v)) == 0


def test_ddim_on_a_flow_grid_equals_the_gaussian_grid_of_the_same_path_numerically():
    """Every coordinates give Euler's result (t_N < 1 so the gaussian one is finite)."""
    prob = flow_problem("mixture")
    t = shift_sigmas(np.linspace(0.0, 0.9, 13), 2.0)
    fg = flow_grid(t)
    f0 = flow_grid(t, blend=0.0)
    vp = lm.gaussian_grid(1.0 - t, t)
    v = v_fn_for(prob, fg)

    def eps(x, i):
        return flow_to_epsilon(v(x, i), x, float(t[i]))

    noise = np.random.default_rng(0).standard_normal((8, 2)) * 0.9
    a = lm.sample(v, noise, fg, "ddim")
    a0 = lm.sample(v, noise, f0, "ddim")
    b = lm.sample(eps, noise * (1.0 - t[-1]) / (1.0 - t[-1]), vp, "ddim")
    x = noise.copy()
    for i in range(fg.N, 0, -1):  # Euler in (x, t), written out
        x = x + (t[i - 1] - t[i]) * prob.velocity(x, t[i])
    assert np.abs(a0 - x).max() <= 1e-13 * np.abs(x).max()
    assert np.abs(a - x).max() <= 1e-12 * np.abs(x).max()
    assert np.abs(b - x).max() <= 1e-12 * np.abs(x).max()


def test_gaussian_coordinates_are_infinite_at_the_flow_noise_end():
    with pytest.raises(lm.GridError, match=r"alpha\[4\] = 0.0 must be positive"):
        lm.gaussian_grid(1.0 - np.linspace(0, 1, 5), np.linspace(0, 1, 5))
    g = flow_grid(np.linspace(0, 1, 5), blend=0.0)  # the flow's own coordinates: finite step sizes
    assert np.allclose(g.h[1:], 0.25) and np.all(g.alpha == 1.0) and g.field_mix is None
    b = FLOW_BLEND  # the default: T = t / (1 - b t) ends at 1 / (1 - b), every step finite and positive
    g = flow_grid(np.linspace(0, 1, 5))
    assert g.sigmabar[-1] == pytest.approx(1 / (1 - b), rel=1e-12) and np.all(g.h[1:] > 0)
    assert np.allclose(g.alpha, 1 - b * np.linspace(0, 1, 5)) and np.allclose(g.field_mix[0], b)
    assert flow_blend_of(g) == b and flow_blend_of(flow_grid([0.0, 1.0], blend=0)) == 0.0


@pytest.mark.bad_input("9 unclear errors")
@pytest.mark.parametrize("blend", [1.0, -0.1, float("nan"), "0.5"])
def test_a_blend_outside_0_1_is_refused(blend):
    with pytest.raises(lm.GridError, match="blend must be"):
        flow_grid([0.0, 0.5, 1.0], blend=blend)


def _exact_obelm_run(v, grid, x_top, x_below):
    """Sample with O-BELM from two given top points (no starter): only O-BELM steps."""
    method = lm.get_method("obelm")
    state = lm.State({grid.N: Point(x_top), grid.N - 1: Point(x_below)}, method.spec, grid.fingerprint, "recurrence")
    return lm.sample(v, state, grid, method, mode="recurrence")


@pytest.mark.parametrize("blend", [0.0, FLOW_BLEND])
def test_obelm_in_flow_coordinates_is_exact_for_quadratics_and_not_for_cubics(blend):
    """Order 2 in the grid's coordinates T = t / (1 - b t), Y = x / (1 - b t): exact when Y is a
    quadratic in T (b = 0: x quadratic in t), an O(h^3) local error on a cubic."""
    t = shift_sigmas(np.linspace(0.0, 1.0, 11) ** 1.3, 3.0)
    g = flow_grid(t, blend=blend)
    c = lambda s: 1 - blend * s  # noqa: E731
    T = lambda s: s / c(s)  # noqa: E731
    dT = lambda s: 1 / c(s) ** 2  # noqa: E731
    # x(t) = c(t) q(T(t)), so v = dx/dt = -b q(T) + c q'(T) dT/dt
    quad = (lambda s: 1 + s - 2 * s**2, lambda s: 1 - 4 * s)
    cubic = (lambda s: s**3, lambda s: 3 * s**2)
    errs = []
    for q, dq in (quad, cubic):
        x_of = lambda s: c(s) * q(T(s))  # noqa: E731
        v_of = lambda s: -blend * q(T(s)) + c(s) * dq(T(s)) * dT(s)  # noqa: E731
        v = lambda x, i: np.full_like(x, v_of(t[i]))  # noqa: E731
        out = _exact_obelm_run(v, g, np.array([x_of(t[-1])]), np.array([x_of(t[-2])]))
        errs.append(abs(out[0] - x_of(t[0])))
    assert errs[0] <= 1e-14 * (1 + abs(q(T(t[-1]))))
    assert errs[1] > 1e-6


@pytest.mark.parametrize("blend", [0.0, FLOW_BLEND])
def test_obelm_step_coefficients_on_a_flow_grid_are_the_derived_ones(blend):
    """The core's O-BELM relation on a flow grid equals derive_belm(2) at h = differences of
    T = t / (1 - b t), on Y = x / (1 - b t) with the field F = b x + (1 - b t) v (linmultistep.paths)."""
    from linmultistep.analysis.derive import derive_belm

    d = derive_belm(2)
    t = np.array([0.0, 0.1, 0.35, 0.7, 1.0])
    g = flow_grid(t, blend=blend)
    T = t / (1 - blend * t)
    i = 2  # x_{i-1} from x_i, x_{i+1}: steps h_i, h_{i+1}
    h = np.diff(T)
    subs = {d.h[0]: h[i - 1], d.h[1]: h[i]}
    a = [float(e.subs(subs)) for e in d.a]
    b = [float(e.subs(subs)) for e in d.b]
    # one O-BELM step from given points on a constant velocity v = u (any x)
    xi, xi1, u = 0.3, -0.2, 1.7
    c = 1 - blend * t
    state = lm.State({i + 1: Point(np.array([xi1])), i: Point(np.array([xi]))}, lm.obelm().spec, g.fingerprint)
    got = lm.sample(lambda x, m: np.full_like(x, u), state, g, "obelm", stop=i - 1, mode="recurrence")
    F = blend * xi + c[i] * u
    want = c[i - 1] * (a[0] * xi / c[i] + a[1] * xi1 / c[i + 1] + b[0] * h[i - 1] * F)
    assert got[0] == pytest.approx(want, rel=1e-13)


def _bits_image(x0, grid, method):
    """What mode 'bits' holds of x0 (its fixed-point image), as the inverse scheduler computes it."""
    ctx = StepContext(grid.h, grid.alpha, None, lm.get_backend(x0), check_finite=False)
    return start_on(ctx, method, {0: x0}, "backward", grid.N).window[0].x


EXACT = [("obelm", "recurrence"), ("obelm", "stable"), ("obelm", "bits"), ("bdia", "recurrence"),
         ("bdia", "bits"), (lm.bdia(0.8), "recurrence"), ("edict", "recurrence")]


@pytest.mark.parametrize("method,mode", EXACT, ids=[f"{m}-{d}" for m, d in EXACT])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_exact_method_round_trips_on_a_shifted_flow_grid(method, mode, dtype):
    prob = flow_problem("mixture")
    g = flow_grid(flow_sigmas(20, shift=3.0))
    v = v_fn_for(prob, g)
    x0 = prob.sample(np.random.default_rng(1), 16).astype(dtype)
    keep = x0.copy()
    m = lm.resolve_mode(lm.get_method(method), mode)
    latent = lm.invert(v, x0, g, m)
    assert latent.fingerprint.startswith("flow-") and np.array_equal(x0, keep)
    back = lm.sample(v, latent, g)
    if mode == "bits":
        assert np.array_equal(back, _bits_image(x0, g, m))  # to the last bit
        if dtype == np.float32:
            assert np.array_equal(back, x0)
    else:
        # rounding only: a few ulps per step, times the method's growth (BDIA(0.8): 0.8^-N; EDICT: p^-2N)
        growth = 0.8 ** -g.N if m.spec.name == "bdia" and dict(m.spec.params).get("gamma") == 0.8 else 1.0
        if m.spec.name == "edict":
            growth = 2.0 ** lm.get_method(method).inversion_growth_bits(g.h)
        tol = 64 * g.N * np.finfo(dtype).eps * growth
        assert np.abs(back - x0).max() <= tol * np.abs(x0).max()


def test_three_step_belm_round_trips_on_a_short_flow_grid():
    prob = flow_problem("gaussian")
    g = flow_grid(flow_sigmas(6, shift=3.0))
    v = v_fn_for(prob, g)
    x0 = prob.sample(np.random.default_rng(2), 8)
    back = lm.sample(v, lm.invert(v, x0, g, lm.belm(k=3)), g)
    assert np.abs(back - x0).max() <= 1e-10 * np.abs(x0).max()


def test_euler_inversion_of_a_flow_is_clearly_inexact():
    prob = flow_problem("mixture")
    g = flow_grid(flow_sigmas(20, shift=3.0))
    v = v_fn_for(prob, g)
    x0 = prob.sample(np.random.default_rng(1), 16)
    back = lm.sample(v, lm.invert(v, x0, g, "ddim"), g, "ddim")
    assert np.abs(back - x0).max() > 1e-3 * np.abs(x0).max()


def test_flow_sigmas_follow_the_shift_formulas():
    t = flow_sigmas(4, shift=3.0, num_train_timesteps=1000)
    lo = 3.0 * 0.001 / (1 + 2.0 * 0.001)
    base = np.linspace(1.0, lo, 4)
    assert t[0] == 0.0 and np.allclose(t[1:][::-1], 3 * base / (1 + 2 * base), rtol=1e-15)
    mu = dynamic_shift_mu(1024)  # exponential shift with sigma 1 is a shift by e^mu
    assert np.allclose(time_shift(base, mu), shift_sigmas(base, np.exp(mu)), rtol=1e-14)
    assert dynamic_shift_mu(256) == pytest.approx(0.5) and dynamic_shift_mu(4096) == pytest.approx(1.15)


def test_velocity_conversions_agree_on_the_path():
    rng = np.random.default_rng(0)
    x0, eps, t = rng.standard_normal(5), rng.standard_normal(5), 0.3
    x = (1 - t) * x0 + t * eps
    v = eps - x0
    assert np.allclose(velocity_from(eps, x, t, "epsilon"), v) and np.allclose(velocity_from(x0, x, t, "sample"), v)
    assert np.allclose(flow_to_epsilon(v, x, t), eps)


@pytest.mark.bad_input("4 companions")
def test_a_gaussian_latent_on_a_flow_grid_is_refused():
    t = np.linspace(0.0, 0.8, 9)
    vp = lm.Grid.from_sigmabar(t)
    fg = flow_grid(t)
    ve = lm.Grid(np.ones_like(t), t)  # the same numbers as the flow grid, another path
    assert fg.fingerprint != ve.fingerprint and ve.fingerprint == lm.Grid(np.ones_like(t), t).fingerprint
    f = lambda x, i: -0.5 * x  # noqa: E731
    latent = lm.invert(f, np.ones(3), vp, "obelm")
    with pytest.raises(lm.LatentMismatchError, match="not to grid flow-"):
        lm.sample(f, latent, fg)
    with pytest.raises(lm.LatentMismatchError, match="'gaussian' grid .* cannot be continued on a 'flow' grid"):
        check_latent_path(latent, fg)
    with pytest.raises(lm.LatentMismatchError, match="not to grid"):
        lm.sample(f, lm.invert(f, np.ones(3), ve, "obelm"), fg)


@pytest.mark.bad_input("9 unclear errors")
def test_a_flow_schedule_that_is_not_monotone_is_refused():
    with pytest.raises(lm.GridError, match=r"increase strictly .* t\[2\] = 0.2 <= t\[1\] = 0.5"):
        flow_grid([0.0, 0.5, 0.2, 1.0])
    with pytest.raises(lm.GridError, match="descending, noise first: pass it reversed"):
        flow_grid([1.0, 0.5, 0.0])
    with pytest.raises(lm.GridError, match=r"t\[1\] = 1.5 is outside \[0, 1\]"):
        flow_grid([0.0, 1.5])
    with pytest.raises(lm.GridError, match="not finite"):
        flow_grid([0.0, np.nan, 1.0])


@pytest.mark.bad_input("9 unclear errors")
@pytest.mark.parametrize("shift", [0.0, -1.0, float("nan"), "3"])
def test_a_shift_that_is_not_positive_is_refused(shift):
    with pytest.raises(lm.GridError, match="shift must be"):
        flow_sigmas(10, shift=shift)
