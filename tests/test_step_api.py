"""The public single-step API, the typed run state, restarts from latents and solutions, deferred
checks and the per-step determinism digests of mode 'bits'."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import linmultistep as lm
from linmultistep import LatentMismatchError, NondeterministicNetworkError, NonFiniteError
from linmultistep.context import StepContext
from linmultistep.fixedpoint import DIGESTS_KEY
from linmultistep.numpy_backend import NumpyBackend
from linmultistep.stepping import finish, start_on, step

GRID = lm.Grid.from_alphas_cumprod(lm.alphas_cumprod_for("scaled_linear"), 12, "leading", steps_offset=1,
                                   final_alpha_one=False)


def eps(x, i):
    return np.tanh(x) * (1 + i / 10) + 0.1 * np.sin(3 * x)


X0 = np.linspace(-1, 1, 12).reshape(3, 4)

CATALOGUE = {
    "ddim": lm.ddim(), "obelm": lm.obelm(), "bdia(1)": lm.bdia(1.0), "bdia(0.8)": lm.bdia(0.8),
    "edict(0.93)": lm.edict(0.93), "edict(0.9)": lm.edict(0.9), "belm(k=3)": lm.belm(k=3),
}  # every method that runs in both directions (Adams-Bashforth has a_k = 0: no inverse)
MODES = {"recurrence": list(CATALOGUE), "stable": ["obelm", "bdia(1)"], "bits": ["obelm", "bdia(1)"]}


def _ctx(grid=GRID, field=eps):
    return StepContext(grid.h, grid.alpha, field, NumpyBackend(), True, str)


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_the_integrator_is_a_loop_over_step(mode, direction):
    """sample/invert equal a hand-written loop over lm.step, bit for bit, with the same network calls."""
    m = lm.resolve_mode("obelm", mode)
    start = X0 if direction == "backward" else np.cos(X0)
    run = lm.start(eps, GRID, m, start, direction)
    seen = []
    while not run.done:
        seen.append(lm.step(run).index)
    window = lm.finish(run)
    if direction == "backward":
        ref = lm.invert(eps, start, GRID, m)
        assert seen == list(range(1, GRID.N + 1))
        assert all(np.array_equal(a, b) for i in ref.window for a, b in zip(ref.window[i], window[i]) if a is not None)
        assert ref.nfe == run.ctx.nfe
    else:
        ref = lm.sample(eps, start, GRID, m)
        assert seen == list(range(GRID.N - 1, -1, -1))
        assert np.array_equal(ref, window[0].x)
    assert repr(run).startswith("<Run obelm")


@given(st.sampled_from(sorted(CATALOGUE)), st.sampled_from(sorted(CATALOGUE)))
def test_a_latent_refuses_every_other_method_of_the_catalogue(a, b):
    ma, mb = CATALOGUE[a], CATALOGUE[b]
    latent = lm.invert(eps, X0, GRID, ma, mode="recurrence")
    if ma.spec == mb.spec:
        back = lm.sample(eps, latent, GRID, mb)
        assert back.shape == X0.shape
    else:
        with pytest.raises(LatentMismatchError):
            lm.sample(eps, latent, GRID, mb)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_a_latent_brings_its_own_method_and_mode(mode):
    """sample(eps_fn, latent, grid) with no method reconstructs with the latent's method (not 'obelm')."""
    for name in MODES[mode]:
        m = lm.resolve_mode(CATALOGUE[name], mode)
        latent = lm.invert(eps, X0, GRID, m)
        back = lm.sample(eps, latent, GRID)
        if m.spec.name != "ddim" and name != "belm(k=3)":  # the optimal 3-step BELM is not zero-stable
            assert np.abs(back - X0).max() < 1e-9, name
        cont = lm.invert(eps, lm.invert(eps, X0, GRID, m, stop=5), GRID)  # a partial latent, continued
        assert cont.mode == latent.mode and cont.method == latent.method
        assert all(np.array_equal(cont.window[i].x, latent.window[i].x) for i in latent.window), name


def test_solve_reverses_the_solution_it_returned():
    ts = np.linspace(0.0, 1.0, 21)
    sol = lm.solve(lambda t, y: -y + np.sin(t), np.array([1.0, 2.0]), ts, lm.obelm())
    back = lm.solve(lambda t, y: -y + np.sin(t), sol, ts, reverse=True)  # no method restated
    assert np.abs(back.y - np.array([1.0, 2.0])).max() < 1e-12
    with pytest.raises(LatentMismatchError):
        lm.solve(lambda t, y: -y, sol, ts, lm.bdia(0.5), reverse=True)


