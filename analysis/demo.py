"""`linmultistep demo`: every sampler on a problem with a closed-form answer.

Data x0 ~ N(m, c^2 I). In scaled coordinates xbar ~ N(m, (c^2 + sigmabar^2) I), so the exact
noise prediction is epsbar = sigmabar (xbar - m) / (c^2 + sigmabar^2) and the probability-flow
ODE has the solution xbar(s) - m = (xbar(S) - m) sqrt((c^2 + s^2) / (c^2 + S^2)).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from .diffusion import invert, sample
from .grid import Grid
from .methods import get_method
from .schedules import alphas_cumprod_for

METHODS = (("ddim", {}), ("edict", {"p": 0.93}), ("bdia", {"gamma": 1.0}), ("obelm", {}))


def gaussian_eps(grid: Grid, mean: float, std: float):
    """eps_fn(x, i) of data N(mean, std^2 I) on ``grid`` (x in model coordinates)."""

    def eps_fn(x: np.ndarray, i: int) -> np.ndarray:
        a, sb = grid.alpha[i], grid.sigmabar[i]
        return sb * (x / a - mean) / (std**2 + sb**2)

    return eps_fn


def exact_x0(xN: np.ndarray, grid: Grid, mean: float, std: float) -> np.ndarray:
    """The probability-flow ODE's exact data-end point from x_N (model coordinates)."""
    S, s0 = grid.sigmabar[-1], grid.sigmabar[0]
    xbar0 = mean + (xN / grid.alpha[-1] - mean) * np.sqrt((std**2 + s0**2) / (std**2 + S**2))
    return grid.alpha[0] * xbar0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 100], help="numbers of steps N")
    parser.add_argument("--dim", type=int, default=64, help="data dimension")
    parser.add_argument("--batch", type=int, default=16, help="samples per run")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    mean, std = 0.5, 0.3
    ac = alphas_cumprod_for("scaled_linear")
    noise = rng.standard_normal((args.batch, args.dim))
    data = mean + std * rng.standard_normal((args.batch, args.dim))
    print("Gaussian data N(0.5, 0.3^2 I), Stable Diffusion schedule, 'leading' spacing, offset 1")
    print("error: max |x0 - exact ODE solution| from the same noise; round trip: max relative |sample(invert(x0)) - x0|")
    print(f"{'method':<16}{'N':>5}{'NFE':>6}{'error':>11}{'rt float64':>12}{'rt float32':>12}{'time s':>8}")
    for name, params in METHODS:
        method = get_method(name, **params)
        for n in args.steps:
            t0 = time.perf_counter()
            grid = Grid.from_alphas_cumprod(ac, n, "leading", steps_offset=1)
            eps_fn = gaussian_eps(grid, mean, std)
            xN = grid.alpha[-1] * (mean + np.sqrt(std**2 + grid.sigmabar[-1] ** 2) * noise)
            err = np.abs(sample(eps_fn, xN, grid, method) - exact_x0(xN, grid, mean, std)).max()
            rts = []
            for dtype in (np.float64, np.float32):
                x0 = data.astype(dtype)
                latent = invert(eps_fn, x0, grid, method)
                back = sample(eps_fn, latent, grid, method)
                rts.append(np.abs(back.astype(np.float64) - x0).max() / np.abs(x0).max())
            label = str(method.spec)
            print(f"{label:<16}{n:>5}{latent.nfe:>6}{err:>11.2e}{rts[0]:>12.2e}{rts[1]:>12.2e}"
                  f"{time.perf_counter() - t0:>8.2f}")
    return 0
