"""Grid construction, diffusers compatibility and validation."""

import numpy as np
import pytest

import linmultistep as lm
from linmultistep.errors import GridError

diffusers = pytest.importorskip("diffusers")


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_betas_match_diffusers(schedule):
    sched = diffusers.DDIMScheduler(beta_schedule=schedule, beta_start=0.00085, beta_end=0.012)
    ours = lm.alphas_cumprod_for(schedule, beta_start=0.00085, beta_end=0.012)
    # diffusers keeps betas in float32, so its cumulative product drifts by ~1e-5 relative
    np.testing.assert_allclose(ours, sched.alphas_cumprod.double().numpy(), rtol=5e-5)


def test_cosine_schedule_telescopes_to_alpha_bar():
    """Uncapped, prod(1 - beta) = alpha_bar((t+1)/T) / alpha_bar(0) (Nichol & Dhariwal 2021)."""
    T = 1000
    ac = lm.alphas_cumprod_for("squaredcos_cap_v2", T)
    t = np.arange(T)
    alpha_bar = np.cos(((t + 1) / T + 0.008) / 1.008 * np.pi / 2) ** 2 / np.cos(0.008 / 1.008 * np.pi / 2) ** 2
    uncapped = lm.betas_for("squaredcos_cap_v2", T) < 0.999
    last = np.flatnonzero(~uncapped)[0] if (~uncapped).any() else T
    np.testing.assert_allclose(ac[:last], alpha_bar[:last], rtol=1e-10)


@pytest.mark.parametrize("spacing,offset", [("linspace", 0), ("leading", 0), ("leading", 1), ("trailing", 0)])
@pytest.mark.parametrize("n", [1, 7, 10, 50, 333, 1000])
@pytest.mark.parametrize("alpha_one", [True, False])
def test_timesteps_and_alphas_match_ddim_scheduler(spacing, offset, n, alpha_one):
    sched = diffusers.DDIMScheduler(
        beta_schedule="scaled_linear", timestep_spacing=spacing, steps_offset=offset, set_alpha_to_one=alpha_one
    )
    sched.set_timesteps(n)
    ts = np.sort(sched.timesteps.numpy())
    ac = sched.alphas_cumprod.double().numpy()
    if ts[-1] >= len(ac) or (not alpha_one and n == 1 and ts[0] == 0):
        # diffusers would index past its schedule (timestep 1000) or step from 0 to 0
        with pytest.raises(GridError):
            lm.Grid.from_alphas_cumprod(ac, n, spacing, steps_offset=offset, final_alpha_one=alpha_one)
        return
    grid = lm.Grid.from_alphas_cumprod(ac, n, spacing, steps_offset=offset, final_alpha_one=alpha_one)
    if not alpha_one and ts[0] == 0:  # diffusers would take a zero-length last step; the grid drops it
        np.testing.assert_array_equal(grid.timesteps, ts)
        assert grid.N == n - 1
        return
    np.testing.assert_array_equal(grid.timesteps[1:], ts)
    assert grid.N == n
    np.testing.assert_allclose(grid.alpha[1:] ** 2, ac[ts], rtol=1e-12)
    final = 1.0 if alpha_one else ac[0]
    assert grid.alpha[0] ** 2 == pytest.approx(final, rel=1e-12)
    assert np.isnan(grid.timesteps[0]) == alpha_one


def test_derived_quantities():
    grid = lm.Grid.from_alphas_cumprod(lm.alphas_cumprod_for("scaled_linear"), 20)
    np.testing.assert_allclose(grid.sigmabar, grid.sigma / grid.alpha)
    assert grid.h[0] == grid.sigmabar[0] == 0.0
    np.testing.assert_allclose(grid.h[1:], np.diff(grid.sigmabar))
    assert (grid.h[1:] > 0).all()
    np.testing.assert_allclose(grid.alpha**2 + grid.sigma**2, 1.0)


def test_grid_copies_its_inputs_and_leaves_them_alone():
    alpha = np.array([1.0, 0.9, 0.5])
    sigma = np.sqrt(1 - alpha**2)
    keep_a, keep_s = alpha.copy(), sigma.copy()
    grid = lm.Grid(alpha, sigma)
    alpha[1] = 0.1
    assert grid.alpha[1] == 0.9
    np.testing.assert_array_equal(sigma, keep_s)
    assert not grid.alpha.flags.writeable
    np.testing.assert_array_equal(keep_a[[0, 2]], alpha[[0, 2]])


