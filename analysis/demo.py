"""`linmultistep demo`: every sampler on a problem with a closed-form answer.

Data x0 ~ N(m, c^2 I) (:func:`.problems.gaussian`): the ideal noise prediction and the
probability-flow ODE's solution are both in closed form, so each sampler's error at the data end
is exact. The full study with mixtures and plots is `linmultistep study`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from linmultistep.diffusion import invert, sample
from linmultistep.grid import Grid
from linmultistep.methods import get_method
from linmultistep.schedules import alphas_cumprod_for

from .problems import eps_fn_for, gaussian

METHODS = (("ddim", {}), ("edict", {"p": 0.93}), ("bdia", {"gamma": 1.0}), ("obelm", {}))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 100], help="numbers of steps N")
    parser.add_argument("--dim", type=int, default=64, help="data dimension")
    parser.add_argument("--batch", type=int, default=16, help="samples per run")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    mean, std = 0.5, 0.3
    problem = gaussian(np.full(args.dim, mean), std**2)
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
            eps_fn = eps_fn_for(problem, grid)
            S = grid.sigmabar[-1]
            xN = grid.alpha[-1] * (mean + np.sqrt(std**2 + S**2) * noise)
            exact = grid.alpha[0] * problem.flow_closed_form(xN / grid.alpha[-1], S, grid.sigmabar[0])
            err = np.abs(sample(eps_fn, xN, grid, method) - exact).max()
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
