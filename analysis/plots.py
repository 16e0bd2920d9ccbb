"""Figures of the convergence study (matplotlib, object API: no pyplot state, no display).

Every function returns a :class:`matplotlib.figure.Figure`; :func:`save` writes it as PNG and
SVG. Axes carry labels and log scales; convergence plots carry dashed reference slopes
N^-1 and N^-2 anchored at the first point of the slowest and fastest series.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from linmultistep.grid import Grid
from linmultistep.methods import LinearMultistep, Method

from .study import StudyResult, coefficients_along, inversion_growth

__all__ = [
    "error_vs_steps",
    "distribution_vs_steps",
    "roundtrip_vs_steps",
    "coefficients_plot",
    "growth_plot",
    "sampler_comparison_plot",
    "save",
    "REFERENCE_SLOPES",
]

REFERENCE_SLOPES = (1, 2)
_MARKERS = "osD^v<>px*"


def _panels(n: int, width: float = 4.2, height: float = 3.6, sharey: bool = True) -> tuple[Figure, list]:
    """n axes in rows of at most 3; unused cells of the last row are removed."""
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    grid = fig.subplots(rows, cols, sharey=sharey, squeeze=False).ravel()
    for ax in grid[n:]:
        ax.remove()
    return fig, list(grid[:n])


def _reference_slopes(ax, x: np.ndarray, anchors: Sequence[float], slopes: Sequence[int] = REFERENCE_SLOPES) -> None:
    """Dashed lines C x^-p through (x[0], anchor) for each reference order p."""
    x = np.asarray(x, dtype=np.float64)
    for p, y0 in zip(slopes, anchors):
        if np.isfinite(y0) and y0 > 0:
            ax.plot(x, y0 * (x / x[0]) ** (-p), ls="--", color="0.5" if p == 1 else "0.25", lw=1,
                    label=f"slope -{p} (reference)")


def _anchor_values(series: list[np.ndarray]) -> tuple[float, float]:
    first = [s[0] for s in series if s.size and np.isfinite(s[0]) and s[0] > 0]
    if not first:
        return np.nan, np.nan
    return max(first) * 1.5, min(first) / 1.5


def error_vs_steps(result: StudyResult, attr: str = "error", x: str = "steps",
                   spacings: Sequence[str] | None = None) -> Figure:
    """Global error at the data end versus steps (``x='steps'``) or network evaluations
    (``x='nfe'``), one log-log panel per grid kind, one line per method, reference slopes."""
    spacings = list(spacings or result.spacings)
    fig, axes = _panels(len(spacings))
    ylabel = {"error": "RMS error at the data end", "sw": "sliced Wasserstein-2 to the exact flow"}.get(attr, attr)
    for ax, sp in zip(axes, spacings):
        ys = []
        for j, m in enumerate(result.methods):
            n, e = result.series(sp, m, attr)
            xs = n if x == "steps" else result.series(sp, m, "nfe")[1]
            ax.plot(xs, e, marker=_MARKERS[j % len(_MARKERS)], label=m)
            ys.append(e)
        n = np.array(result.steps, dtype=np.float64)
        _reference_slopes(ax, n if x == "steps" else n * _min_nfe_ratio(result, sp), _anchor_values(ys))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("number of steps N" if x == "steps" else "network evaluations (NFE)")
        ax.set_title(f"{sp} grid")
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes[::3]:
        ax.set_ylabel(ylabel)
    axes[-1].legend(fontsize="small")
    fig.suptitle(f"{result.problem} (d={result.dim}), {result.schedule} schedule: {ylabel} vs "
                 + ("steps" if x == "steps" else "NFE"))
    return fig


def _min_nfe_ratio(result: StudyResult, spacing: str) -> float:
    ratios = []
    for m in result.methods:
        n, nfe = result.series(spacing, m, "nfe")
        if n.size:
            ratios.append(float(nfe[0] / n[0]))
    return min(ratios) if ratios else 1.0


def distribution_vs_steps(result: StudyResult, spacings: Sequence[str] | None = None) -> Figure:
    """Sliced Wasserstein-2 distance of the sampled set to the exact flow of the same noise."""
    return error_vs_steps(result, attr="sw", spacings=spacings)


# failure marks: one shape per method, in the method's colour, so that one method's failures
# never look like another's (a red 'x' for every method made EDICT's look like O-BELM's)
_FAIL_MARKERS = "XP*hd^v<>s"


def _integer_steps_axis(ax, steps: Sequence[int]) -> None:
    """Log x axis ticked exactly at the numbers of steps used, labelled as integers."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator([float(n) for n in steps]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.0f}"))
    ax.xaxis.set_minor_locator(NullLocator())


