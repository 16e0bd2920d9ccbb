"""Mode 'stable': the shear form of 2-step BELMs against the recurrence and against closed forms."""

import numpy as np

from linmultistep.modes import in_mode
import pytest
import sympy as sp
from hypothesis import given
from hypothesis import strategies as st

import linmultistep as L
from linmultistep import rules
from linmultistep.analysis.problems import eps_fn_for, gaussian
from linmultistep.stable import StableBelm, StableEntry

from bounds import ROUNDINGS, unit_roundoff


# --- the derivation, symbolically --------------------------------------------------------
def test_shear_form_is_the_recurrence_for_any_consistent_two_step_rule():
    """xbar_{i-1} = xbar_i - w_i v_i with v_i = -v_{i+1} + c_i eps_i, w_i = a2 w_{i+1},
    c_i = -b1 h_i / w_i, v_{i+1} = (xbar_{i+1} - xbar_i) / w_{i+1} equals paper eq. 12."""
    a2, b1, h, w1, xi, xi1, e = sp.symbols("a2 b1 h w1 xi xi1 e")
    w = a2 * w1
    v_next = (xi1 - xi) / w1
    v = -v_next + (-b1 * h / w) * e
    shear = xi - w * v
    recurrence = (1 - a2) * xi + a2 * xi1 + b1 * h * e
    assert sp.simplify(shear - recurrence) == 0
    # and the inverse shears recover xbar_{i+1} from (xbar_{i-1}, xbar_i)
    xm = sp.Symbol("xm")
    v_i = (xi - xm) / w
    assert sp.simplify(xi + w1 * (-v_i + (-b1 * h / w) * e) - sp.solve(sp.Eq(recurrence, xm), xi1)[0]) == 0


def test_obelm_weights_and_coefficients_are_the_closed_forms():
    h0, h1 = sp.symbols("h0 h1", positive=True)
    a, b = rules.obelm([h0, h1])
    assert sp.simplify(a[0] + a[1] - 1) == 0
    # w_i = h_i^2 satisfies w_i = a2 w_{i+1}; c_i = -b1 h_i / w_i
    assert sp.simplify(a[1] * h1**2 - h0**2) == 0
    assert sp.simplify(-b[1] * h0 / h0**2 - (h0 + h1) / (h0 * h1)) == 0
    g = sp.Symbol("g", positive=True)
    a, b = rules.bdia(g)([h0, h1])
    assert sp.simplify(a[0] + a[1] - 1) == 0 and a[1] == g


# --- numerically: same method, other rounding --------------------------------------------
@st.composite
def grids(draw, n_max=40):
    """A random variance-preserving grid: N in [2, n_max], step sizes spread over 50x."""
    n = draw(st.integers(2, n_max))
    steps = draw(st.lists(st.floats(0.02, 1.0), min_size=n, max_size=n))
    first = draw(st.floats(0.0, 0.05))
    sb = np.concatenate([[first], first + np.cumsum(steps)])
    return L.Grid.from_sigmabar(sb)


def random_net(seed, dim, dtype=np.float64):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    bvec = rng.standard_normal(dim)

    def eps_fn(x, i):
        return np.tanh(x @ W.astype(x.dtype) + np.sin(0.3 * i) * bvec.astype(x.dtype)).astype(x.dtype)

    return eps_fn


METHODS = [("obelm", {}), ("bdia", {"gamma": 1.0}), ("bdia", {"gamma": 0.8})]


@given(st.data())
def test_stable_samples_the_same_trajectory_as_the_recurrence_in_float64(data):
    grid = data.draw(grids())
    name, kw = data.draw(st.sampled_from(METHODS))
    seed = data.draw(st.integers(0, 2**16))
    eps_fn = random_net(seed, 6)
    xN = np.random.default_rng(seed + 1).standard_normal((3, 6))
    steps_r, steps_s = {}, {}
    m = L.get_method(name, **kw)
    L.sample(eps_fn, xN, grid, m, mode="recurrence", callback=lambda s: steps_r.__setitem__(s.index, s.entry))
    L.sample(eps_fn, xN, grid, m, mode="stable", callback=lambda s: steps_s.__setitem__(s.index, s.entry.x))
    assert sorted(steps_r) == sorted(steps_s) == list(range(grid.N))
    for i in steps_r:
        scale = 1 + np.abs(steps_r[i]).max()
        assert np.abs(steps_r[i] - steps_s[i]).max() <= 1e-9 * scale, i


