"""The samplers users pick instead (analysis/sampler_comparison.py), checked against independent truth.

- Each diffusers scheduler, driven through the wrapper by the closed-form noise prediction of a
  Gaussian, converges to the exact probability-flow solution (closed form) with one network
  evaluation per step, at a fitted order within a stated band of its nominal order. The grid is
  the cosine schedule's 'trailing' timesteps, where sigmabar is about linear in t at the data end
  (docs/study.md), so the nominal orders can show; on Stable Diffusion's schedule they drop.
- The library's DDIM equals diffusers' DDIMScheduler run through the wrapper (an independent
  implementation of the same update) to float64 rounding, once the scheduler holds float64 tables.
- Bad inputs to the public functions are refused by name.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from linmultistep.analysis.problems import default_gaussian, default_mixture
from linmultistep.analysis.sampler_comparison import (
    SAMPLERS, SD_CONFIG, ClosedFormEps, CountingNet, aligned_config, ground_truth_comparison, library_grid,
    make_scheduler, model_comparison, noise_levels, rms, run_library, run_sampler, run_scheduler,
)

COSINE = dict(SD_CONFIG, beta_schedule="squaredcos_cap_v2")
ORDER_STEPS = (40, 100, 200)  # divisors of T = 1000 (DDIMScheduler steps to t - T // N)

# Band around the nominal order p that the fitted slope over ORDER_STEPS must fall in. First and
# second order: p +- 0.4 (the pre-asymptotic slack the study's tests allow on smooth grids, widened
# for N as small as 40). UniPC's claimed order 3 (UniP-2 plus the corrector UniC) needs smooth
# steps in lambda = -log sigmabar that a uniform-t grid does not give; the band asks for at least
# its predictor's order 2 (minus the same slack) and at most 3 + 0.4.
BANDS = {1: (0.6, 1.4), 2: (1.6, 2.4), 3: (1.6, 3.4)}


@pytest.fixture(scope="module")
def cosine_runs():
    return ground_truth_comparison(default_gaussian(dim=4, seed=1), ORDER_STEPS, config=COSINE,
                                   end="sigma_min", samples=16, seed=3)


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_each_sampler_reaches_the_exact_flow_at_its_order(cosine_runs, sampler):
    res = cosine_runs
    errors = [res.error[sampler][n] for n in ORDER_STEPS]
    assert all(math.isfinite(e) for e in errors)
    assert errors[0] > errors[1] > errors[2], errors  # converges to the closed-form flow
    assert [res.nfe[sampler][n] for n in ORDER_STEPS] == list(ORDER_STEPS)  # one network call per step
    p, _ = res.order(sampler)
    lo, hi = BANDS[SAMPLERS[sampler].order]
    assert lo <= p <= hi, (sampler, p, errors)


def test_every_sampler_ends_where_it_is_compared(cosine_runs):
    """'sigma_min' puts every end at t = 0. diffusers keeps alphas_cumprod in float32, and
    sigmabar_0^2 = (1 - abar_0) / abar_0 cancels: abar_0 rounded by u32 moves sigmabar_0 by up to
    u32 / (1 - abar_0) relative; the library's float64 grid ends at the float64 value."""
    s0 = float(noise_levels(aligned_config(COSINE))[0])
    tol = float(np.finfo(np.float32).eps) * (1 + s0**2) / s0**2  # u32 / (1 - abar_0)
    for sampler in SAMPLERS:
        for n in ORDER_STEPS:
            rel = 1e-14 if SAMPLERS[sampler].scheduler is None else tol
            assert cosine_runs.ends[sampler][n] == pytest.approx(s0, rel=rel), sampler


def _float64_ddim(config, sigmabar):
    """diffusers' DDIMScheduler with its alphas_cumprod table replaced by the float64 one of the
    same formula (diffusers builds it in float32), so only the update's arithmetic differs."""
    sched = make_scheduler("ddim-diffusers", config)
    ac = 1.0 / (1.0 + sigmabar**2)
    sched.alphas_cumprod = torch.from_numpy(ac)
    sched.final_alpha_cumprod = torch.tensor(1.0 if config["set_alpha_to_one"] else ac[0], dtype=torch.float64)
    return sched


@pytest.mark.parametrize("end", ["clean", "sigma_min"])
@pytest.mark.parametrize("num_steps", [5, 20, 50])
def test_library_ddim_equals_diffusers_ddim_scheduler(end, num_steps):
    cfg = aligned_config(SD_CONFIG, end)
    sigmabar = noise_levels(cfg)
    problem = default_mixture(dim=2)
    net = ClosedFormEps(problem, sigmabar)
    x = torch.from_numpy(problem.sample(np.random.default_rng(0), 32, s=float(sigmabar[-1])) / math.sqrt(1 + sigmabar[-1] ** 2))
    theirs = run_scheduler(_float64_ddim(cfg, sigmabar), net, x, num_steps, sigmabar)
    ours = run_library("ddim", net, x, library_grid(cfg, num_steps))
    assert theirs.timestep_start == ours.timestep_start
    assert theirs.sigmabar_start == pytest.approx(ours.sigmabar_start, rel=1e-14)
    assert theirs.sigmabar_end == pytest.approx(ours.sigmabar_end, rel=1e-14, abs=1e-300)
    # each step: a two-term update with coefficients computed by different float64 formulas, a few
    # roundings of the state's size; over N steps at most 64 N u64 of the largest state (xbar_N)
    bound = 64 * num_steps * np.finfo(np.float64).eps * float(x.abs().max()) * math.sqrt(1 + sigmabar[-1] ** 2)
    assert float((theirs.xbar - ours.xbar).abs().max()) <= bound


