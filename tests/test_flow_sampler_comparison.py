"""diffusers' flow samplers (DPM-Solver++ 2M and UniPC with flow_prediction, FlowMatchEuler) driven by a
velocity field on a flow grid (analysis/flow_sampler_comparison.py), checked against independent truth:
the closed-form flow of Gaussian data (analysis/flow_problems.py), the library's O-BELM at many steps,
and the library's Euler (= diffusers' FlowMatchEulerDiscreteScheduler, tests/test_flow_schedulers.py)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from linmultistep.analysis.flow_problems import flow_problem  # noqa: E402
from linmultistep.analysis.flow_sampler_comparison import (  # noqa: E402
    UNIPC_START_GUARD, flow_ground_truth_comparison, flow_model_comparison, flow_sigmas_of, make_flow_scheduler,
    problem_field_for, run_flow_sampler,
)
from linmultistep.analysis.sampler_comparison import FLOW_SAMPLERS, nominal_order  # noqa: E402
from linmultistep.backends.diffusers.flow_schedulers import flow_grid_from_config  # noqa: E402
from linmultistep.paths import dynamic_shift_mu  # noqa: E402

ONE_TORCH_THREAD = True
EPS32 = float(torch.finfo(torch.float32).eps)
SD3 = {"num_train_timesteps": 1000, "shift": 3.0}  # mnist-flow's scheduler config (shift 3, no dynamic shifting)
DIFFUSERS = [s for s, spec in FLOW_SAMPLERS.items() if spec.scheduler is not None]
PROBLEM = flow_problem("gaussian", dim=8, seed=0)  # closed-form flow; data variances 0.02 .. 0.4


@pytest.fixture(scope="module")
def runs():
    """Every flow sampler at N = 5, 10, 20 and 200 against the exact flow, and O-BELM at 400 steps."""
    res = flow_ground_truth_comparison(PROBLEM, (5, 10, 20, 200), samples=64, config=SD3)
    field_for = problem_field_for(PROBLEM, SD3)
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal((64, PROBLEM.dim)))  # the comparison's x_N
    ends = {n: {s: run_flow_sampler(s, *field_for(n), noise).x for s in FLOW_SAMPLERS} for n in (5, 200)}
    return res, ends, run_flow_sampler("obelm", *field_for(400), noise).x


@pytest.mark.parametrize("sampler", list(FLOW_SAMPLERS))
def test_every_flow_sampler_makes_one_network_call_per_step(runs, sampler):
    res, _, _ = runs
    assert res.nfe[sampler] == {n: n for n in (5, 10, 20, 200)}


@pytest.mark.parametrize("sampler", list(FLOW_SAMPLERS))
def test_each_flow_sampler_converges_to_the_exact_flow(runs, sampler):
    # every sampler here is at least first order, so N = 5 -> 200 divides its error by about 40 (more for
    # higher orders); a quarter of that leaves room for the pre-asymptotic constant at N = 5. A sampler
    # started or ended at another sigma than the exact flow it is compared with would stall at the offset.
    res, _, _ = runs
    assert nominal_order(sampler) >= 1
    assert res.error[sampler][200] < res.error[sampler][5] * (5 / 200) * 4


@pytest.mark.parametrize("sampler", DIFFUSERS)
def test_each_diffusers_flow_sampler_reaches_the_library_obelm_endpoint(runs, sampler):
    # the same endpoint as the library's O-BELM at 400 steps (an independent solver of the same ODE, on
    # the same grid family): the distance shrinks as the exact-flow error does (the window of the test above)
    _, ends, ref = runs

    def dist(a):
        return float((a - ref).pow(2).mean().sqrt())

    assert dist(ends[200][sampler]) < dist(ends[5][sampler]) * (5 / 200) * 4


@pytest.mark.parametrize("n", [5, 20, 200])
def test_flow_match_euler_equals_the_library_euler_to_rounding(n):
    # diffusers' step rounds the (float64) state to float32 once per step (|error| <= eps32 / 2 |x|) and
    # adds dt * v in float64; the library's Euler runs float64 (its rounding ~ eps64: negligible). Each
    # rounding is carried to the end by the Euler maps of the linear Gaussian field, whose growth is at most
    # exp(int max(0, -a(s)) ds) with a(s) >= -1 on s < c / (1 + c) <= 0.29: below 2. Hence N eps32 max|x|.
    field, grid = problem_field_for(PROBLEM, SD3)(n)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((32, PROBLEM.dim)))
    ours = run_flow_sampler("ddim", field, grid, x).x
    sched = make_flow_scheduler("flow-euler", grid)
    sample, biggest = x.clone(), float(x.abs().max())
    for k, t in enumerate(sched.timesteps):
        sample = sched.step(field(sample, n - k), t, sample, return_dict=False)[0]
        biggest = max(biggest, float(sample.abs().max()))
    assert sample.dtype == torch.float64
    assert float((sample - ours).abs().max()) <= n * EPS32 * biggest
    # and the same through the comparison's own loop
    theirs = run_flow_sampler("flow-euler", field, grid, x).x
    assert torch.equal(theirs, sample)


@pytest.mark.parametrize("cfg,kw", [
    (SD3, {}),
    (dict(use_dynamic_shifting=True), dict(mu=dynamic_shift_mu(1024))),
    (dict(shift=3.0, shift_terminal=0.05), {}),
], ids=["sd3", "dynamic", "terminal"])
@pytest.mark.parametrize("sampler", DIFFUSERS)
def test_a_diffusers_flow_scheduler_walks_the_grids_sigmas(cfg, kw, sampler):
    # diffusers' own FlowMatchEuler of the config (the pipeline's scheduler) gives the sigmas every sampler walks
    from diffusers import FlowMatchEulerDiscreteScheduler

    grid = flow_grid_from_config(cfg, 12, **kw)
    ref = FlowMatchEulerDiscreteScheduler(**cfg)
    ref.set_timesteps(12, **kw)
    sched = make_flow_scheduler(sampler, grid)
    got, want = sched.sigmas.double(), ref.sigmas.double()
    assert got.shape == want.shape == (13,)
    if sampler == "flow-unipc":  # diffusers lowers a first sigma of 1 (log(alpha = 0)) by its guard
        assert abs(float(got[0] - want[0])) <= 2 * UNIPC_START_GUARD
        got, want = got[1:], want[1:]
    assert torch.equal(got, want)
    assert np.array_equal(flow_sigmas_of(grid), ref.sigmas[:-1].double().numpy())


def test_the_uniform_grid_is_shift_of_k_over_n():
    # independent formula: SD3's shift s' = 3 s / (1 + 2 s) of s = k / N, then 0; diffusers keeps float32 sigmas
    _, grid = problem_field_for(PROBLEM, SD3, uniform=True)(8)
    s = np.arange(8, 0, -1) / 8
    want = 3 * s / (1 + 2 * s)
    assert np.allclose(flow_sigmas_of(grid), want, rtol=2 * EPS32, atol=0) and grid.sigma[0] == 0.0
    res = flow_ground_truth_comparison(PROBLEM, (5, 200), samples=16, config=SD3, uniform=True)
    for s in FLOW_SAMPLERS:  # the convergence window of the model's own grids holds here too
        assert res.nfe[s] == {5: 5, 200: 200} and res.error[s][200] < res.error[s][5] * (5 / 200) * 4


def test_the_model_comparison_counts_and_references():
    # on the exact field: the reference's half-step solve is the same sampler at 200 steps, run twice
    field_for = problem_field_for(PROBLEM, SD3)
    noise = torch.from_numpy(np.random.default_rng(2).standard_normal((16, PROBLEM.dim)))
    cmp = flow_model_comparison(field_for, noise, (5, 10), reference_steps=20, reference_method="ddim",
                                score=lambda x: float(x.shape[0]))
    r = cmp.result
    assert r.error["ddim"][10] == cmp.reference_error  # Euler at 10 = the 20-step Euler reference's half
    assert all(r.nfe[s] == {5: 5, 10: 10} for s in FLOW_SAMPLERS)
    assert cmp.reference == "Euler, 20 steps" and cmp.accuracy["obelm"] == {5: 16.0, 10: 16.0}


# --- bad input ------------------------------------------------------------------------------------------
@pytest.mark.bad_input("9 unclear errors")
def test_an_unknown_or_vp_sampler_is_refused_by_name():
    field, grid = problem_field_for(PROBLEM, SD3)(5)
    x = torch.zeros(2, PROBLEM.dim, dtype=torch.float64)
    for bad in ("dpm++2m", "euler", "flow-dpm++3m"):  # VP samplers do not apply to a velocity field
        with pytest.raises(ValueError, match=r"flow sampler must be one of .*flow-dpm\+\+2m"):
            run_flow_sampler(bad, field, grid, x)


@pytest.mark.bad_input("4 companions")
def test_a_variance_preserving_grid_is_refused():
    from linmultistep.backends.diffusers.grid import grid_from_config

    from linmultistep.analysis.sampler_comparison import SD_CONFIG

    vp = grid_from_config(SD_CONFIG, 5)
    with pytest.raises(Exception, match="flow"):
        make_flow_scheduler("flow-unipc", vp)


@pytest.mark.bad_input("9 unclear errors")
@pytest.mark.parametrize("kw, match", [
    (dict(reference_steps=21), "reference_steps must be even"),
    (dict(reference_method="edict"), "reference_method must be 'ddim'"),
    (dict(samplers="obelm"), "samplers must be a sequence"),
    (dict(samplers=()), "at least one sampler"),
    (dict(steps=(0, 5)), "steps must be a positive integer"),
])
def test_model_comparison_arguments_are_checked(kw, match):
    field_for = problem_field_for(PROBLEM, SD3)
    noise = torch.zeros(2, PROBLEM.dim, dtype=torch.float64)
    with pytest.raises((ValueError, TypeError), match=match):
        flow_model_comparison(field_for, noise, **{"steps": (5,), "reference_steps": 20, **kw})


@pytest.mark.bad_input("9 unclear errors")
def test_a_field_for_that_returns_another_grid_is_refused():
    field_for = problem_field_for(PROBLEM, SD3)
    noise = torch.zeros(2, PROBLEM.dim, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"field_for\(20\) returned a grid of 10 steps"):
        flow_model_comparison(lambda n: field_for(10), noise, (5,), reference_steps=20)