def roundtrip_vs_steps(result: StudyResult, spacing: str | None = None) -> Figure:
    """Relative round-trip error sample(invert(x0)) - x0 versus steps, one panel per dtype, each
    with its own y axis (float16's errors are not squashed onto float64's scale).

    Per method: the LM recurrence (solid) and, where the study measured it, the bit-exact 'bits'
    mode (dashed, same colour). An exact round trip (error 0) is drawn as a hollow marker on the
    panel's bottom edge; a failed one (NaN/overflow on the way) as the method's own failure
    marker at the top edge, so failures of different methods stay distinguishable.
    """
    spacing = spacing or next(sp for sp in result.spacings if any(r.roundtrip for r in result.select(sp, result.methods[0])))
    modes = [m for m in getattr(result, "roundtrip_modes", ["recurrence"]) if m != "recurrence"]
    fig, axes = _panels(len(result.dtypes), sharey=False)
    for ax, dt in zip(axes, result.dtypes):
        eps = float(np.finfo(np.dtype(dt)).eps)
        series = []
        for j, m in enumerate(result.methods):
            colour = f"C{j % 10}"
            n, e = result.series(spacing, m, f"roundtrip:{dt}")
            series.append((m, m, n, e, colour, "-", j))
            for mode in modes:
                n2, e2 = result.series(spacing, m, f"roundtrip:{dt}/{mode}")
                if np.isfinite(e2).any() or np.isinf(e2).any():
                    series.append((m, f"{m} {mode}", n2, e2, colour, "--", j))
        finite = np.concatenate([e[np.isfinite(e) & (e > 0)] for _, _, _, e, _, _, _ in series] + [np.array([eps])])
        lo, hi = finite.min() / 10, finite.max() * 10
        for m, label, n, e, colour, ls, j in series:
            ax.plot(n, np.where(np.isfinite(e), e, np.nan), ls=ls, color=colour,
                    marker=_MARKERS[j % len(_MARKERS)], label=label)
            zero = e == 0
            if zero.any():
                ax.plot(n[zero], np.full(zero.sum(), lo * 1.5), ls="none", marker=_MARKERS[j % len(_MARKERS)],
                        mfc="none", mec=colour, ms=9, label=f"{label}: exact (error 0), at the bottom edge")
            failed = np.isinf(e)  # the study records a failed round trip as inf (NaN = not measured)
            if failed.any():
                ax.plot(n[failed], np.full(failed.sum(), hi / 1.5), ls="none", marker=_FAIL_MARKERS[j % len(_FAIL_MARKERS)],
                        color=colour, mec="black", mew=0.6, ms=9, label=f"{label}: failed (inf/NaN), at the top edge")
        ax.axhline(eps, color="0.5", ls=":", lw=1, label="machine epsilon of the dtype")
        ax.set_yscale("log")
        ax.set_ylim(lo, hi)
        _integer_steps_axis(ax, result.steps)
        ax.set_xlabel("number of steps N")
        ax.set_ylabel("relative round-trip error")
        ax.set_title(f"{dt}")
        ax.grid(True, which="both", alpha=0.3)
    handles: dict = {}
    for ax in axes:  # one legend for all panels, outside them (it would hide float16's points)
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=4, fontsize="small")
    fig.suptitle(f"round trip invert -> sample on the {spacing} grid ({result.schedule}); "
                 "solid: LM recurrence" + (", dashed: " + ", ".join(modes) + " mode" if modes else ""))
    return fig


def coefficients_plot(methods: Sequence[Method], grid: Grid, title: str = "") -> Figure:
    """a_{i,j} and b_{i,j} of each linear multistep method along ``grid`` (symlog y axis)."""
    lms = [m for m in methods if isinstance(m, LinearMultistep)]
    if not lms:
        raise ValueError("no linear multistep method to plot coefficients for")
    fig, axes = _panels(len(lms), sharey=False)
    for ax, m in zip(axes, lms):
        c = coefficients_along(m, grid)
        for key in [k for k in c if k != "i"]:
            if np.any(c[key] != 0):
                ax.plot(c["i"], c[key], marker=".", label=f"${key[0]}_{{i,{key[1:]}}}$")
        if max(np.abs(c[key]).max() for key in c if key != "i") > 20:  # wide range: symmetric log
            ax.set_yscale("symlog", linthresh=1.0)
        ax.set_xlabel("grid index i (0 = data)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("coefficient")
        ax.set_title(str(m.spec))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title or f"coefficients along a grid of N = {grid.N} steps")
    return fig