@given(st.data())
def test_stable_round_trip_in_float64_and_latent_matches_recurrence(data):
    grid = data.draw(grids())
    name, kw = data.draw(st.sampled_from(METHODS[:2]))
    seed = data.draw(st.integers(0, 2**16))
    shape = data.draw(st.sampled_from([(5,), (2, 3), (2, 2, 2)]))
    eps_fn = random_net(seed, shape[-1])
    x0 = np.random.default_rng(seed + 2).standard_normal(shape)
    keep = x0.copy()
    lat = L.invert(eps_fn, x0, grid, L.get_method(name, **kw), mode="stable")
    assert np.array_equal(x0, keep)
    assert lat.mode == "stable" and sorted(lat.window) == [grid.N - 1, grid.N]
    ref = L.invert(eps_fn, x0, grid, L.get_method(name, **kw), mode="recurrence")
    # the recurrence's backward steps scale its rounding by up to prod 1/a_2 = (h_max/h_min)^2
    h = grid.h[1:]
    tol = 1e-9 + 1e-14 * (h.max() / h.min()) ** 2
    assert np.abs(lat.x - ref.x).max() <= tol * (1 + np.abs(ref.x).max())
    rec = L.sample(eps_fn, lat, grid, L.get_method(name, **kw))  # mode follows the latent
    assert np.abs(rec - x0).max() <= 1e-9


@pytest.mark.parametrize("N", [50, 200])
def test_float32_round_trip_error_bound_on_the_gaussian_problem(N):
    """The shear form's float32 round trip grows at most linearly in N (no prod 1/a_2 factor),
    and beats the recurrence, whose backward steps multiply rounding by h_{i+1}^2/h_i^2."""
    grid = L.Grid.from_alphas_cumprod(L.alphas_cumprod_for("scaled_linear"), N)
    eps_fn = eps_fn_for(gaussian(np.full(16, 0.5), 0.3**2), grid)
    x0 = (0.5 + 0.3 * np.random.default_rng(N).standard_normal((64, 16))).astype(np.float32)
    err = {}
    for mode in ("recurrence", "stable"):
        lat = L.invert(eps_fn, x0, grid, "obelm", mode=mode)
        err[mode] = float(np.abs(L.sample(eps_fn, lat, grid, "obelm", mode=mode) - x0).max())
    u = 2.0**-24
    assert err["stable"] <= 2 * N * u * np.abs(x0).max()
    assert err["stable"] * 3 <= err["recurrence"]


def test_stable_refuses_what_it_cannot_do():
    for name, kw in [("ddim", {}), ("edict", {}), ("adams_bashforth", {"k": 2}), ("adams_bashforth", {"k": 3})]:
        with pytest.raises(L.MethodError):
            in_mode(L.get_method(name, **kw), "stable")
    # an inconsistent 2-step BELM (a_1 + a_2 != 1) has no shear form
    bad = L.belm(lambda h: ([0.5, 0.25], [0, -1, 0]), k=2, name="inconsistent")
    with pytest.raises(L.MethodError, match="consistent"):
        in_mode(bad, "stable")
    # any consistent 2-step BELM rule has one
    assert in_mode(L.belm(rules.bdia(0.7), k=2, name="mine"), "stable").mode == "stable"
    with pytest.raises(L.MethodError, match="unknown mode"):
        in_mode(L.get_method("obelm"), "exact")
    m = in_mode(L.get_method("obelm"), "stable")
    assert isinstance(m, StableBelm) and in_mode(m, "stable") is m and in_mode(m, "recurrence").mode == "recurrence"


