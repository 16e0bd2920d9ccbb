"""``linmultistep derive``: derive a k-step BELM and print its coefficients, LTE and zero-stability."""

from __future__ import annotations

import argparse



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--k", type=int, required=True, help="number of steps (k >= 1)")
    parser.add_argument("--order", type=int, default=None,
                        help="order p of the Taylor conditions imposed (default 2k-2, LTE-optimal); "
                             "lower orders keep 2k-2-p coefficients as free parameters")
    parser.add_argument("--latex", action="store_true", help="print the formulas as LaTeX")


def run(args: argparse.Namespace) -> int:
    from .derive import derive_belm
    from .stability import is_zero_stable

    if args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    d = derive_belm(args.k, args.order)  # a ValueError (e.g. an order too high) ends as one line, exit 2
    print(d.latex() if args.latex else d)
    if d.params:
        from .search import zero_stable_family

        print()
        print(zero_stable_family(d))
    else:
        print()
        print(is_zero_stable(d))
        u = d.uniform()
        print(f"  equal steps: a = {list(u.a)}, b = {list(u.b[1:-1])}")
    return 0
