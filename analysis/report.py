"""Tables of a convergence study, as plain text (terminal) and markdown (report.md)."""

from __future__ import annotations

import math
from typing import Sequence

from .study import SMOOTH_SPACINGS, StudyResult

__all__ = ["error_rows", "order_rows", "ratio_rows", "text_table", "markdown_table", "markdown_report",
           "comparison_caption", "flow_comparison_caption", "obelm_loses_line"]


def _e(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "failed"
    if x == 0:
        return "0 (exact)"
    return f"{x:.2e}"


def _order(p: float, se: float) -> str:
    if math.isnan(p):
        return "-"
    return f"{p:.2f} ± {se:.2f}" if not math.isnan(se) else f"{p:.2f}"


def error_rows(result: StudyResult, spacing: str, min_steps: int = 20) -> tuple[list[str], list[list[str]]]:
    """Method x steps: NFE, error, sliced W2, round trips; fitted order on each method's first row."""
    keys = list(result.dtypes)  # the recurrence, then other modes measured on this grid (e.g. 'float16/bits')
    for mode in getattr(result, "roundtrip_modes", ["recurrence"]):
        extra = [f"{dt}/{mode}" for dt in result.dtypes]
        if mode != "recurrence" and any(k in r.roundtrip for r in result.records if r.spacing == spacing for k in extra):
            keys += extra
    headers = ["method", "N", "NFE", "error", "order", "SW2"] + [f"rt {k.replace('/', ' ')}" for k in keys]
    rows = []
    for m in result.methods:
        p, se = result.order(spacing, m, min_steps)
        for j, r in enumerate(result.select(spacing, m)):
            rows.append(
                [m if j == 0 else "", str(r.steps), str(r.nfe), _e(r.error), _order(p, se) if j == 0 else "", _e(r.sw)]
                + [_e(r.roundtrip.get(k, math.nan)) for k in keys]
            )
    return headers, rows


def order_rows(result: StudyResult, min_steps: int = 20, attr: str = "error") -> tuple[list[str], list[list[str]]]:
    """Fitted order (± standard error) per method and grid kind, with the method's claimed order."""
    headers = ["method", "claimed"] + [sp + (" (smooth)" if sp in SMOOTH_SPACINGS else "") for sp in result.spacings]
    rows = []
    for m in result.methods:
        th = result.theory.get(m)
        rows.append([m, "-" if th is None else str(th)]
                    + [_order(*result.order(sp, m, min_steps, attr)) for sp in result.spacings])
    return headers, rows


def ratio_rows(result: StudyResult, num: str = "ddim", den: str = "obelm",
               steps: Sequence[int] = (10, 20)) -> tuple[list[str], list[list[str]]]:
    """error(num) / error(den) at the given steps on every grid kind (empty if a method is missing)."""
    if num not in result.methods or den not in result.methods:
        return [], []
    headers = ["grid"] + [f"N = {n}" for n in steps]
    rows = []
    for sp in result.spacings:
        vals = [result.value(sp, num, n) / result.value(sp, den, n) for n in steps]
        rows.append([sp] + ["-" if math.isnan(v) else f"{v:.2f}" for v in vals])
    return headers, rows


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Column-aligned plain text."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def comparison_caption(c) -> str:
    """The caption of one of the study's comparisons with diffusers' samplers (a
    :class:`~.sampler_comparison.StudyComparison`)."""
    n = c.result.steps
    return (f"samplers users pick instead, {c.title}: RMS error of xbar at the end against the exact flow of the same "
            f"x_N (N steps = N network evaluations for every sampler); fitted order over N = {', '.join(map(str, n))}; "
            "÷ O-BELM: the error divided by O-BELM's (above 1: O-BELM is the more accurate)")


def flow_comparison_caption(c) -> str:
    """The caption of one of the study's flow comparisons (a
    :class:`~.flow_sampler_comparison.FlowStudyComparison`)."""
    n = c.result.steps
    return (f"flow samplers users pick instead, {c.title}: RMS error of x_0 against the exact flow of the same x_N "
            f"from sigma 1 to 0 (N steps = N network evaluations for every sampler); fitted order over N = "
            f"{', '.join(map(str, n))}; ÷ O-BELM: the error divided by O-BELM's (above 1: O-BELM is the more accurate)")


def obelm_loses_line(result, labels=None) -> str:
    """Where O-BELM loses, in one line (:func:`~.sampler_comparison.where_obelm_loses`; ``labels``: display
    names by sampler, e.g. :data:`~.flow_sampler_comparison.FLOW_LABELS` for a flow comparison)."""
    from .sampler_comparison import where_obelm_loses

    text = where_obelm_loses(result, labels)
    return f"O-BELM against them: {text}" if text else ""


def _sampler_section(comparisons: Sequence, note: str) -> list[str]:
    if not comparisons:
        return ["## The samplers users pick instead", "", f"Comparison with diffusers' samplers {note}.", ""] if note else []
    from .sampler_comparison import comparison_rows

    parts = ["## The samplers users pick instead (diffusers' schedulers, driven by the same network)", "",
             "diffusers' `DDIMScheduler`, `EulerDiscreteScheduler`, `DPMSolverMultistepScheduler` (DPM-Solver++ 2M) and "
             "`UniPCMultistepScheduler`, run by diffusers' own loop, and the library's DDIM and O-BELM, all on the "
             "same 'trailing' timesteps from the same x_N, driven by the problem's exact noise prediction "
             "(docs/samplers.md has how the starts and ends are aligned).", ""]
    for c in comparisons:
        parts += [f"### {c.title}", "", markdown_table(*comparison_rows(c.result)), "", obelm_loses_line(c.result), ""]
    return parts


def _flow_sampler_section(comparisons: Sequence) -> list[str]:
    if not comparisons:
        return []
    from .flow_sampler_comparison import FLOW_LABELS
    from .sampler_comparison import comparison_rows

    parts = ["## The samplers users pick for flow models (diffusers' flow schedulers, driven by the same velocity)", "",
             "diffusers' `DPMSolverMultistepScheduler` (DPM-Solver++ 2M) and `UniPCMultistepScheduler` with "
             "`prediction_type='flow_prediction'`, `use_flow_sigmas=True`, and `FlowMatchEulerDiscreteScheduler`, run "
             "by their own `step`, and the library's Euler and O-BELM, all on the same sigmas from the same x_N at "
             "sigma 1, driven by the problem's exact velocity (docs/samplers.md has how the sigmas are aligned).", ""]
    for c in comparisons:
        parts += [f"### {c.title}", "", markdown_table(*comparison_rows(c.result, FLOW_LABELS)), "",
                  obelm_loses_line(c.result, FLOW_LABELS), ""]
    return parts


def markdown_report(result: StudyResult, images: dict[str, str], min_steps: int = 20,
                    primary: str | None = None, runtime: float | None = None, command: str = "",
                    samplers: Sequence = (), samplers_note: str = "", flow_samplers: Sequence = ()) -> str:
    """The study as markdown: settings, fitted orders, ratios, error tables, the comparison with
    diffusers' samplers (``samplers``: :class:`~.sampler_comparison.StudyComparison` s; or
    ``samplers_note``, why it was not run), with its flow samplers (``flow_samplers``:
    :class:`~.flow_sampler_comparison.FlowStudyComparison` s) and the figures.

    ``images`` maps a caption to a relative image path (e.g. the PNGs next to report.md).
    """
    primary = primary or result.spacings[0]
    parts = [
        "# Convergence study",
        "",
        f"Problem: **{result.problem}** in d = {result.dim}, schedule **{result.schedule}**, "
        f"{result.samples} samples, seed {result.seed}; steps {', '.join(map(str, result.steps))}.",
        "The error is the RMS over samples and coordinates of the sampler's data-end point minus the "
        "exact probability-flow solution from the same noise (closed form for one Gaussian, "
        "scipy DOP853 at rtol 1e-12 for a mixture). SW2 is the sliced Wasserstein-2 distance between "
        "the sampled set and the exactly transported set. Round trip: relative RMS of "
        "sample(invert(x0)) - x0 with states and network outputs in the given dtype, in the LM recurrence "
        "and (columns marked bits) in the bit-exact fixed-point mode of the 2-step BELMs.",
        "",
    ]
    if command:
        parts += [f"Command: `{command}`" + (f" ({runtime:.1f} s)" if runtime is not None else ""), ""]
    parts += [f"## Fitted order (least squares on log-log over N >= {min_steps}, ± standard error)", "",
              markdown_table(*order_rows(result, min_steps)), "",
              "Grids marked smooth are smooth functions of i/N in sigmabar and show the full order; "
              "on diffusers' uniform-timestep grids sigmabar ~ sqrt(t) near the data end, so the "
              "last step shrinks like N^-1/2 and the observed order drops.", ""]
    hr, rr = ratio_rows(result)
    if rr:
        parts += ["## Error of DDIM divided by error of O-BELM", "", markdown_table(hr, rr), ""]
    parts += [f"## Fitted order of the sliced Wasserstein-2 distance (N >= {min_steps})", "",
              markdown_table(*order_rows(result, min_steps, "sw")), ""]
    for sp in result.spacings:
        parts += [f"## Errors on the {sp} grid", "", markdown_table(*error_rows(result, sp, min_steps)), ""]
    parts += _sampler_section(samplers, samplers_note)
    parts += _flow_sampler_section(flow_samplers)
    for caption, path in images.items():
        parts += [f"### {caption}", "", f"![{caption}]({path})", ""]
    return "\n".join(parts)