def test_stable_latent_window_and_named_arrays():
    grid = L.Grid.from_sigmabar(np.linspace(0.0, 3.0, 9))
    eps_fn = random_net(0, 4)
    lat = L.invert(eps_fn, np.ones((2, 4)), grid, "obelm", mode="stable")
    top, below = lat.window[grid.N], lat.window[grid.N - 1]
    assert isinstance(top, StableEntry) and top.v is None and below.v is not None
    names = lat.named_arrays()
    assert set(names) == {f"x[{grid.N}]", f"xbar[{grid.N}]", f"x[{grid.N - 1}]", f"xbar[{grid.N - 1}]", f"v[{grid.N - 1}]"}
    assert lat.nfe == grid.N  # one network call per step, as in the recurrence


def test_modes_also_run_general_odes_through_solve():
    """solve() takes a method object in any mode; 'bits' reverses a float32 ODE run exactly."""
    ts = np.linspace(0.0, 2.0, 41)
    f = lambda t, y: -y + np.sin(3 * t)  # noqa: E731
    y0 = np.array([1.0, -0.5, 2.0], dtype=np.float32)
    ref = L.solve(f, y0.astype(np.float64), ts, L.obelm())
    # float32 against float64: ROUNDINGS roundings of the state's size per step (tests/bounds.py); the field
    # -y + sin(3t) contracts forward in t, and the reverse run expands an error by at most e^(|df/dy| T) = e^2
    # (Gronwall); a round trip takes twice the steps
    steps, scale = len(ts) - 1, max(float(np.abs(ref.y).max()), float(np.abs(y0).max()), 1.0)
    one_way = ROUNDINGS * steps * unit_roundoff(np.float32) * scale
    growth = float(np.exp(ts[-1] - ts[0]))
    for mode in ("stable", "bits"):
        m = in_mode(L.obelm(), mode)
        sol = L.solve(f, y0, ts, m)
        assert sol.state.mode == mode and np.abs(sol.y - ref.y).max() <= one_way
        back = L.solve(f, sol.state, ts, m, reverse=True)
        err = np.abs(back.y - y0).max()
        assert err == 0 if mode == "bits" else err <= 2 * one_way * growth


def test_default_mode_follows_the_measurements():
    from linmultistep.diffusion import default_mode

    assert default_mode(L.obelm()) == "stable" and default_mode(L.bdia(1.0)) == "stable"
    for m in (L.bdia(0.5), L.ddim(), L.edict(0.93), L.adams_bashforth(2)):
        assert default_mode(m) == "recurrence"
    grid = L.Grid.from_sigmabar(np.linspace(0.0, 3.0, 7))
    eps_fn = random_net(0, 3)
    assert L.invert(eps_fn, np.ones(3), grid, "obelm").mode == "stable"
    assert L.invert(eps_fn, np.ones(3), grid, L.bdia(0.5)).mode == "recurrence"
    assert L.invert(eps_fn, np.ones(3), grid, in_mode(L.obelm(), "bits")).mode == "bits"


def test_warm_start_in_every_mode_matches_the_recurrence():
    """solve's warm_start hands two plain arrays to a 2-step method: each form derives its v."""
    ts = np.linspace(0.0, 1.0, 21)
    f = lambda t, y: np.cos(t) * y  # noqa: E731  exact: y0 exp(sin t)
    y0 = np.array([1.0, 2.0])
    y1 = y0 * np.exp(np.sin(ts[1]))
    ref = L.solve(f, y0, ts, L.obelm(), warm_start=[y1]).y
    assert np.abs(ref - y0 * np.exp(np.sin(1.0))).max() < 1e-2  # second order, 20 steps
    for mode in ("stable", "bits"):
        got = L.solve(f, y0, ts, in_mode(L.obelm(), mode), warm_start=[y1]).y
        assert np.abs(got - ref).max() < 1e-9, mode