def test_euler_in_sigma_is_ddim_in_xbar():
    """EulerDiscrete on the probability-flow ODE in sigma is DDIM in xbar = x / alpha: checks the
    wrapper's conversion into and out of Euler's sigma-scaled coordinates. Euler runs its update in
    float32 (diffusers upcasts to float32, not float64), so the bound is float32's: a rounding of the
    state per step, N u32 of the largest state."""
    cfg = aligned_config(SD_CONFIG, "sigma_min")
    sigmabar = noise_levels(cfg)
    problem = default_gaussian(dim=3)
    net = ClosedFormEps(problem, sigmabar)
    x = torch.from_numpy(problem.sample(np.random.default_rng(2), 16, s=float(sigmabar[-1])) / math.sqrt(1 + sigmabar[-1] ** 2))
    n = 20
    euler = run_sampler("euler", net, x, n, cfg)
    ddim = run_sampler("ddim", net, x, n, cfg)
    scale = float(x.abs().max()) * math.sqrt(1 + sigmabar[-1] ** 2)
    assert float((euler.xbar - ddim.xbar).abs().max()) <= 4 * n * np.finfo(np.float32).eps * scale
    assert float((euler.xbar - ddim.xbar).abs().max()) > 0  # Euler is a separate (float32) code path


def test_the_reference_of_the_ground_truth_is_the_exact_flow():
    """The mixture's reference (DOP853, rtol 1e-12) agrees with the closed form on a Gaussian."""
    g = default_gaussian(dim=4)
    x = g.sample(np.random.default_rng(4), 8, s=14.6)
    assert np.abs(g.flow_reference(x, 14.6, 0.029) - g.flow_closed_form(x, 14.6, 0.029)).max() < 1e-9


# --- bad inputs ------------------------------------------------------------------------------------
@pytest.mark.bad_input("9 unclear errors")
def test_unknown_sampler_is_refused_by_name():
    with pytest.raises(ValueError, match=r"sampler must be one of .*'obelm'.*got 'plms'"):
        run_sampler("plms", lambda x, t: x, torch.zeros(2, 2, dtype=torch.float64), 5, aligned_config(SD_CONFIG))
    with pytest.raises(ValueError, match="library's obelm, not a diffusers scheduler"):
        make_scheduler("obelm", aligned_config(SD_CONFIG))


@pytest.mark.bad_input("8 coercions")
@pytest.mark.parametrize("bad", [0, 2.5, True, "10"])
def test_num_steps_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match=rf"num_steps must be a positive integer, got {bad!r}"):
        run_sampler("ddim", lambda x, t: x, torch.zeros(2, 2, dtype=torch.float64), bad, aligned_config(SD_CONFIG))


@pytest.mark.bad_input("9 unclear errors")
def test_config_and_end_are_checked():
    with pytest.raises(TypeError, match="config must be a scheduler config"):
        aligned_config(["scaled_linear"])
    with pytest.raises(ValueError, match=r"end must be one of \('clean', 'sigma_min'\), got 'zero'"):
        aligned_config(SD_CONFIG, end="zero")
    with pytest.raises(ValueError, match="prediction_type must be 'epsilon'.*'v_prediction'"):
        aligned_config(dict(SD_CONFIG, prediction_type="v_prediction"))


@pytest.mark.bad_input("3 arithmetic")
def test_integer_start_state_is_refused():
    with pytest.raises(TypeError, match="x_start must be a floating-point torch tensor, got torch.int64"):
        run_sampler("obelm", lambda x, t: x, torch.zeros(2, 2, dtype=torch.int64), 5, aligned_config(SD_CONFIG))


@pytest.mark.bad_input("3 arithmetic")
def test_a_network_output_of_another_shape_is_refused():
    net = CountingNet(lambda x, t: x[:, :1])
    with pytest.raises(ValueError, match=r"returned torch.Size\(\[3, 1\]\) for a state of shape \(3, 2\)"):
        run_sampler("dpm++2m", net, torch.ones(3, 2, dtype=torch.float64), 5, aligned_config(SD_CONFIG))


@pytest.mark.bad_input("9 unclear errors")
def test_comparison_arguments_are_checked():
    g = default_gaussian(dim=2)
    with pytest.raises(ValueError, match="steps must name at least one"):
        ground_truth_comparison(g, ())
    with pytest.raises(ValueError, match="samples must be a positive integer, got 0"):
        ground_truth_comparison(g, (5,), samples=0)
    with pytest.raises(TypeError, match="problem must be a GaussianMixture, got str"):
        ground_truth_comparison("gaussian", (5,))
    with pytest.raises(TypeError, match="samplers must be a sequence of names"):
        ground_truth_comparison(g, (5,), samplers="obelm")
    with pytest.raises(ValueError, match="reference_steps must be even.*got 501"):
        model_comparison(lambda x, t: x, torch.zeros(2, 2, dtype=torch.float64), SD_CONFIG, reference_steps=501)
    with pytest.raises(ValueError, match=r"cannot compare shapes \(2,\) and \(3,\)"):
        rms(torch.zeros(2), torch.zeros(3))


@pytest.mark.bad_input("9 unclear errors")
def test_a_scheduler_the_wrapper_does_not_know_is_refused():
    from diffusers import PNDMScheduler

    cfg = aligned_config(SD_CONFIG)
    with pytest.raises(ValueError, match="scheduler must be one of .*'UniPCMultistepScheduler'.*got PNDMScheduler"):
        run_scheduler(PNDMScheduler.from_config(cfg), lambda x, t: x, torch.ones(2, 2, dtype=torch.float64), 5,
                      noise_levels(cfg))
