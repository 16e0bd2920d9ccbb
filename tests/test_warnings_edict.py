"""EDICT's precision warning only where it applies, with advice that fits the run (issue 22: `demo` warned
`use p >= 0.9 (0.93 customary)` for p = 0.93).

The guard reads the round trip's growth off the coefficients: EDICT's inverse mixing step has determinant p^-2
on the pair (x, y), p^-1 per coordinate, so a round trip in a dtype of unit roundoff u is expected off by about
u p^-N of the data, and warns past 1%. Checked against the demo's Gaussian problem (exact noise prediction),
with margins of orders of magnitude on both sides of the 1% line.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest

import linmultistep as lm
from linmultistep.analysis.problems import eps_fn_for, gaussian
from linmultistep.cli import main
from linmultistep.guards import TOLERATED_SHARE

PROBLEM = gaussian(np.full(16, 0.5), 0.3**2)
DATA = 0.5 + 0.3 * np.random.default_rng(0).standard_normal((4, 16))


def _round_trip(p: float, n: int, dtype) -> tuple[float, list[str]]:
    grid = lm.Grid.from_alphas_cumprod(lm.alphas_cumprod_for("scaled_linear"), n, "leading", steps_offset=1)
    f = eps_fn_for(PROBLEM, grid)
    x0 = DATA.astype(dtype)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with np.errstate(all="ignore"):
            back = lm.sample(f, lm.invert(f, x0, grid, lm.edict(p), check_finite=False), grid, lm.edict(p),
                             check_finite=False)
    said = [str(w.message) for w in caught if issubclass(w.category, lm.PrecisionWarning) and "edict" in str(w.message)]
    return float(np.abs(back.astype(np.float64) - x0).max()), said


def test_the_demo_with_the_customary_p_does_not_warn_about_edict(capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["demo", "--steps", "10", "100", "--dim", "4", "--batch", "2"]) == 0
    assert not [w for w in caught if "edict" in str(w.message)]
    assert "edict(p=0.93)" in capsys.readouterr().out


def test_customary_p_at_100_steps_in_float32_is_silent_and_accurate():
    err, said = _round_trip(0.93, 100, np.float32)
    assert not said
    assert err < TOLERATED_SHARE * np.abs(DATA).max()


def test_customary_p_over_too_many_steps_warns_with_the_steps_this_dtype_holds_not_with_p():
    err, said = _round_trip(0.93, 400, np.float32)
    assert len(said) == 1 and "p^-N" in said[0]
    assert "use p >= 0.9" not in said[0]
    n_max = int(re.search(r"at most (\d+) steps", said[0]).group(1))
    # the dtype's budget: u p^-N <= 1%, N <= log(1% / u) / log(1/p)
    assert n_max == int(400 * (math.log2(TOLERATED_SHARE) + 24) / (400 * math.log2(1 / 0.93)))
    assert not err < TOLERATED_SHARE * np.abs(DATA).max()  # the warning was right (NaN counts as lost)


def test_a_small_p_warns_with_the_customary_range():
    err, said = _round_trip(0.5, 50, np.float32)
    assert len(said) == 1 and "use p >= 0.9 (0.93 customary)" in said[0]
    assert not err < TOLERATED_SHARE * np.abs(DATA).max()
