"""Round-trip error per dtype x mode x steps, and per-step cost of each mode, side by side.

Usage: python benchmarks/precision_table.py [--steps 10 50 100 500 1000] [--method obelm]

(a) Gaussian toy: data ~ N(mu, diag(s^2)) elementwise, whose exact noise prediction is
    eps(x_t) = sigma_t (x_t - alpha_t mu) / (alpha_t^2 s^2 + sigma_t^2)  (a linear network).
(b) A random nonlinear network: a small time-conditioned MLP with fixed random weights.
Both on the Stable Diffusion schedule (scaled_linear, 1000 training steps, 'linspace' grid),
in torch so that bfloat16 is available. The round-trip error is max |sample(invert(x0)) - x0|
with x0 ~ O(1); 'fail' marks a non-finite result. Every network runs in the data's dtype.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

import linmultistep as L

DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MODES = ("recurrence", "stable", "bits")


def gaussian_problem(dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(dim, generator=g, dtype=torch.float64) * 0.5
    s = torch.rand(dim, generator=g, dtype=torch.float64) * 0.9 + 0.1

    def make(grid: L.Grid, dtype: torch.dtype):
        mu_d, s2 = mu.to(dtype), (s * s)

        def eps_fn(x, i):
            a, sg = float(grid.alpha[i]), float(grid.sigma[i])
            return (x - a * mu_d) * (sg / (a * a * s2 + sg * sg)).to(dtype)

        return eps_fn

    def data(batch: int, seed: int = 1):
        gg = torch.Generator().manual_seed(seed)
        return mu + s * torch.randn(batch, dim, generator=gg, dtype=torch.float64)

    return make, data


def mlp_problem(dim: int, hidden: int = 256, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W1 = torch.randn(dim, hidden, generator=g, dtype=torch.float64) / math.sqrt(dim)
    W2 = torch.randn(hidden, dim, generator=g, dtype=torch.float64) / math.sqrt(hidden)
    freq = torch.randn(hidden, generator=g, dtype=torch.float64)

    def make(grid: L.Grid, dtype: torch.dtype):
        w1, w2 = W1.to(dtype), W2.to(dtype)

        def eps_fn(x, i):
            t = float(grid.timestep(i)) / 1000.0
            return torch.tanh(x @ w1 + torch.sin(freq * 6.0 * t).to(dtype)) @ w2

        return eps_fn

    def data(batch: int, seed: int = 1):
        gg = torch.Generator().manual_seed(seed)
        return torch.randn(batch, dim, generator=gg, dtype=torch.float64).clamp(-3, 3)

    return make, data


def round_trip_error(make, x0_64, grid, method, mode, dtype) -> float:
    eps_fn = make(grid, dtype)
    x0 = x0_64.to(dtype)
    try:
        lat = L.invert(eps_fn, x0, grid, method, mode=mode, check_finite=False)
        rec = L.sample(eps_fn, lat, grid, method, mode=mode, check_finite=False)
    except L.LinmultistepError as exc:
        return type(exc).__name__
    err = (rec.double() - x0.double()).abs().max().item()
    return err if math.isfinite(err) else float("nan")


def fmt(e) -> str:
    if isinstance(e, str):
        return {"FixedPointRangeError": "range", "NonFiniteError": "fail"}.get(e, e)
    if math.isnan(e):
        return "fail"
    return "0" if e == 0 else f"{e:.1e}"


def error_table(name, problem, steps, method, batch, ac):
    make, data = problem
    x0 = data(batch)
    print(f"\n## Round-trip error max|x0 - sample(invert(x0))|: {name}, {method}, batch {tuple(x0.shape)}")
    head = "| dtype | mode | " + " | ".join(f"N={n}" for n in steps) + " |"
    print(head)
    print("|" + "---|" * (2 + len(steps)))
    for dname, dt in DTYPES.items():
        for mode in MODES:
            row = []
            for n in steps:
                grid = L.Grid.from_alphas_cumprod(ac, n)
                row.append(fmt(round_trip_error(make, x0, grid, method, mode, dt)))
            print(f"| {dname} | {mode} | " + " | ".join(row) + " |", flush=True)


def cost_table(name, problem, n, method, batch, ac, repeats):
    make, data = problem
    grid = L.Grid.from_alphas_cumprod(ac, n)
    x0 = data(batch).to(torch.float32)
    eps_fn = make(grid, torch.float32)
    times = {m: [] for m in MODES}
    for _ in range(repeats):  # interleaved, so that drift affects every mode alike
        for mode in MODES:
            t0 = time.perf_counter()
            lat = L.invert(eps_fn, x0, grid, method, mode=mode)
            L.sample(eps_fn, lat, grid, method, mode=mode)
            times[mode].append((time.perf_counter() - t0) / (2 * n))
    # the fastest of the interleaved repeats: the least disturbed by other load on the machine
    base = min(times["recurrence"])
    cells = " | ".join(f"{min(times[m]) / base:.2f}" for m in MODES)
    print(f"| {name} (float32, batch {tuple(x0.shape)}, N={n}) | {base * 1e6:.0f} us | {cells} |", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, nargs="+", default=[10, 50, 100, 500, 1000])
    p.add_argument("--method", default="obelm")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--cost-only", action="store_true", help="skip the round-trip error tables")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # one thread: timings comparable between modes on a shared machine
    ac = L.alphas_cumprod_for("scaled_linear")
    problems = {"Gaussian toy": gaussian_problem(args.dim), "random MLP": mlp_problem(args.dim)}
    for name, prob in problems.items():
        if not args.cost_only:
            error_table(name, prob, args.steps, args.method, args.batch, ac)
    print(f"\n## Per-step cost relative to 'recurrence' ({args.method}, fastest of {args.repeats} interleaved runs)")
    print("| problem | recurrence per step | " + " | ".join(MODES) + " |")
    print("|---|---|" + "---|" * len(MODES))
    for name, prob in problems.items():
        for batch in (args.batch, 1024):
            cost_table(name, prob, 50, args.method, batch, ac, args.repeats)


if __name__ == "__main__":
    main()
