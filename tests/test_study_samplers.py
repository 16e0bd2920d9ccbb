"""`linmultistep study` compares the samplers users pick instead (issue 23 item 4): diffusers' schedulers
and the library's DDIM and O-BELM against the exact flow at N = 5, 10, 20, with fitted orders.

The order window. The study fits over N = 5, 10, 20 only: pre-asymptotic, so no tight band around the
nominal order can be promised. What the fit must show is which order the sampler has: the fitted slope
must be nearer its nominal order than any other integer order, i.e. within (p - 1/2, p + 1/2). On a
schedule smooth at the data end (cosine) that holds for O-BELM (2) and DDIM (1); on Stable Diffusion's
schedule the orders drop (sigmabar ~ sqrt(t) near the data end, docs/study.md), so the window is asked
of the smooth table only.

The flow half (diffusers' flow DPM-Solver++ 2M, UniPC and FlowMatchEuler against the library's Euler and
O-BELM, :func:`~linmultistep.analysis.flow_sampler_comparison.flow_study_comparisons`) asks the same window
of its smooth table: the closed-form Gaussian flow (velocity rational in s without a pole on [0, 1]) on
equal steps in s (shift 1), where Euler's error is first order and O-BELM's second order.
"""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("scipy")

from linmultistep.analysis.flow_problems import flow_problem  # noqa: E402
from linmultistep.analysis.flow_sampler_comparison import FLOW_LABELS, flow_study_comparisons  # noqa: E402
from linmultistep.analysis.problems import make_problem  # noqa: E402
from linmultistep.analysis.sampler_comparison import (  # noqa: E402
    FLOW_SAMPLERS, SAMPLERS, SMOOTH_SCHEDULE, STUDY_STEPS, comparison_rows, study_comparisons,
    where_obelm_loses,
)

ONE_TORCH_THREAD = True


@pytest.fixture(scope="module")
def comparisons():
    # the closed-form Gaussian keeps the exact flow cheap (no ODE solve); 64 samples are plenty for the RMS
    return study_comparisons(make_problem("gaussian", dim=2, seed=0), "scaled_linear", STUDY_STEPS, samples=64, seed=0)


def test_every_sampler_at_every_n_with_one_network_call_per_step(comparisons):
    assert [(c.schedule, c.end) for c in comparisons] == [("scaled_linear", "sigma_min"), ("scaled_linear", "clean"),
                                                          (SMOOTH_SCHEDULE, "sigma_min")]
    for c in comparisons:
        assert c.result.samplers == list(SAMPLERS) and c.result.steps == list(STUDY_STEPS)
        for s in SAMPLERS:
            assert [c.result.nfe[s][n] for n in STUDY_STEPS] == list(STUDY_STEPS)
            errors = [c.result.error[s][n] for n in STUDY_STEPS]
            assert all(0 < e < 1 for e in errors), (c.title, s, errors)  # finite, and below the data's own scale


def assert_nominal_order(smooth, specs, sampler) -> None:
    """The fitted order is nearer the nominal order than any other integer order (module docstring)."""
    p, _ = smooth.order(sampler)
    nominal = specs[sampler].order
    assert nominal - 0.5 < p < nominal + 0.5, (sampler, p, [smooth.error[sampler][n] for n in STUDY_STEPS])


@pytest.mark.parametrize("sampler", ["obelm", "ddim", "euler"])
def test_fitted_order_on_the_smooth_schedule_is_the_nominal_one(comparisons, sampler):
    assert_nominal_order(comparisons[-1].result, SAMPLERS, sampler)


def test_the_table_and_the_sentence_say_what_the_numbers_say(comparisons):
    res = comparisons[0].result
    head, rows = comparison_rows(res)
    assert head[:2] == ["sampler", "nominal order"] and head[2:5] == [f"N = {n}" for n in STUDY_STEPS]
    by_label = {r[0]: r for r in rows}
    ob = by_label[SAMPLERS["obelm"].label]
    assert ob[2:5] == [f"{res.error['obelm'][n]:.2e}" for n in STUDY_STEPS] and ob[-3:] == ["1.00"] * 3
    unipc = by_label[SAMPLERS["unipc"].label]
    assert unipc[-1] == f"{res.error['unipc'][20] / res.error['obelm'][20]:.2f}"
    text = where_obelm_loses(res)
    for n in STUDY_STEPS:  # each N: either the samplers ahead of O-BELM are named, or O-BELM is the most accurate
        better = [s for s in res.samplers if res.error[s][n] < res.error["obelm"][n]]
        clause = re.search(rf"at N = {n} ([^;]*)", text).group(1)
        if better:
            assert all(SAMPLERS[s].label in clause for s in better) and "most accurate" not in clause
        else:
            assert "O-BELM is the most accurate" in clause