@pytest.mark.parametrize("mode", ["stable", "bits"])
def test_open_entries_make_the_same_latent_with_the_same_network_calls(mode):
    """The forms' inversion consumes the model output at the START of the next step; a run stopped
    before the noise end closes its last entry: partial + rest == whole, N (+1 bits self-check) calls."""
    m = lm.resolve_mode("obelm", mode)
    whole = lm.invert(eps, X0, GRID, m)
    assert whole.nfe == GRID.N + (1 if mode == "bits" else 0)
    for stop in range(1, GRID.N):
        part = lm.invert(eps, X0, GRID, m, stop=stop)
        assert all(getattr(part.window[i], "v" if mode == "stable" else "V") is not None for i in part.window)
        rest = lm.invert(eps, part, GRID)
        # the partial run's close made the call the whole run makes at `stop`; mode 'bits' re-checks the
        # network's determinism on the first increment a continued inversion computes (if any)
        assert rest.nfe - whole.nfe in ((0, 1) if mode == "bits" else (0,))
        for i in whole.window:
            for a, b in zip(whole.window[i], rest.window[i]):
                assert (a is None and b is None) or np.array_equal(a, b)


@pytest.mark.bad_input("5 exactness")
def test_incomplete_latents_are_refused():
    m = lm.resolve_mode("obelm", "stable")
    latent = lm.invert(eps, X0, GRID, m)
    one = lm.State({GRID.N: latent.window[GRID.N]}, latent.method, latent.fingerprint, latent.mode)
    with pytest.raises(LatentMismatchError, match="incomplete"):
        lm.sample(eps, one, GRID)
    hole = dict(latent.window)
    hole[GRID.N - 1] = hole[GRID.N - 1]._replace(v=None)
    with pytest.raises(LatentMismatchError, match="lacks part 'v'"):
        lm.sample(eps, lm.State(hole, latent.method, latent.fingerprint, latent.mode), GRID)


def test_forms_start_mid_way_in_the_core():
    """A 'stable' run from a plain array below the noise end starts with one DDIM step (v above = 0),
    as the recurrence's starter does: the two agree to rounding."""
    got = {}
    for mode in ("recurrence", "stable"):
        m = lm.resolve_mode("obelm", mode)
        ctx = _ctx()
        run = start_on(ctx, m, {7: np.cos(X0)}, "forward", 0)
        while not run.done:
            step(run)
        got[mode] = finish(run)[0].x
    assert np.abs(got["stable"] - got["recurrence"]).max() < 1e-12


def _failure(field, mode: str, every: int, grid=GRID) -> str:
    ctx = StepContext(grid.h, grid.alpha, field, NumpyBackend(), True, lambda i: f"point {i}", check_every=every)
    run = start_on(ctx, lm.resolve_mode("obelm", mode), {grid.N: np.cos(X0)}, "forward", 0)
    with np.errstate(all="ignore"), pytest.raises(NonFiniteError) as err:
        while not run.done:
            step(run)
        finish(run)
    return str(err.value)


@pytest.mark.parametrize("mode", ["recurrence", "stable"])
@pytest.mark.parametrize("every", [1, 4])
def test_a_nan_is_reported_with_the_first_bad_index_even_when_checked_late(every, mode):
    bad_at = 6

    def field(x, i):
        return np.full_like(x, np.nan) if i == bad_at else eps(x, i)

    assert f"returned NaN or infinity at grid index {bad_at} " in _failure(field, mode, every)


@pytest.mark.parametrize("mode", ["recurrence", "stable"])
def test_the_first_overflowing_state_is_named_however_often_the_checks_are_read(mode):
    """Mode 'stable' probes only the state before each read (a non-finite xbar stays non-finite) and
    finds the first bad state among the ones kept since: the report must equal probing every step."""
    def field(x, i):
        return np.full_like(x, 1e308) if i >= 5 else eps(x, i)  # finite, but the state overflows

    got = {every: _failure(field, mode, every) for every in (1, 3, 4, 8, 100)}
    assert len(set(got.values())) == 1 and "the state became NaN or infinite at grid index" in got[1]


def test_a_run_finished_between_reads_still_names_its_first_bad_state():
    def field(x, i):
        return np.full_like(x, 1e308) if i >= 5 else eps(x, i)

    ctx = StepContext(GRID.h, GRID.alpha, field, NumpyBackend(), True, lambda i: f"point {i}", check_every=100)
    run = start_on(ctx, lm.resolve_mode("obelm", "stable"), {GRID.N: np.cos(X0)}, "forward", 0)
    for _ in range(GRID.N - 2):  # stop two points short of the data end: no read has happened yet
        step(run)
    with np.errstate(all="ignore"), pytest.raises(NonFiniteError, match="the state became NaN or infinite at grid "
                                                  r"index \d+ \(point \d+\) in a forward step"):
        finish(run)


