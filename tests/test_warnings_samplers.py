"""Sampler warnings where the coefficients say a method fails when sampling from noise (issue 22), and
silence where they say it does not (the default DDPM grids, inversion and reconstruction).

A 2-step recurrence x_{i-1} = a_{i,1} x_i + a_{i,2} x_{i+1} + b_{i,1} h_i eps_i with a_{i,1} + a_{i,2} = 1 carries
the differences d_i = xbar_i - xbar_{i+1} of a perturbation as d_{i-1} = -a_{i,2} d_i (plus network terms):
checked here by running the library's own sampler with a zero network, where that relation is all there is.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import linmultistep as lm
from linmultistep import guards
from linmultistep.context import StepContext
from linmultistep.numpy_backend import NumpyBackend
from linmultistep.paths import FLOW_BLEND, flow_grid, flow_sigmas
from linmultistep.stepping import integrate

AMPLIFIES = r"sampling from noise with obelm on this grid amplifies errors"


@pytest.fixture(autouse=True)
def _fresh_warning_memory(monkeypatch):
    """The sampler warnings are said once per method and grid in a process: start each test afresh."""
    monkeypatch.setattr(guards, "_STARTS_WARNED", set())


def _sd3_grid(n: int, blend: float = 0.0) -> lm.Grid:
    # SD3's FlowMatchEulerDiscreteScheduler, shift 3, in the flow's own coordinates (x, t) (blend 0),
    # where the steps grow toward the data end (docs/flow.md)
    return flow_grid(flow_sigmas(n, shift=3.0), blend=blend)


def _velocity(x, i):  # any field: the warning is read off the grid's coefficients
    return -x


@pytest.mark.parametrize("n", [10, 28, 50])
def test_obelm_from_noise_on_sd3s_shifted_flow_grid_warns_once_with_the_growth_it_states(n):
    grid = _sd3_grid(n)
    x = np.random.default_rng(0).standard_normal((2, 4))
    with pytest.warns(lm.PrecisionWarning, match=AMPLIFIES + r".*method='ddim'.*stay exact") as rec:
        lm.sample(_velocity, x, grid, "obelm")
    said = [str(w.message) for w in rec if re.search(AMPLIFIES, str(w.message))]
    assert len(said) == 1 and rec[0].filename == __file__
    m = re.search(r"grid indices (\d+)\.\.(\d+).*prod \|a_\(i,2\)\| = ([0-9.e+]+)", said[0])
    lo, top, stated = int(m.group(1)), int(m.group(2)), float(m.group(3))
    # the stated growth is O-BELM's closed form a_{i,2} = h_i^2 / h_{i+1}^2 (BELM paper Prop. 4) over those steps
    h = np.diff(grid.sigmabar)
    h = np.concatenate([[np.nan], h])  # h[i] = sigmabar_i - sigmabar_{i-1}
    closed = np.prod([(h[i] / h[i + 1]) ** 2 for i in range(lo, top)])
    assert stated == pytest.approx(closed, rel=1e-2)
    # and it is real: with a zero network the sampler carries a difference d_top = 1 to d_(lo-1) = +-prod a_{i,2}
    ctx = StepContext(grid.h, grid.alpha, lambda y, i: np.zeros_like(y), NumpyBackend())
    run = integrate(ctx, lm.obelm(), {top: np.zeros(1), top - 1: np.ones(1)}, "forward", lo - 1)
    assert abs(float(run.window[lo - 1].x[0] - run.window[lo].x[0])) == pytest.approx(closed, rel=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error", lm.PrecisionWarning)
        lm.sample(_velocity, x, grid, "obelm")  # once per method and grid


@pytest.mark.parametrize("n", [10, 28, 50])
def test_obelm_from_noise_on_sd3s_grid_in_the_default_flow_coordinates_is_silent(n):
    # the default projective coordinates keep every a_(i,2) <= 1 on shifts up to 1 / (1 - blend)
    grid = _sd3_grid(n, blend=FLOW_BLEND)
    x = np.random.default_rng(0).standard_normal((2, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error", lm.PrecisionWarning)
        lm.sample(_velocity, x, grid, "obelm")


def test_inverting_and_reconstructing_on_that_grid_stay_silent_and_exact():
    grid = _sd3_grid(28)
    x0 = np.random.default_rng(1).standard_normal((2, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error", lm.PrecisionWarning)
        latent = lm.invert(_velocity, x0, grid, "obelm")
        back = lm.sample(_velocity, latent, grid)
    assert np.abs(back - x0).max() <= 1e3 * np.finfo(np.float64).eps * np.abs(x0).max()


DEFAULT_GRIDS = [(schedule, spacing, n) for schedule in ("linear", "scaled_linear")
                 for spacing in ("leading", "linspace", "trailing") for n in (10, 20, 50, 100)]


@pytest.mark.parametrize("schedule,spacing,n", DEFAULT_GRIDS)
def test_obelm_from_noise_on_ddpm_grids_is_silent(schedule, spacing, n):
    """DDPM's schedules in every diffusers spacing: O-BELM's steps shrink toward the data end in sigmabar,
    except the last few tiny ones, whose growth covers far less than the guard's share of the range."""
    grid = lm.Grid.from_alphas_cumprod(lm.alphas_cumprod_for(schedule), n, spacing,
                                       steps_offset=1 if spacing == "leading" else 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", lm.PrecisionWarning)
        lm.sample(lambda x, i: 0.1 * x, np.ones((2, 3)), grid, "obelm")


def test_bdia_gamma_one_from_noise_after_a_long_first_step_warns_with_the_alternative():
    """docs/bdia.md, docs/digits.md: the library's BDIA(1) carries its first (DDIM) step's error undamped
    (a_{i,2} = 1 at every step); on the digits model's own grid (DDPM linear, 'leading', 50 steps) its
    first step covers 11% of the range."""
    grid = lm.Grid.from_alphas_cumprod(lm.alphas_cumprod_for("linear"), 50, "leading", steps_offset=1)
    with pytest.warns(lm.PrecisionWarning, match=r"sampling from noise with bdia\(gamma=1.0\).*use O-BELM") as rec:
        lm.sample(lambda x, i: 0.1 * x, np.ones((2, 3)), grid, "bdia")
    assert len(rec) == 1 and rec[0].filename == __file__


def test_obelm_on_a_uniform_grid_is_advised_another_grid_not_itself():
    """On equal steps O-BELM is the leapfrog rule (a_{i,2} = 1): the starter's error is carried undamped,
    and the advice must be what helps -- another grid or DDIM -- never "use O-BELM"."""
    grid = lm.Grid.from_sigmabar(np.linspace(0.0, 2.0, 6))
    with pytest.warns(lm.PrecisionWarning, match=r"sampling from noise with obelm.*grid whose steps shrink") as rec:
        lm.sample(lambda x, i: 0.5 * x, np.ones(3), grid, "obelm")
    assert not any("use O-BELM" in str(w.message) for w in rec)