@pytest.fixture(scope="module")
def flow_comparisons():
    return flow_study_comparisons(flow_problem("gaussian", dim=2, seed=0), STUDY_STEPS, samples=64, seed=0)


def test_every_flow_sampler_at_every_n_with_one_network_call_per_step(flow_comparisons):
    assert [(c.shift, c.grid) for c in flow_comparisons] == [(3.0, "model"), (3.0, "uniform"), (1.0, "uniform")]
    for c in flow_comparisons:
        assert c.result.samplers == list(FLOW_SAMPLERS) and c.result.steps == list(STUDY_STEPS)
        for s in FLOW_SAMPLERS:
            assert [c.result.nfe[s][n] for n in STUDY_STEPS] == list(STUDY_STEPS)
            errors = [c.result.error[s][n] for n in STUDY_STEPS]
            assert all(0 < e < 1 for e in errors), (c.title, s, errors)  # finite, below the noise's unit scale


@pytest.mark.parametrize("sampler", ["obelm", "ddim", "flow-euler"])
def test_flow_fitted_order_on_the_smooth_flow_is_the_nominal_one(flow_comparisons, sampler):
    """O-BELM 2, Euler 1."""
    assert_nominal_order(flow_comparisons[-1].result, FLOW_SAMPLERS, sampler)


def test_the_flow_comparison_errors_are_against_the_exact_flow(flow_comparisons):
    """Independent truth: the library's own numpy O-BELM on the same grid against the closed-form flow
    (:func:`~linmultistep.analysis.flow_problems.flow_errors`), the same x_N."""
    import numpy as np

    from linmultistep.analysis.flow_problems import flow_errors
    from linmultistep.analysis.flow_sampler_comparison import problem_field_for

    problem = flow_problem("gaussian", dim=2, seed=0)
    noise = np.random.default_rng(0).standard_normal((64, 2))
    for c in flow_comparisons[1:]:  # the uniform families, shift 3 and 1
        field_for = problem_field_for(problem, {"num_train_timesteps": 1000, "shift": c.shift}, uniform=True)
        for n in STUDY_STEPS:
            want = flow_errors(problem, field_for(n)[1], "obelm", noise)
            assert c.result.error["obelm"][n] == pytest.approx(want, rel=1e-9), (c.title, n)


def test_the_flow_table_and_sentence_name_the_flow_samplers(flow_comparisons):
    res = flow_comparisons[0].result
    head, rows = comparison_rows(res, FLOW_LABELS)
    assert [r[0] for r in rows] == [FLOW_SAMPLERS[s].label for s in FLOW_SAMPLERS]
    euler = rows[list(FLOW_SAMPLERS).index("ddim")]
    assert euler[0] == "Euler (linmultistep)"
    assert euler[-1] == f"{res.error['ddim'][20] / res.error['obelm'][20]:.2f}"
    text = where_obelm_loses(res, FLOW_LABELS)
    for n in STUDY_STEPS:
        better = [s for s in res.samplers if res.error[s][n] < res.error["obelm"][n]]
        clause = re.search(rf"at N = {n} ([^;]*)", text).group(1)
        if better:
            assert all(FLOW_LABELS[s] in clause for s in better) and "most accurate" not in clause
        else:
            assert "O-BELM is the most accurate" in clause
    assert "DDIM" not in text  # the library's 'ddim' is Euler on a flow grid


def test_the_sampler_plot_takes_flow_comparisons(flow_comparisons):
    from linmultistep.analysis.plots import sampler_comparison_plot

    fig = sampler_comparison_plot(flow_comparisons, "flow")
    axes = fig.get_axes()
    assert len(axes) == 3
    labels = [ln.get_label() for ln in axes[-1].get_lines() if not ln.get_label().startswith("slope")]
    assert labels == [FLOW_SAMPLERS[s].label for s in FLOW_SAMPLERS]
    obelm = axes[0].get_lines()[list(FLOW_SAMPLERS).index("obelm")]
    assert list(obelm.get_ydata()) == [flow_comparisons[0].result.error["obelm"][n] for n in STUDY_STEPS]


