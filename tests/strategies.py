"""Hypothesis strategies and small ground-truth problems shared by the core tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import linmultistep as lm

SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
SPACINGS = ("linspace", "leading", "trailing")


@st.composite
def random_grids(draw, min_steps: int = 2, max_steps: int = 200, max_ratio: float = 10.0) -> lm.Grid:
    """Variance-preserving grids with random increasing sigmabar (neighbouring steps within max_ratio)."""
    n = draw(st.integers(min_steps, max_steps))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    steps = rng.uniform(1.0, max_ratio, n)
    top = draw(st.floats(0.5, 20.0))
    sb = np.concatenate([[0.0], np.cumsum(steps)])
    sb = sb / sb[-1] * top
    if draw(st.booleans()):  # a grid whose data end is not the clean point
        sb = sb + draw(st.floats(1e-3, 0.5))
    return lm.Grid.from_sigmabar(sb)


@st.composite
def diffusers_grids(draw, min_steps: int = 3, max_steps: int = 200) -> lm.Grid:
    """Grids built the way diffusers' DDIMScheduler builds them."""
    schedule = draw(st.sampled_from(SCHEDULES))
    spacing = draw(st.sampled_from(SPACINGS))
    n = draw(st.integers(min_steps, max_steps))
    offset = 1 if spacing == "leading" and draw(st.booleans()) else 0
    ac = lm.alphas_cumprod_for(schedule, beta_start=1e-4, beta_end=0.02) if schedule == "linear" \
        else lm.alphas_cumprod_for(schedule)
    return lm.Grid.from_alphas_cumprod(ac, n, spacing, steps_offset=offset, final_alpha_one=draw(st.booleans()))


any_grid = st.one_of(random_grids(), diffusers_grids())


class MLPEps:
    """A smooth nonlinear, time-dependent stand-in for a noise-prediction network."""

    def __init__(self, dim: int, seed: int, width: int = 16) -> None:
        rng = np.random.default_rng(seed)
        self.w1 = rng.standard_normal((dim, width)) / np.sqrt(dim)
        self.w2 = rng.standard_normal((width, dim)) / np.sqrt(width)
        self.c = rng.standard_normal(width)

    def __call__(self, x: np.ndarray, i: int) -> np.ndarray:
        return np.tanh(x @ self.w1 + 0.05 * i * self.c) @ self.w2


@st.composite
def networks_and_data(draw, dtype=np.float64):
    shape = draw(st.lists(st.integers(1, 4), min_size=0, max_size=2)) + [draw(st.integers(1, 8))]
    seed = draw(st.integers(0, 2**32 - 1))
    net = MLPEps(shape[-1], seed)
    x0 = np.random.default_rng(seed + 1).standard_normal(shape).astype(dtype)
    return net, x0


def gaussian_problem(grid: lm.Grid, dim: int, mean: float = 0.5, std: float = 0.3):
    """eps_fn of data N(mean, std^2 I) in R^dim and the exact probability-flow map x_N -> x_0."""
    from linmultistep.analysis.problems import eps_fn_for, gaussian

    problem = gaussian(np.full(dim, mean), std**2)
    a, s = grid.alpha, grid.sigmabar
    return eps_fn_for(problem, grid), lambda xN: a[0] * problem.flow_closed_form(xN / a[-1], s[-1], s[0])


def rel_err(a, b) -> float:
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a64 - b64).max() / max(np.abs(b64).max(), 1e-300))


def cli_error(capsys, argv: list) -> str:
    """Run the command line expecting a user error: exit code 2 and ONE line on stderr naming it
    (no traceback); returns that line."""
    from linmultistep.cli import main

    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2, f"exit code {code}, stderr {err}"
    assert len(err) == 1 and ": error: " in err[0] and "Traceback" not in err[0], err
    return err[0]


def sd_grid(n: int) -> lm.Grid:
    """Stable Diffusion's schedule (scaled_linear, 'leading', offset 1) with n steps."""
    return lm.Grid.from_alphas_cumprod(lm.alphas_cumprod_for("scaled_linear"), n, "leading", steps_offset=1,
                                       final_alpha_one=False)


def smooth_field(lib):
    """A smooth bounded eps(x, i) written with ``lib``'s functions (numpy or torch): nonlinear in x, so a
    step's rounding depends on every operation."""

    def eps(x, i):
        return lib.tanh(0.8 * x + 0.01 * i) * 0.9 + 0.05 * lib.sin(3 * x)

    return eps