def test_fingerprint_identifies_the_grid():
    ac = lm.alphas_cumprod_for("scaled_linear")
    a = lm.Grid.from_alphas_cumprod(ac, 10)
    assert a.fingerprint == lm.Grid.from_alphas_cumprod(ac, 10).fingerprint
    assert a.fingerprint != lm.Grid.from_alphas_cumprod(ac, 11).fingerprint
    assert a.fingerprint != lm.Grid.from_alphas_cumprod(ac, 10, "trailing").fingerprint


@pytest.mark.bad_input("9 unclear errors")
@pytest.mark.parametrize(
    "alpha,sigma,timesteps,match",
    [
        ([1.0, np.nan, 0.5], [0.0, 0.5, 0.8], None, r"alpha\[1\] = nan is not finite"),
        ([1.0, 0.9, 0.5], [0.0, np.inf, 0.8], None, r"sigma\[1\] = inf is not finite"),
        ([1.0, 0.9, -0.5], [0.0, 0.5, 0.8], None, r"alpha\[2\] = -0.5 must be positive"),
        ([1.0, 0.9, 0.5], [0.0, 0.5, 0.1], None, r"sigmabar\[2\] = .* <= sigmabar\[1\]"),
        ([1.0, 0.9, 0.5], [0.0, 0.0, 0.8], None, r"sigmabar\[1\] = 0.0 <= sigmabar\[0\]"),
        ([1.0, 0.9, 0.5], [0.0, 0.5, 0.8], [np.nan, 10, 10], r"duplicate timestep 10 at grid indices 1 and 2"),
        ([1.0, 0.9, 0.5], [0.0, 0.5, 0.8], [0, 20, 10], r"timesteps\[2\] = 10 < timesteps\[1\] = 20"),
        ([1.0, 0.9, 0.5], [0.0, 0.5, 0.8], [0, np.nan, 10], r"timesteps\[1\] = nan is not finite"),
        ([1.0], [0.0], None, r"at least 2 points"),
        ([1.0, 0.9], [0.0, 0.5, 0.8], None, r"sigma has 3 entries, expected 2"),
    ],
)
def test_bad_grids_are_named(alpha, sigma, timesteps, match):
    with pytest.raises(GridError, match=match):
        lm.Grid(alpha, sigma, timesteps)


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_too_many_steps_repeat_timesteps(spacing):
    ac = lm.alphas_cumprod_for("scaled_linear")
    with pytest.raises(GridError, match=r"duplicate timestep \d+ at grid indices \d+ and \d+"):
        lm.Grid.from_alphas_cumprod(ac, 1001, spacing)
    assert lm.Grid.from_alphas_cumprod(ac, 1000, spacing).N == 1000


@pytest.mark.bad_input("9 unclear errors")
def test_offset_beyond_schedule_is_refused():
    ac = lm.alphas_cumprod_for("scaled_linear")
    with pytest.raises(GridError, match="outside the schedule"):
        lm.Grid.from_alphas_cumprod(ac, 10, "leading", steps_offset=200)


def test_fewer_steps_than_the_method_needs():
    grid = lm.Grid.from_sigmabar([0.0, 1.0])
    x = np.zeros(3)
    with pytest.raises(GridError, match=r"obelm needs at least 2 steps; the grid has N = 1"):
        lm.sample(lambda x, i: x, x, grid, "obelm")
    with pytest.raises(GridError, match=r"needs at least 2 steps"):
        lm.invert(lambda x, i: x, x, grid, "bdia")
    assert lm.sample(lambda x, i: x, x, grid, "ddim").shape == (3,)


@pytest.mark.bad_input("9 unclear errors")
@pytest.mark.parametrize("n", [61, 103, 121, 122])
def test_trailing_spacing_gives_exactly_n_timesteps_where_diffusers_adds_minus_one(n):
    # numpy's float arange gives diffusers an extra timestep -1 for these n (it would index
    # alphas_cumprod[-1], the noisiest entry); the grid keeps diffusers' first n timesteps
    sched = diffusers.DDIMScheduler(beta_schedule="scaled_linear", timestep_spacing="trailing")
    sched.set_timesteps(n)
    theirs = sched.timesteps.numpy()
    assert len(theirs) == n + 1 and theirs[-1] == -1
    grid = lm.Grid.from_alphas_cumprod(sched.alphas_cumprod.double().numpy(), n, "trailing")
    assert grid.N == n
    np.testing.assert_array_equal(grid.timesteps[1:], np.sort(theirs[:n]))