def growth_plot(methods: Sequence[Method], grids: dict[str, Grid]) -> Figure:
    """Cumulative growth prod |1/a_{i,k}| of the inversion direction, one panel per grid."""
    fig, axes = _panels(len(grids))
    for ax, (name, grid) in zip(axes, grids.items()):
        for j, m in enumerate(methods):
            idx, g = inversion_growth(m, grid)
            ax.plot(idx, g, marker=_MARKERS[j % len(_MARKERS)], ms=3, label=str(m.spec))
        ax.set_yscale("log")
        ax.set_xlabel("grid index reached by the inversion")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{name} grid, N = {grid.N}")
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes[::3]:
        ax.set_ylabel(r"cumulative growth $\prod |1/a_{i,k}|$")
    axes[-1].legend(fontsize="small")
    fig.suptitle("amplification of perturbations in the inversion direction")
    return fig


def _sampler_specs(c) -> dict:
    """The sampler specs of a comparison: :data:`~.sampler_comparison.FLOW_SAMPLERS` for a flow one (a
    :class:`~.flow_sampler_comparison.FlowStudyComparison`; the library's 'ddim' is Euler there), else
    :data:`~.sampler_comparison.SAMPLERS`."""
    from .flow_sampler_comparison import FlowStudyComparison
    from .sampler_comparison import FLOW_SAMPLERS, SAMPLERS

    specs = FLOW_SAMPLERS if isinstance(c, FlowStudyComparison) else SAMPLERS
    unknown = [s for s in c.result.samplers if s not in specs]
    if unknown:
        raise ValueError(f"comparison {c.title!r} holds samplers {unknown} that are not in "
                         f"{'FLOW_SAMPLERS' if specs is FLOW_SAMPLERS else 'SAMPLERS'} ({list(specs)})")
    return specs


def _comparison_panel_title(c) -> str:
    if hasattr(c, "grid"):  # a flow comparison
        grid = "pipeline's sigmas" if c.grid == "model" else "uniform sigmas"
        return f"{c.problem}, shift {c.shift:g}, {grid}"
    return f"{c.problem}, {c.schedule}, end {'t = 0' if c.end == 'sigma_min' else 'sigmabar = 0'}"


def sampler_comparison_plot(comparisons: Sequence, title: str = "") -> Figure:
    """Error against the exact flow versus steps (= network evaluations) of every compared sampler, one
    log-log panel per comparison (:class:`~.sampler_comparison.StudyComparison` or
    :class:`~.flow_sampler_comparison.FlowStudyComparison`), reference slopes N^-1, N^-2."""
    if not comparisons:
        raise ValueError("no comparison to plot")
    fig, axes = _panels(len(comparisons), sharey=False)
    for ax, c in zip(axes, comparisons):
        specs = _sampler_specs(c)
        r = c.result
        n = np.array(r.steps, dtype=np.float64)
        ys = []
        for j, s in enumerate(r.samplers):
            e = np.array([r.error[s][k] for k in r.steps])
            ax.plot(n, e, marker=_MARKERS[j % len(_MARKERS)], ls="-" if specs[s].scheduler else "--",
                    label=specs[s].label)
            ys.append(e)
        _reference_slopes(ax, n, _anchor_values(ys))
        ax.set_yscale("log")
        _integer_steps_axis(ax, r.steps)
        ax.set_xlabel("steps N (= network evaluations)")
        ax.set_title(_comparison_panel_title(c), fontsize="medium")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("RMS error against the exact flow")
    axes[-1].legend(fontsize="small")
    fig.suptitle(title or "the samplers users pick instead (solid: diffusers' schedulers, dashed: linmultistep)")
    return fig


def save(fig: Figure, path: str | Path, dpi: int = 90) -> list[Path]:
    """Write ``path`` with suffixes .png and .svg; returns the files written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in (".png", ".svg"):
        target = path.with_suffix(ext)
        fig.savefig(target, dpi=dpi)
        out.append(target)
    return out
