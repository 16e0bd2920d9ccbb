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


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, bool, np.complex128])
@pytest.mark.parametrize("fn", ["sample", "invert"])
def test_non_float_states_are_refused(dtype, fn):
    x = np.ones((2, 3), dtype=dtype)
    with pytest.raises(TypeError, match=f"floating-point array, got dtype {np.dtype(dtype)}"):
        getattr(lm, fn)(eps, x, GRID, "obelm")


def test_torch_integer_state_is_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="floating-point array, got dtype torch.int64"):
        lm.invert(lambda x, i: x, torch.ones(2, 3, dtype=torch.int64), GRID, "obelm")


@pytest.mark.parametrize("bad", [lambda x, i: np.tanh(x[0]), lambda x, i: 0.5, lambda x, i: np.zeros((1, 3)),
                                 lambda x, i: np.zeros((3, 2))])
def test_network_output_of_another_shape_is_refused(bad):
    with pytest.raises(ValueError, match=r"returned shape .* for a state of shape \(2, 3\)"):
        lm.invert(bad, np.ones((2, 3)), GRID, "obelm")


def test_network_returning_none_or_another_array_type():
    with pytest.raises(TypeError, match="returned None at grid index"):
        lm.sample(lambda x, i: None, np.ones((2, 3)), GRID, "obelm")
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="returned a ndarray .* for a Tensor state"):
        lm.sample(lambda x, i: np.zeros((2, 3)), torch.ones(2, 3, dtype=torch.float64), GRID, "obelm")
    with pytest.raises(TypeError, match="eps_fn must be callable"):
        lm.sample("unet", np.ones((2, 3)), GRID, "obelm")


@given(st.one_of(st.floats(allow_nan=True), st.text(max_size=3), st.booleans()))
def test_num_steps_must_be_an_integer(value):
    with pytest.raises(GridError, match="num_steps must be an integer"):
        lm.Grid.from_alphas_cumprod(AC, value, "leading")


def test_huge_num_steps_is_refused_before_allocating():
    with pytest.raises(GridError, match="num_steps = 1000000000 is more than"):
        lm.Grid.from_alphas_cumprod(AC, 10**9, "leading")
    assert lm.Grid.from_alphas_cumprod(AC, np.int64(20), "leading").N == 20  # numpy integers are integers


def test_cli_version_and_threads(capsys):
    from linmultistep.cli import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"linmultistep {lm.__version__}"
    assert re.search("--threads must be at least 1", cli_error(capsys, ["reconstruct", "--model", "digits", "nothing.safetensors", "-o", "x.png", "--threads", "0"]))
