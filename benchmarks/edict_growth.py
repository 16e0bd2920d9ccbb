"""EDICT's round-trip error next to the growth the precision guard reads off its coefficients, u p^-N.

Usage: python benchmarks/edict_growth.py [--p 0.93 0.8 0.5] [--steps 20 50 100 150 165 200 400]

The demo's problem (`linmultistep demo`): data N(0.5, 0.3^2 I) in 64 dimensions, 16 samples, its exact
noise prediction, Stable Diffusion's schedule ('leading', offset 1). Round trip: max |sample(invert(x0)) - x0|
in float64 and float32 (numpy); 'warned' is whether the EDICT PrecisionWarning fired for float32.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

import linmultistep as lm
from linmultistep.analysis.problems import eps_fn_for, gaussian


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--p", type=float, nargs="+", default=[0.93, 0.8, 0.5])
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 50, 100, 150, 165, 200, 400])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    problem = gaussian(np.full(64, 0.5), 0.3**2)
    data = 0.5 + 0.3 * rng.standard_normal((16, 64))
    ac = lm.alphas_cumprod_for("scaled_linear")
    print("| p | N | u p^-N float64 | round trip float64 | u p^-N float32 | round trip float32 | warned (float32) |")
    print("|---|---|---|---|---|---|---|")
    for p in args.p:
        for n in args.steps:
            grid = lm.Grid.from_alphas_cumprod(ac, n, "leading", steps_offset=1)
            f = eps_fn_for(problem, grid)
            errs, warned = [], False
            for dtype in (np.float64, np.float32):
                x0 = data.astype(dtype)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    with np.errstate(all="ignore"):
                        back = lm.sample(f, lm.invert(f, x0, grid, lm.edict(p), check_finite=False), grid,
                                         lm.edict(p), check_finite=False)
                errs.append(float(np.abs(back.astype(np.float64) - x0).max()))
                if dtype is np.float32:
                    warned = any("edict" in str(w.message) and "p^-N" in str(w.message) for w in caught)
            g = p ** -n
            print(f"| {p} | {n} | {2.0**-53 * g:.1e} | {errs[0]:.1e} | {2.0**-24 * g:.1e} | {errs[1]:.1e} | "
                  f"{'yes' if warned else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
