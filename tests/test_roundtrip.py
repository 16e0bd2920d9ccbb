"""Property tests: exact methods come back to the data they inverted, within rounding bounds.

Running a 2-step BELM backwards divides by a_{i,2} at every step. For O-BELM and BDIA(1)
the products stay moderate on sane grids, so float64 round trips hold to 1e-10. BDIA(gamma)
amplifies rounding by about gamma^-N and EDICT by about p^-2N (their inverse maps have a
characteristic root -1/gamma, resp. a 1/p mixing twice per step); the bounds below are
K * u * growth with u the float64 unit roundoff, and the tests also show that the growth
is real (BDIA(0.5) loses every digit by 200 steps).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import linmultistep as lm
from strategies import MLPEps, any_grid, diffusers_grids, gaussian_problem, networks_and_data, random_grids, rel_err

U64 = np.finfo(np.float64).eps / 2
K = 1e3  # slack for the network's Lipschitz growth and the number of steps


def round_trip(net, x0, grid, method):
    latent = lm.invert(net, x0, grid, method)
    return lm.sample(net, latent, grid, method), latent


@pytest.mark.parametrize("method", [lm.obelm(), lm.bdia(1.0)], ids=str)
@given(grid=any_grid, nd=networks_and_data())
def test_exact_methods_round_trip_to_1e10_in_float64(method, grid, nd):
    net, x0 = nd
    back, latent = round_trip(net, x0, grid, method)
    assert back.dtype == np.float64 and back.shape == x0.shape
    assert rel_err(back, x0) <= 1e-10
    assert sorted(latent.window) == [grid.N - 1, grid.N]  # the pair (x_N, x_{N-1})


@pytest.mark.filterwarnings("ignore::linmultistep.errors.PrecisionWarning")  # the growth is what is measured
@given(grid=random_grids(max_steps=60), nd=networks_and_data(), gamma=st.floats(0.3, 0.95))
def test_bdia_gamma_round_trip_within_gamma_power_bound(grid, nd, gamma):
    net, x0 = nd
    back, _ = round_trip(net, x0, grid, lm.bdia(gamma))
    bound = K * U64 * gamma ** (-grid.N)
    assert rel_err(back, x0) <= max(bound, 1e-13)


@pytest.mark.filterwarnings("ignore::linmultistep.errors.PrecisionWarning")  # the growth is what is measured
@given(grid=random_grids(max_steps=120), nd=networks_and_data(), p=st.floats(0.8, 0.99))
def test_edict_round_trip_within_p_power_bound(grid, nd, p):
    net, x0 = nd
    back, latent = round_trip(net, x0, grid, lm.edict(p))
    assert set(latent.named_arrays()) == {f"x[{grid.N}]", f"y[{grid.N}]"}
    assert rel_err(back, x0) <= max(K * U64 * p ** (-2 * grid.N), 1e-12)


@pytest.mark.filterwarnings("ignore::linmultistep.errors.PrecisionWarning")  # the growth is what is measured
def test_rounding_growth_of_bdia_and_edict_is_real():
    grid = lm.Grid.from_alphas_cumprod(lm.alphas_cumprod_for("scaled_linear"), 200)
    net, x0 = MLPEps(8, 3), np.random.default_rng(4).standard_normal((2, 8))
    bdia_err = rel_err(round_trip(net, x0, grid, lm.bdia(0.5))[0], x0)
    edict_err = rel_err(round_trip(net, x0, grid, lm.edict(0.93))[0], x0)
    obelm_err = rel_err(round_trip(net, x0, grid, lm.obelm())[0], x0)
    assert not bdia_err < 1.0  # every digit lost (possibly inf/nan)
    assert 1e-12 < edict_err < K * U64 * 0.93 ** -400
    assert obelm_err < 1e-12


def test_ddim_inversion_is_measurably_inexact_and_improves_with_steps():
    ac = lm.alphas_cumprod_for("scaled_linear")
    x0 = 0.5 + 0.3 * np.random.default_rng(0).standard_normal((4, 16))
    errs = []
    for n in (10, 40, 160):
        grid = lm.Grid.from_alphas_cumprod(ac, n)
        eps_fn, _ = gaussian_problem(grid, dim=16)
        errs.append(rel_err(round_trip(eps_fn, x0, grid, "ddim")[0], x0))
    assert errs[-1] > 1e-4
    assert errs[0] > errs[1] > errs[2]
    assert errs[0] / errs[2] > 4  # roughly first order in the number of steps


@settings(max_examples=10)
@given(grid=diffusers_grids(max_steps=100), nd=networks_and_data(dtype=np.float32))
def test_float32_state_stays_float32_and_round_trips(grid, nd):
    net, x0 = nd
    back, latent = round_trip(net, x0, grid, lm.obelm())
    assert back.dtype == np.float32 and latent.x.dtype == np.float32
    # float32 rounding amplified by the inverse's growth, at most (h_max/h_min)^2
    growth = (grid.h[1:].max() / grid.h[1:].min()) ** 2
    assert rel_err(back, x0) <= 1e3 * np.finfo(np.float32).eps * growth
