"""Convergence orders on the rectified-flow problem, in the flow's own coordinates (x, t).

Problems (linmultistep.analysis.flow_problems): 'gaussian' (2-D anisotropic Gaussian data,
variances 0.02..0.4, exact flow in closed form) and 'mixture' (the study's three-component 2-D
mixture, DOP853 reference at rtol 1e-12). Grids: t_i = shift(i / N), shift 1 (uniform) and 3
(SD3's shift), N = 10..320. Error: RMS over 256 noise samples (seed 0) of the sampled x_0 against
the exact flow of the same noise. Order: least-squares slope of log error against log N.

Run:  python benchmarks/flow_orders.py
"""

from __future__ import annotations

import argparse

import torch

from linmultistep.analysis.flow_problems import flow_orders, flow_problem

METHODS = ("ddim", "obelm", "bdia")
STEPS = (10, 20, 40, 80, 160, 320)


def main(argv: "list[str] | None" = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=256)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print("Euler ('ddim' on a flow grid) vs O-BELM and BDIA(1), RMS error at the data end; fitted order over N = "
          + ", ".join(map(str, STEPS)))
    print(f"{'problem':<10}{'shift':>6}{'method':>8}" + "".join(f"{f'N={n}':>11}" for n in STEPS) + f"{'order':>8}")
    for name in ("gaussian", "mixture"):
        prob = flow_problem(name)
        for shift in (1.0, 3.0):
            res = flow_orders(prob, METHODS, STEPS, shift=shift, samples=args.samples)
            for m in METHODS:
                cells = "".join(f"{e:>11.2e}" for e in res.errors[m])
                print(f"{name:<10}{shift:>6g}{m:>8}{cells}{res.orders[m]:>8.2f}")
            ratio = [d / o for d, o in zip(res.errors["ddim"], res.errors["obelm"])]
            print(f"{'':<10}{'':>6}{'E/O':>8}" + "".join(f"{r:>11.1f}" for r in ratio))


if __name__ == "__main__":
    main()
