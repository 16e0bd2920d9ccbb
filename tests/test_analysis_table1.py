"""Table 1 by computation, EDICT's local error against the core implementation, growth, search, CLI."""

import numpy as np
import pytest
import sympy as sp

from linmultistep import Grid, alphas_cumprod_for, get_method, solve
from linmultistep.analysis import derive_belm, grid_growth, is_zero_stable
from linmultistep.analysis.edict import edict_x_error
from linmultistep.analysis.search import zero_stable_family
from linmultistep.analysis.table1 import format_table1, table1


@pytest.fixture(scope="module")
def rows():
    return {r.name: r for r in table1()}


def test_table1_orders_and_alpha_factors(rows):
    # seed Table 1: DDIM O(alpha h^2), BDIA O(alpha (h_i+h_{i+1})^2), O-BELM O(alpha (h_i+h_{i+1})^3)
    assert rows["DDIM"].error.order == 2 and rows["DDIM"].error.alpha_power == 1
    assert rows["BDIA(gamma)"].error.order == 2 and rows["BDIA(gamma)"].error.alpha_power == 1
    assert rows["O-BELM"].error.order == 3 and rows["O-BELM"].error.alpha_power == 1
    assert [rows[n].exact_inversion for n in ("DDIM", "EDICT(p)", "BDIA(gamma)", "O-BELM")] == [False, True, True, True]
    text = format_table1(list(rows.values()))
    assert "O(alpha_{i-1} (h_i+h_{i+1})^3)" in text


def test_edict_local_error_is_second_order_like_the_core_implementation(rows):
    """The computed EDICT error is O(h^2) (the seed says O(sqrt(alpha) h)); the core's EDICT
    step on y' = y (alpha = 1, F = y) has one-step error ((2p-1)/2) h^2 to leading order."""
    err = rows["EDICT(p)"].error
    assert err.order == 2
    by_name = {s.name: s for s in err.leading.free_symbols}
    for p in (0.93, 0.6):
        vals = {"F_00": 1, "X": 1, "F_10": 1, "F_01": 0, "alpha": 1, "alpha_1": 0, "h_i": 1, "p": p}
        coeff = float(err.leading.subs({by_name[n]: v for n, v in vals.items() if n in by_name}))
        h = 2e-3
        s = solve(lambda t, y: y, np.array([1.0]), [0.0, h], get_method("edict", p=p))
        measured = (np.exp(h) - s.y[0]) / h**2
        assert measured == pytest.approx(coeff, rel=5e-3)


def test_edict_zero_stable_forward_but_not_inverse():
    v = is_zero_stable(get_method("edict", p=0.93))
    assert v and not v.inversion  # the inverse step map has eigenvalue 1/p^2 > 1


def test_obelm_inversion_growth_telescopes():
    ac = alphas_cumprod_for("scaled_linear", 1000)
    grid = Grid.from_alphas_cumprod(ac, 50)
    g = grid_growth(get_method("obelm"), grid)
    h = grid.h
    # prod_{i=1}^{N-1} 1/a_{i,2} = prod h_{i+1}^2 / h_i^2 = (h_N / h_1)^2
    assert g.inversion_det_product == pytest.approx((h[-1] / h[1]) ** 2, rel=1e-9)
    assert g.inversion_worst >= g.inversion_det_product ** 0.5 and np.isfinite(g.sampling_worst)


def test_three_step_order3_family_has_no_zero_stable_member():
    res = zero_stable_family(derive_belm(3, order=3))
    assert not res and res.exact
    # independent spot checks with numpy: some root outside the disk, or a double root at 1
    rho_of = sp.lambdify(sp.Symbol("a_3"), sp.Poly(res.rho, sp.Symbol("z")).all_coeffs())
    for c in np.linspace(-3, 3, 61):
        mods = np.sort(np.abs(np.roots(np.array(rho_of(c), dtype=float))))
        assert mods[-1] > 1 + 1e-9 or mods[-2] > 1 - 1e-6


def test_four_step_order4_member_zero_stable_both_directions():
    d = derive_belm(4, order=4)
    v = is_zero_stable(d, params={"a_4": 1, "a_3": 1})
    assert v and v.both_directions
    roots = np.roots([1.0] + [-float(x) for x in d.uniform().subs({"a_4": 1, "a_3": 1}).a])
    assert np.abs(roots) == pytest.approx(np.ones(4), abs=1e-9)


def test_cli_derive(capsys):
    from linmultistep.cli import main

    assert main(["derive", "--k", "3"]) == 0
    out = capsys.readouterr().out
    assert "NOT zero-stable" in out and "a_i,3" in out and "h_i2" in out
    assert main(["derive", "--k", "2", "--latex"]) == 0
    assert r"a_{i,2}" in capsys.readouterr().out
