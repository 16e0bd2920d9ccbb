"""O-BELM against the flow samplers users pick, on ground truth (issue 23, item 4, the flow half).

The rectified-flow problems of ``linmultistep.analysis.flow_problems`` (Gaussian data: closed-form flow;
the study's three-Gaussian mixture: DOP853 at rtol 1e-12), on the grids of an SD3-style
``FlowMatchEulerDiscreteScheduler`` config (shift 3, mnist-flow's): its own sigmas and the uniform ones
shift(k / N) (DPM-Solver's and UniPC's own use_flow_sigmas grid up to 0.999), every sampler from the same
standard-normal x_N at sigma = 1 to sigma = 0, driven by the exact velocity: diffusers'
DPM-Solver++ 2M and UniPC with prediction_type='flow_prediction' and FlowMatchEulerDiscreteScheduler,
the library's Euler and O-BELM (``linmultistep.analysis.flow_sampler_comparison``). RMS error at the
data end against the exact flow of the same x_N, with fitted orders and the ratio to O-BELM.

``python benchmarks/flow_sampler_comparison.py [--samples 256] [--dim 8]``
"""

from __future__ import annotations

import argparse
import time

import torch

from linmultistep.analysis.flow_problems import flow_problem
from linmultistep.analysis.flow_sampler_comparison import flow_ground_truth_comparison
from linmultistep.analysis.sampler_comparison import FLOW_SAMPLERS, comparison_rows, where_obelm_loses

STEPS = (5, 10, 20, 40, 100, 200)
LABELS = {s: spec.label for s, spec in FLOW_SAMPLERS.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--dim", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    for name, uniform in (("gaussian", False), ("gaussian", True), ("mixture", False), ("mixture", True)):
        problem = flow_problem(name, dim=args.dim, seed=0)
        res = flow_ground_truth_comparison(problem, STEPS, samples=args.samples, uniform=uniform,
                                           config={"num_train_timesteps": 1000, "shift": 3.0})
        grid = ("uniform sigmas shift(k / N), k = N..1" if uniform else
                "the model's own sigmas (FlowMatchEulerDiscreteScheduler.set_timesteps(N))")
        print(f"### {problem.name}, d = {problem.dim}, {args.samples} samples, shift 3 (mnist-flow's config), "
              f"{grid}, sigma 1 -> 0\n")
        head, rows = comparison_rows(res, LABELS)
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        same = all(res.nfe[s][n] == n for s in res.samplers for n in res.steps)
        print("\nnetwork evaluations: N for N steps, every sampler" if same else f"\nnetwork evaluations: {res.nfe}")
        print(f"\nWhere O-BELM loses: {where_obelm_loses(res, LABELS)}\n")
    print(f"(total {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