def test_study_command_prints_and_writes_the_comparison(tmp_path, capsys):
    from linmultistep.cli import main

    out = tmp_path / "study"
    code = main(["study", "--problem", "gaussian", "--steps", "4", "8", "--spacing", "karras", "--methods", "ddim",
                 "obelm", "--samples", "16", "--dtypes", "float64", "--out", str(out), "--no-progress",
                 "--plot-steps", "8", "--fit-from", "4", "--sampler-steps", "5", "10", "20"])
    assert code == 0
    text = capsys.readouterr().out
    assert text.count("\nsamplers users pick instead") == 3 and text.count("\nflow samplers users pick instead") == 3
    assert text.count("O-BELM against them:") == 6
    for spec in [*SAMPLERS.values(), *FLOW_SAMPLERS.values()]:
        assert text.count(spec.label) >= 3
    md = (out / "report.md").read_text()
    assert "## The samplers users pick instead" in md and "## The samplers users pick for flow models" in md
    assert md.count("÷ O-BELM N = 20 |") == 6 and "![The samplers users pick instead" in md
    assert "![The samplers users pick for flow models" in md
    for stem in ("samplers", "samplers_flow"):
        assert (out / f"{stem}.png").is_file() and (out / f"{stem}.svg").is_file()
    data = json.loads((out / "results.json").read_text())
    assert [d["end"] for d in data["samplers"]] == ["sigma_min", "clean", "sigma_min"]
    for d in data["samplers"]:
        assert set(d["error"]) == set(SAMPLERS) and all(set(v) == {"5", "10", "20"} for v in d["error"].values())
    assert [(d["shift"], d["grid"]) for d in data["flow_samplers"]] == [(3.0, "model"), (3.0, "uniform"),
                                                                         (1.0, "uniform")]
    for d in data["flow_samplers"]:
        assert set(d["error"]) == set(FLOW_SAMPLERS) and all(set(v) == {"5", "10", "20"} for v in d["error"].values())


def test_study_command_without_the_comparison(tmp_path, capsys):
    from linmultistep.cli import main

    code = main(["study", "--problem", "gaussian", "--steps", "4", "8", "--spacing", "karras", "--methods", "ddim",
                 "--samples", "8", "--dtypes", "float64", "--out", str(tmp_path), "--no-progress", "--plot-steps", "8",
                 "--fit-from", "4", "--no-samplers"])
    assert code == 0
    text = capsys.readouterr().out
    assert "comparison with diffusers' samplers skipped (--no-samplers)" in text and "flow samplers" not in text
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["samplers"] == [] and data["flow_samplers"] == []
    md = (tmp_path / "report.md").read_text()
    assert "Comparison with diffusers' samplers skipped (--no-samplers)." in md and "flow models" not in md
    assert not (tmp_path / "samplers_flow.png").exists() and not (tmp_path / "samplers.png").exists()


@pytest.mark.bad_input("10 cli")
def test_study_refuses_sampler_steps_below_two(tmp_path, capsys):
    from linmultistep.cli import main

    assert main(["study", "--sampler-steps", "1", "5", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--sampler-steps" in err and "[1, 5]" in err


@pytest.mark.bad_input("9 unclear errors")
def test_the_flow_comparison_refuses_a_problem_that_is_not_a_flow():
    """A variance-preserving problem has no velocity: refused up front, naming what is expected."""
    with pytest.raises(TypeError, match="FlowProblem"):
        flow_study_comparisons(make_problem("gaussian", dim=2, seed=0), STUDY_STEPS, samples=8, seed=0)


@pytest.mark.bad_input("9 unclear errors")
def test_the_sampler_plot_names_samplers_of_the_other_kind(comparisons, flow_comparisons):
    """A comparison whose samplers are not of its kind (flow samplers in a diffusion comparison) is refused
    with their names, not plotted with wrong labels or a KeyError."""
    import dataclasses

    from linmultistep.analysis import plots

    mixed = dataclasses.replace(comparisons[0], result=flow_comparisons[0].result)
    with pytest.raises(ValueError, match="not in SAMPLERS") as err:
        plots.sampler_comparison_plot([mixed])
    assert "flow-dpm++2m" in str(err.value)  # the offending names are given
