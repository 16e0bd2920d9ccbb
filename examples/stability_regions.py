"""Absolute-stability regions of classical and catalogue methods, in one figure.

Run: python examples/stability_regions.py [--out docs/img/stability_regions.png]
     (needs the analysis and plot extras: sympy, matplotlib)

Shaded: z = h lambda where rho - z sigma satisfies the root condition (checked on a grid);
line: the boundary locus rho(e^{i theta}) / sigma(e^{i theta}).
"""

import argparse
from pathlib import Path

from matplotlib.figure import Figure

from linmultistep.analysis.lmm import LinearMultistepMethod, adams_bashforth, bdf


def main(out: Path | None = None, n: int = 201) -> Figure:
    methods = [
        (adams_bashforth(2), (-2.5, 0.5, -1.5, 1.5)),
        (bdf(2), (-2.0, 6.0, -4.0, 4.0)),
        (LinearMultistepMethod.from_method("obelm", ratio=1), (-1.5, 1.5, -1.5, 1.5)),
        (LinearMultistepMethod.from_method("obelm", ratio="1/2"), (-2.5, 1.0, -1.75, 1.75)),
    ]
    fig = Figure(figsize=(13, 3.5), layout="constrained")
    axes = fig.subplots(1, len(methods))
    for ax, (m, bounds) in zip(axes, methods):
        m.plot_stability_region(bounds=bounds, n=n, ax=ax, title=m.name, legend=False)
        print(f"{m.name}: order {m.order()}, zero-stable {bool(m.is_zero_stable())}, "
              f"real stability intervals {[(round(a, 4), round(b, 4)) for a, b in m.real_stability_intervals()]}")
    fig.suptitle("absolute-stability regions in the h lambda plane: shaded = root condition holds (grid check), "
                 "line = boundary locus rho/sigma on |zeta| = 1", fontsize="medium")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=80)
        print(f"wrote {out}")
    return fig


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="PNG file to write (default: none)")
    main(ap.parse_args().out)
