"""The study's flow-matching problem (issue 21): Euler and O-BELM against the exact flow of the
rectified-flow problem, fitted orders ~1 and ~2, in the core's default flow coordinates and in (x, t)."""

from __future__ import annotations

import numpy as np
import pytest

from linmultistep.analysis.flow_problems import flow_problem
from linmultistep.analysis.study import flow_table, run_flow_study


@pytest.mark.parametrize("blend", [None, 0.0], ids=["default-coordinates", "x-t"])
def test_flow_study_orders_against_the_closed_form_flow(blend):
    rows = run_flow_study(["ddim", "obelm"], [10, 20, 40, 80], problem="gaussian", shifts=(3.0,), samples=64,
                          blend=blend)
    by = {r.method: r for r in rows}
    assert 0.8 <= by["ddim"].order <= 1.2, by
    assert 1.8 <= by["obelm"].order <= 2.4, by
    # the truth is the closed-form flow: O-BELM's error at N = 80 far below Euler's
    assert by["obelm"].errors[-1] < by["ddim"].errors[-1] / 10
    head, body = flow_table(rows)
    assert head[-1] == "order" and len(body) == 2 and body[1][2] == "obelm"


def test_flow_study_error_is_measured_against_the_exact_flow():
    """One Euler step from t = 1 to 0 is x - v(x, 1): its RMS distance to the closed-form flow, by hand."""
    prob = flow_problem("gaussian", seed=3)  # the study draws its problem with its seed, as the main study
    (row,) = run_flow_study(["ddim"], [1], problem="gaussian", shifts=(1.0,), samples=32, seed=3)
    noise = np.random.default_rng(3).standard_normal((32, 2))
    euler = noise - prob.velocity(noise, 1.0)
    want = np.sqrt(np.mean((euler - prob.flow_closed_form(noise, 1.0, 0.0)) ** 2))
    assert row.errors[0] == pytest.approx(want, rel=1e-12)
