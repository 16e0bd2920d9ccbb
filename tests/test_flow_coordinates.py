"""The derivation of the flow grids' coordinates (linmultistep.analysis.flow_coordinates), checked by
sympy, and the property it promises on SD3's shifted grid: O-BELM's parasitic factors a_(i,2) <= 1."""

from __future__ import annotations

import numpy as np
import pytest

from linmultistep.analysis.flow_coordinates import derivation, max_parasitic_factor
from linmultistep.paths import FLOW_BLEND, flow_grid, flow_sigmas, shift_sigmas


def test_every_step_of_the_derivation_holds_symbolically():
    checks = derivation()
    assert len(checks) >= 10
    assert all(checks.values()), {k: v for k, v in checks.items() if not v}


@pytest.mark.parametrize("n", [10, 20, 50])
@pytest.mark.parametrize("shift", [1.0, 3.0, np.exp(1.15), 24.0])
def test_default_coordinates_damp_the_parasitic_root_on_shifted_grids(n, shift):
    """On t = shift_s(u), u uniform, with s (1 - b) <= 1 (module docstring, item 4): every a_(i,2) in
    (0, 1]; in (x, t) a shift > 1 makes some a_(i,2) > 1. Computed from the grid's own step sizes.
    (diffusers' schedules end with one extra step to t = 0 from a doubly shifted 1/T, not of this form:
    the next test.)"""
    t = shift_sigmas(np.linspace(0.0, 1.0, n + 1), shift)
    g = flow_grid(t)
    h = np.asarray(g.h)
    a2 = (h[1:-1] / h[2:]) ** 2
    assert np.all(a2 > 0) and max_parasitic_factor(g) <= 1.0 + 1e-12
    assert (shift <= 1.0 / (1 - FLOW_BLEND))
    if shift > 1:
        assert max_parasitic_factor(flow_grid(t, blend=0.0)) > 1.0


@pytest.mark.parametrize("shift", [3.0, 20.0])
def test_on_diffusers_schedules_only_the_last_step_to_the_data_can_exceed_one(shift):
    """shift 20 < 1 / (1 - b) = 25: strictly inside the guarantee (at 25 the steps are equal, a_(i,2) = 1
    up to rounding)."""
    t = flow_sigmas(50, shift=shift)
    h = np.asarray(flow_grid(t).h)
    a2 = (h[1:-1] / h[2:]) ** 2  # a2[0] = a_(1,2): the step from diffusers' smallest sigma to 0
    assert np.all(a2[1:] <= 1.0) and np.all(a2 > 0)