def test_stable_runs_probe_states_only_before_reads_where_non_finite_values_persist():
    ctx = _ctx()
    assert start_on(ctx, lm.resolve_mode("obelm", "stable"), {GRID.N: X0}, "forward", 0).probes == "due"
    assert start_on(_ctx(), lm.resolve_mode("obelm", "bits"), {GRID.N: X0}, "forward", 0).probes == "none"
    assert start_on(_ctx(), lm.obelm(), {GRID.N: X0}, "forward", 0).probes == "every"
    # a grid with alpha > 1: x = alpha xbar could overflow where xbar does not, so every state is probed
    big = lm.Grid(GRID.alpha * 4.0, GRID.sigma)
    assert start_on(_ctx(big), lm.resolve_mode("obelm", "stable"), {big.N: X0}, "forward", 0).probes == "every"


def test_a_state_that_overflows_is_blamed_on_rounding_not_on_the_network():
    def field(x, i):
        return np.full_like(x, 1.5e308)  # always finite: only the state can overflow

    with pytest.raises(NonFiniteError, match="the state became NaN or infinite at grid index"):
        lm.sample(field, np.ones(3), GRID, "ddim")


def test_bits_digests_catch_a_network_that_drifts_late():
    """The inversion records a checksum of every quantised increment; a network that changes at a later
    step is named at that step (the first-step dV check alone would not see it)."""
    m = lm.resolve_mode("obelm", "bits")
    latent = lm.invert(eps, X0, GRID, m)
    assert sorted(int(k) for k in latent.metadata[DIGESTS_KEY]) == list(range(1, GRID.N))
    assert np.array_equal(lm.sample(eps, latent, GRID), latent_data(latent))

    def drifted(x, i):
        out = eps(x, i)
        return out + 1e-7 * (i == 3)

    with pytest.raises(NondeterministicNetworkError, match="grid index 3 "):
        lm.sample(drifted, latent, GRID)


def latent_data(latent):
    """The data the bits latent came from, as the fixed-point grid holds it (its exact reconstruction)."""
    return lm.sample(eps, latent, GRID)


def test_bits_digests_are_per_batch_row():
    m = lm.resolve_mode("obelm", "bits")
    latent = lm.invert(eps, X0, GRID, m)
    rows = [lm.invert(eps, X0[j:j + 1], GRID, m) for j in range(X0.shape[0])]
    for k, v in latent.metadata[DIGESTS_KEY].items():
        assert v == [r.metadata[DIGESTS_KEY][k][0] for r in rows]


@pytest.mark.bad_input("5 exactness")
def test_deterministic_switch_is_shared_by_threads():
    torch = pytest.importorskip("torch")
    from linmultistep.backends.torch import deterministic

    before = torch.are_deterministic_algorithms_enabled()
    inside, release = threading.Event(), threading.Event()
    states = []

    def long_run():
        with deterministic():
            inside.set()
            release.wait(5)
            states.append(torch.are_deterministic_algorithms_enabled())

    t = threading.Thread(target=long_run)
    t.start()
    inside.wait(5)
    with deterministic():  # a second run starts and ENDS while the first is still inside
        pass
    states.append(torch.are_deterministic_algorithms_enabled())  # the first run's switch is still on
    release.set()
    t.join()
    assert states == [True, True]
    assert torch.are_deterministic_algorithms_enabled() == before  # restored once both left


@pytest.mark.bad_input("7 numerical range")
def test_precision_warnings_outside_the_safe_ranges():
    with pytest.warns(lm.PrecisionWarning, match="EDICT"):
        lm.invert(eps, X0, GRID, lm.edict(1e-6))
    wide = lm.Grid.from_alphas_cumprod(lm.alphas_cumprod_for("scaled_linear"), 200, "leading", steps_offset=1)
    with pytest.warns(lm.PrecisionWarning, match="gamma"):
        lm.invert(eps, X0, wide, lm.bdia(0.5), mode="recurrence")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", lm.PrecisionWarning)
        lm.invert(eps, X0, GRID, lm.edict(0.93))
        lm.invert(eps, X0, wide, "obelm")


def test_long_starter_chains_build_without_recursion():
    assert lm.adams_bashforth(12).k == 12 and len(lm.adams_bashforth(12).chain()) == 12
    with pytest.raises(lm.MethodError, match="1 <= k <= 12"):
        lm.adams_bashforth(2000)
    with pytest.raises(lm.GridError, match="stop must be an integer"):
        lm.invert(eps, X0, GRID, "obelm", stop=3.7)
    with pytest.raises(ValueError, match="empty"):
        lm.invert(eps, np.zeros((0, 4)), GRID)
