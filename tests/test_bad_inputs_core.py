"""Bad input to the core gets a clear error naming what is wrong, never a silent wrong result."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import linmultistep as lm
from linmultistep import GridError
from strategies import cli_error  # noqa: E402

AC = lm.alphas_cumprod_for("scaled_linear")
GRID = lm.Grid.from_alphas_cumprod(AC, 10, "leading", steps_offset=1, final_alpha_one=False)


def eps(x, i):
    return np.tanh(x)


@pytest.mark.bad_input("3 arithmetic")
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, bool, np.complex128])
@pytest.mark.parametrize("fn", ["sample", "invert"])
def test_non_float_states_are_refused(dtype, fn):
    x = np.ones((2, 3), dtype=dtype)
    with pytest.raises(TypeError, match=f"floating-point array, got dtype {np.dtype(dtype)}"):
        getattr(lm, fn)(eps, x, GRID, "obelm")


@pytest.mark.bad_input("3 arithmetic")
def test_torch_integer_state_is_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="floating-point array, got dtype torch.int64"):
        lm.invert(lambda x, i: x, torch.ones(2, 3, dtype=torch.int64), GRID, "obelm")


@pytest.mark.bad_input("3 arithmetic")
@pytest.mark.parametrize("bad", [lambda x, i: np.tanh(x[0]), lambda x, i: np.float64(0.5), lambda x, i: np.zeros((1, 3)),
                                 lambda x, i: np.zeros((3, 2))])
def test_network_output_of_another_shape_is_refused(bad):
    with pytest.raises(ValueError, match=r"returned shape .* for a state of shape \(2, 3\)"):
        lm.invert(bad, np.ones((2, 3)), GRID, "obelm")


@pytest.mark.bad_input("9 unclear errors")
def test_network_returning_none_or_another_array_type():
    with pytest.raises(TypeError, match="returned None at grid index"):
        lm.sample(lambda x, i: None, np.ones((2, 3)), GRID, "obelm")
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="returned a ndarray .* for a Tensor state"):
        lm.sample(lambda x, i: np.zeros((2, 3)), torch.ones(2, 3, dtype=torch.float64), GRID, "obelm")
    with pytest.raises(TypeError, match="eps_fn must be callable"):
        lm.sample("unet", np.ones((2, 3)), GRID, "obelm")


@pytest.mark.bad_input("8 coercions")
@given(st.one_of(st.floats(allow_nan=True), st.text(max_size=3), st.booleans()))
def test_num_steps_must_be_an_integer(value):
    with pytest.raises(GridError, match="num_steps must be an integer"):
        lm.Grid.from_alphas_cumprod(AC, value, "leading")


@pytest.mark.bad_input("2 resources")
def test_huge_num_steps_is_refused_before_allocating():
    with pytest.raises(GridError, match="num_steps = 1000000000 is more than"):
        lm.Grid.from_alphas_cumprod(AC, 10**9, "leading")
    assert lm.Grid.from_alphas_cumprod(AC, np.int64(20), "leading").N == 20  # numpy integers are integers


@pytest.mark.bad_input("10 cli")
def test_cli_version_and_threads(capsys):
    from linmultistep.cli import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"linmultistep {lm.__version__}"
    assert re.search("--threads must be at least 1", cli_error(capsys, ["reconstruct", "--model", "digits", "nothing.safetensors", "-o", "x.png", "--threads", "0"]))


@pytest.mark.bad_input("2 resources")
@pytest.mark.parametrize("n", [10**9, 4001, 2**63 - 1])
def test_step_counts_beyond_the_schedule_are_refused_before_allocating(n):
    with pytest.raises(GridError, match="is more than the schedule"):
        lm.Grid.from_alphas_cumprod(AC, n, "linspace")


METHOD_ARGUMENTS = [
    (lambda: lm.belm(k=2.5), "k must be a positive integer"),
    (lambda: lm.belm(k=0), "k=0"),
    (lambda: lm.belm(k="2"), "k must be a positive integer"),
    (lambda: lm.belm(k=True), "k must be a positive integer"),
    (lambda: lm.adams_bashforth(k=2000), "1 <= k <= 12"),
    (lambda: lm.adams_bashforth(k=13), "1 <= k <= 12"),
    (lambda: lm.edict(p=0), r"p must be in \(0, 1\]"),
    (lambda: lm.edict(p=1.5), r"p must be in \(0, 1\]"),
    (lambda: lm.edict(p=float("nan")), r"p must be in \(0, 1\]"),
    (lambda: lm.bdia(gamma=0.0), "gamma"),
    (lambda: lm.bdia(gamma=-1.0), "gamma"),
    (lambda: lm.bdia(gamma=float("nan")), "gamma"),
    (lambda: lm.get_method("obelmm"), "obelmm"),
    (lambda: lm.resolve_mode("obelm", "exact"), "exact"),
    (lambda: lm.resolve_mode("edict", "stable"), "stable"),
]


@pytest.mark.bad_input("8 coercions")
@pytest.mark.parametrize("make,match", METHOD_ARGUMENTS, ids=[f"method{k}" for k in range(len(METHOD_ARGUMENTS))])
def test_bad_method_arguments_are_refused_not_truncated(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


@pytest.mark.bad_input("8 coercions")
@pytest.mark.parametrize("stop", [3.7, "3", -1, 0, GRID.N + 1, True])
def test_bad_stop_indices_are_refused(stop):
    with pytest.raises(GridError, match="stop"):
        lm.invert(eps, np.ones((2, 3)), GRID, "obelm", stop=stop)


@pytest.mark.bad_input("9 unclear errors")
@pytest.mark.parametrize("x,exc,match", [
    (np.zeros((0, 3)), ValueError, "empty"),
    ([[1.0, 2.0]], TypeError, "floating-point array"),
    (np.array([[np.nan, 1.0]]), ValueError, "NaN or infinity"),
    (np.array([[np.inf, 1.0]]), ValueError, "NaN or infinity"),
    (None, TypeError, "floating-point array"),
])
def test_bad_data_is_named(x, exc, match):
    with pytest.raises(exc, match=match):
        lm.invert(eps, x, GRID, "obelm")


@pytest.mark.bad_input("9 unclear errors")
@pytest.mark.parametrize("grid", ["10", None, np.linspace(0, 1, 5)])
def test_a_grid_of_another_type_is_named(grid):
    with pytest.raises(TypeError, match="grid"):
        lm.invert(eps, np.ones((2, 3)), grid, "obelm")


@pytest.mark.bad_input("9 unclear errors")
def test_a_network_that_fails_part_way_reports_the_grid_index_and_changes_nothing():
    x = np.ones((2, 3))
    keep = x.copy()

    def nan_later(y, i):
        return np.tanh(y) if i < 5 else np.full_like(y, np.nan)

    with pytest.raises(lm.NonFiniteError, match="grid index 5"):
        lm.invert(nan_later, x, GRID, "obelm")
    assert np.array_equal(x, keep)


@pytest.mark.bad_input("7 numerical range")
@pytest.mark.parametrize("p,n", [(1e-6, 10), (0.3, 50)])
def test_edict_with_a_small_p_warns_with_the_growth(p, n):
    with pytest.warns(lm.PrecisionWarning, match=r"p\^-N"):
        lm.invert(eps, np.ones((2, 3)), lm.Grid.from_alphas_cumprod(AC, n), lm.edict(p))


@pytest.mark.bad_input("7 numerical range")
@pytest.mark.parametrize("gamma", [0.1, 0.5])
def test_bdia_gamma_below_one_warns_with_gamma_to_the_minus_n(gamma):
    grid = lm.Grid.from_alphas_cumprod(AC, 200)
    with pytest.warns(lm.PrecisionWarning, match=r"gamma\^-N"):
        lm.invert(eps, np.ones((2, 3)), grid, lm.bdia(gamma), mode="recurrence")


@pytest.mark.bad_input("7 numerical range")
def test_safe_ranges_do_not_warn():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", lm.PrecisionWarning)
        for m in (lm.edict(0.93), lm.bdia(1.0), "obelm"):
            lm.invert(eps, np.ones((2, 3)), lm.Grid.from_alphas_cumprod(AC, 50), m)


@pytest.mark.bad_input("5 exactness")
def test_a_latent_with_a_window_entry_or_part_missing_is_refused():
    latent = lm.invert(eps, np.ones((2, 3)), GRID, "obelm", mode="stable")
    for drop in latent.window:
        partial = lm.State({i: e for i, e in latent.window.items() if i != drop}, latent.method, latent.fingerprint,
                           latent.mode)
        with pytest.raises(lm.LatentMismatchError, match="incomplete|window"):
            lm.sample(eps, partial, GRID)
    for part in ("xbar", "v"):
        hole = dict(latent.window)
        hole[GRID.N - 1] = hole[GRID.N - 1]._replace(**{part: None})
        with pytest.raises(lm.LatentMismatchError, match=f"lacks part '{part}'"):
            lm.sample(eps, lm.State(hole, latent.method, latent.fingerprint, latent.mode), GRID)


@pytest.mark.bad_input("5 exactness")
@pytest.mark.parametrize("at", [1, 5, 9])
def test_bits_mode_names_the_first_step_where_the_network_drifted(at):
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)  # float32: on the fixed-point grid
    latent = lm.invert(eps, x, GRID, "obelm", mode="bits")

    def drifted(y, i):
        out = np.tanh(y)
        return out + 1e-7 if i == at else out

    with pytest.raises(lm.NondeterministicNetworkError, match=f"grid index {at}"):
        lm.sample(drifted, latent, GRID)
    assert np.array_equal(lm.sample(eps, latent, GRID), x)


@pytest.mark.bad_input("4 companions")
@pytest.mark.parametrize("other", [
    lambda: lm.Grid.from_alphas_cumprod(AC, 11, "leading", steps_offset=1, final_alpha_one=False),
    lambda: lm.Grid.from_alphas_cumprod(AC, 10, "trailing", final_alpha_one=False),
    lambda: lm.Grid.from_alphas_cumprod(AC, 10, "leading", steps_offset=1, final_alpha_one=True),
])
def test_a_latent_is_refused_on_another_grid(other):
    latent = lm.invert(eps, np.ones((2, 3)), GRID, "obelm")
    with pytest.raises(lm.LatentMismatchError, match="grid"):
        lm.sample(eps, latent, other())


@pytest.mark.bad_input("4 companions")
@pytest.mark.parametrize("method", ["bdia", "edict", "ddim", lm.belm(rule=lm.rules.bdia(0.5)), lm.bdia(0.9)])
def test_a_latent_is_refused_with_another_method(method):
    latent = lm.invert(eps, np.ones((2, 3)), GRID, "obelm")
    with pytest.raises(lm.LatentMismatchError):
        lm.sample(eps, latent, GRID, method)


# --- issue 19: values truncated, errors that named the wrong thing --------------------------------------
@pytest.mark.bad_input("3 arithmetic")
def test_a_complex_grid_is_refused_not_truncated():
    sb = np.linspace(0.0, 2.0, 6)
    with pytest.raises(GridError, match=r"sigmabar is complex \(complex128\)"):
        lm.Grid.from_sigmabar(sb + 0j)
    with pytest.raises(GridError, match=r"alpha is complex"):
        lm.Grid(np.ones(3) + 0j, np.linspace(0.1, 1.0, 3))


@pytest.mark.bad_input("3 arithmetic")
@pytest.mark.parametrize("fn", ["sample", "invert"])
def test_a_network_returning_complex_values_is_refused_not_truncated(fn):
    with pytest.raises(TypeError, match=r"returned complex values \(complex128\) at grid index \d+"):
        getattr(lm, fn)(lambda x, i: np.tanh(x) + 1e-3j, np.ones((2, 3)), GRID, "obelm")


@pytest.mark.bad_input("3 arithmetic")
def test_a_torch_network_returning_complex_values_is_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"returned complex values \(torch.complex128\)"):
        lm.sample(lambda x, i: x.to(torch.complex128), torch.ones(2, 3, dtype=torch.float64), GRID, "obelm")


@pytest.mark.bad_input("9 unclear errors")
@pytest.mark.parametrize("out, name", [(lambda x, i: list(x), "list"), (lambda x, i: 0.5, "float"),
                                       (lambda x, i: x.tolist(), "list")])
def test_a_network_returning_a_list_or_a_number_is_named(out, name):
    with pytest.raises(TypeError, match=rf"returned a {name} at grid index 10 .* shape \(2, 3\)"):
        lm.sample(out, np.ones((2, 3)), GRID, "obelm")


@pytest.mark.bad_input("9 unclear errors")
@pytest.mark.parametrize("name, params, what", [("bdia", {"gamma": "x"}, "BDIA gamma"), ("bdia", {"gamma": "0.5"}, "BDIA gamma"),
                                                ("edict", {"p": "x"}, "EDICT p"), ("bdia", {"gamma": 0.5 + 0j}, "BDIA gamma")])
def test_a_method_parameter_that_is_not_a_number_is_named(name, params, what):
    with pytest.raises(lm.MethodError, match=rf"{what} must be a real number, got"):
        lm.get_method(name, **params)


@pytest.mark.bad_input("9 unclear errors")
@pytest.mark.parametrize("fn", ["sample", "invert"])
def test_a_callback_that_is_not_callable_is_named_before_any_work(fn):
    calls = []

    def net(x, i):
        calls.append(i)
        return np.tanh(x)

    with pytest.raises(TypeError, match=r"callback must be callable .* got 5 \(int\)"):
        getattr(lm, fn)(net, np.ones((2, 3)), GRID, "obelm", callback=5)
    assert calls == []


@pytest.mark.bad_input("9 unclear errors")
def test_grid_indices_beyond_the_grid_are_named():
    from linmultistep.stepping import start

    for direction, stop in [("forward", -1), ("backward", GRID.N + 1), ("backward", 3.5)]:
        with pytest.raises(GridError, match=rf"stop must be a grid index in 0..N = {GRID.N} of this grid, got"):
            start(eps, GRID, "obelm", np.ones(3), direction, stop=stop)
    from linmultistep.context import StepContext
    from linmultistep.numpy_backend import NumpyBackend
    from linmultistep.stepping import start_on

    ctx = StepContext(GRID.h, GRID.alpha, eps, NumpyBackend())
    with pytest.raises(GridError, match=rf"an index of the start window must be a grid index in 0..N = {GRID.N}"):
        start_on(ctx, lm.get_method("obelm"), {GRID.N + 2: np.ones(3), GRID.N + 1: np.ones(3)}, "forward", 0)


@pytest.mark.bad_input("5 exactness")
@pytest.mark.parametrize("fn", ["sample", "invert"])
def test_nan_in_mode_bits_is_named_as_nan_not_as_a_non_deterministic_network(fn):
    """NaN != NaN: the determinism self-check of an inversion's first input must not blame the network's
    determinism for a NaN it returned."""
    with pytest.raises(lm.NonFiniteError, match=r"returned NaN or infinity at grid index \d+"):
        getattr(lm, fn)(lambda x, i: np.full_like(x, np.nan), np.ones((2, 3)), GRID, "obelm", mode="bits")


@pytest.mark.bad_input("7 numerical range")
def test_precision_warnings_point_at_the_callers_line():
    with pytest.warns(lm.PrecisionWarning) as record:
        lm.invert(eps, np.ones((2, 3), np.float32), lm.Grid.from_alphas_cumprod(AC, 20), lm.edict(0.5))
    assert record[0].filename == __file__


def test_bdia_sampling_from_noise_on_a_long_first_step_warns_once_with_the_alternative():
    """BDIA(gamma = 1) carries the first (starter) step's error undamped (a_2 = 1). Checked against the exact
    flow of a Gaussian: where the warning fires, O-BELM from the same noise is the more accurate sampler."""
    s = 0.5
    grid = lm.Grid.from_alphas_cumprod(AC, 30, "leading", steps_offset=1, final_alpha_one=False)

    def gauss(x, i):  # E[eps | x_t] for data ~ N(0, s^2)
        return grid.sigma[i] * x / (grid.alpha[i] ** 2 * s * s + grid.sigma[i] ** 2)

    xN = np.linspace(-2.0, 2.0, 7)
    exact = s * xN / np.sqrt(grid.alpha[-1] ** 2 * s * s + grid.sigma[-1] ** 2)
    with pytest.warns(lm.PrecisionWarning, match=r"sampling from noise with bdia\(gamma=1.0\).*use O-BELM") as rec:
        x_bdia = lm.sample(gauss, xN, grid, "bdia")
    assert rec[0].filename == __file__
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x_obelm = lm.sample(gauss, xN, grid, "obelm")  # O-BELM: no warning
        lm.sample(gauss, xN, grid, "bdia")  # once per method and grid
        lm.sample(gauss, lm.invert(gauss, exact, grid, "bdia"), grid)  # a latent: no starter, no warning
    assert np.abs(x_obelm - exact).max() < np.abs(x_bdia - exact).max()
