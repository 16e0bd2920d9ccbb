"""Wall time of the symbolic BELM derivation (linmultistep.analysis.derive_belm) for k = 2..5.

Run: .venv/bin/python benchmarks/derive_timing.py [--ks 2 3 4 5] [--repeat 1]
Prints, per k, the seconds for derive_belm(k) (Taylor system + exact solve + factoring) and for
the exact zero-stability verdict of the result, in one run.
"""

from __future__ import annotations

import argparse
import time

from linmultistep.analysis import derive_belm, is_zero_stable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[2, 3, 4, 5])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    print(f"{'k':>2}  {'derive [s]':>10}  {'zero-stab. [s]':>14}  LTE order  error const.  zero-stable")
    for k in args.ks:
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            d = derive_belm(k)
            best = min(best, time.perf_counter() - t0)
        t0 = time.perf_counter()
        v = is_zero_stable(d)
        tz = time.perf_counter() - t0
        print(f"{k:>2}  {best:>10.2f}  {tz:>14.3f}  {d.lte_order:>9}  {str(d.error_constant):>12}  {bool(v)}")


if __name__ == "__main__":
    main()
