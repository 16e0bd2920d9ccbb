"""`linmultistep study`: convergence orders, distribution error and round trips against exact solutions.

Default: a 2-D three-component Gaussian mixture under the Stable Diffusion (scaled-linear)
schedule; DDIM, EDICT(0.93), BDIA(1) and O-BELM on diffusers' 'trailing', 'linspace' and
'leading' grids and on the sigmabar-smooth 'karras' and 'uniform' grids; then the flow-matching problem,
and the samplers users pick instead (diffusers' DDIM, Euler, DPM-Solver++ 2M and UniPC schedulers against
the library's DDIM and O-BELM, driven by the same exact noise prediction, at N = 5, 10, 20 with fitted
orders: :func:`.sampler_comparison.study_comparisons`; and for flow models diffusers' flow DPM-Solver++ 2M, UniPC
and FlowMatchEuler against the library's Euler and O-BELM: :func:`.flow_sampler_comparison.flow_study_comparisons`;
skipped with a note without torch and diffusers).
Prints the tables and writes report.md, results.json and the figures (PNG and SVG) into --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

from linmultistep.schedules import SCHEDULES

from .problems import PROBLEMS

DEFAULT_METHODS = ["ddim", "edict:p=0.93", "bdia:gamma=1", "obelm"]
DEFAULT_SPACINGS = ["trailing", "linspace", "leading", "karras", "uniform"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .study import SPACINGS

    parser.add_argument("--problem", choices=sorted(PROBLEMS), default="mixture",
                        help="ground-truth data distribution (default: mixture)")
    parser.add_argument("--schedule", choices=SCHEDULES, default="scaled_linear",
                        help="noise schedule (default: scaled_linear = Stable Diffusion)")
    parser.add_argument("--spacing", nargs="+", choices=SPACINGS, default=DEFAULT_SPACINGS,
                        help="grid kinds; the first is the one the main table shows (default: all)")
    parser.add_argument("--methods", nargs="+", default=DEFAULT_METHODS,
                        help="methods as name or name:key=value,... (default: %(default)s)")
    parser.add_argument("--steps", nargs="+", type=int, default=[5, 10, 20, 40, 80, 160, 320],
                        help="numbers of steps N (default: %(default)s)")
    parser.add_argument("--fit-from", type=int, default=20, help="fit the order over N >= this (default: 20)")
    parser.add_argument("--dim", type=int, default=2, help="data dimension (default: 2)")
    parser.add_argument("--samples", type=int, default=256, help="samples per run (default: 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32", "float16"],
                        choices=["float64", "float32", "float16"], help="round-trip precisions")
    parser.add_argument("--plot-steps", type=int, default=20,
                        help="N of the grids shown in the coefficient and growth plots (default: 20)")
    parser.add_argument("--dpi", type=int, default=90, help="resolution of the PNG figures (default: 90)")
    parser.add_argument("--out", default="out/study", help="output folder (default: out/study)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--sampler-steps", nargs="+", type=int, default=[5, 10, 20],
                        help="numbers of steps of the comparison with diffusers' samplers (default: %(default)s)")
    parser.add_argument("--no-samplers", action="store_true",
                        help="skip the comparison with diffusers' samplers (DPM-Solver++ 2M, UniPC, Euler, DDIM; "
                             "and their flow variants)")


def run(args: argparse.Namespace) -> int:
    try:
        import matplotlib  # noqa: F401  (the figures)
        import scipy  # noqa: F401  (the mixture's reference solution)
    except ImportError as exc:
        print(f"error: the study needs scipy and matplotlib ({exc}); "
              "install them with: pip install 'linmultistep[analysis,plot]'", file=sys.stderr)
        return 2
    from . import plots, report
    from .problems import make_problem
    from .study import make_grid, parse_method, run_study

    if min(args.steps) < 2:
        print("error: --steps must all be at least 2 (two-step methods need two steps)", file=sys.stderr)
        return 2
    if min(args.sampler_steps) < 2:
        print(f"error: --sampler-steps must all be at least 2 (O-BELM is a two-step method), got {args.sampler_steps}",
              file=sys.stderr)
        return 2
    try:
        methods = [parse_method(m) for m in args.methods]
        problem = make_problem(args.problem, dim=args.dim, seed=args.seed)
    except Exception as exc:  # bad method name/parameter or dimension: say which
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = run_study(problem, methods, args.steps, args.spacing, schedule=args.schedule,
                       samples=args.samples, seed=args.seed, dtypes=args.dtypes, progress=not args.no_progress)
    runtime = time.perf_counter() - t0
    primary = args.spacing[0]

    print(f"\n{problem.name} (d={problem.dim}), {args.schedule} schedule, {args.samples} samples; "
          f"error = RMS of x0 - exact flow solution; rt = relative round-trip error sample(invert(x0)) - x0")
    print(f"\n[{primary} grid] fitted order over N >= {args.fit_from}")
    print(report.text_table(*report.error_rows(result, primary, args.fit_from)))
    print(f"\nfitted order (± standard error) per grid kind, N >= {args.fit_from}")
    print(report.text_table(*report.order_rows(result, args.fit_from)))
    hr, rr = report.ratio_rows(result)
    if rr:
        print("\nerror(DDIM) / error(O-BELM)")
        print(report.text_table(hr, rr))
    from .study import flow_table, run_flow_study  # the flow-matching problem (issue 21), docs/study.md

    flow_rows = run_flow_study(methods, args.steps, samples=args.samples, seed=args.seed, dim=args.dim,
                               fit_from=args.fit_from)
    print(f"\nflow matching (rectified flow, {flow_rows[0].problem}), SD3-style grids t_i = shift(i / N), "
          f"the core's flow coordinates: RMS error at the data end, fitted order over N >= {args.fit_from}")
    print(report.text_table(*flow_table(flow_rows)))
    comparisons, flow_comparisons, skipped = (([], [], "skipped (--no-samplers)") if args.no_samplers
                                              else _sampler_comparisons(problem, args))
    if comparisons or flow_comparisons:  # these modules import torch: only once the comparisons ran
        from .flow_sampler_comparison import FLOW_LABELS
        from .sampler_comparison import comparison_rows

        for c in comparisons:
            print(f"\n{report.comparison_caption(c)}")
            print(report.text_table(*comparison_rows(c.result)))
            print(report.obelm_loses_line(c.result))
        for c in flow_comparisons:
            print(f"\n{report.flow_comparison_caption(c)}")
            print(report.text_table(*comparison_rows(c.result, FLOW_LABELS)))
            print(report.obelm_loses_line(c.result, FLOW_LABELS))
    if skipped:
        print(f"\ncomparison with diffusers' samplers {skipped}")

    figures = {
        "Error vs steps": ("error_vs_steps", plots.error_vs_steps(result)),
        "Error vs network evaluations": ("error_vs_nfe", plots.error_vs_steps(result, x="nfe")),
        "Distribution error (sliced Wasserstein-2) vs steps": ("distribution_vs_steps", plots.distribution_vs_steps(result)),
        f"Round-trip error vs steps per dtype ({primary} grid)": ("roundtrip", plots.roundtrip_vs_steps(result, primary)),
    }
    grids = {sp: make_grid(args.plot_steps, args.schedule, sp) for sp in args.spacing}
    figures[f"Coefficients along the {primary} grid (N = {args.plot_steps})"] = (
        "coefficients", plots.coefficients_plot(methods, grids[primary]))
    figures[f"Growth factors of the inversion direction (N = {args.plot_steps})"] = (
        "growth", plots.growth_plot(methods, grids))
    images = {}
    for caption, (stem, fig) in figures.items():
        plots.save(fig, out / stem, dpi=args.dpi)
        images[caption] = f"{stem}.png"
    command = "linmultistep study " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["study"] else ""
    sampler_figures = {}
    if comparisons:
        sampler_figures["The samplers users pick instead: error vs steps"] = (
            "samplers", plots.sampler_comparison_plot(comparisons))
    if flow_comparisons:
        sampler_figures["The samplers users pick for flow models: error vs steps"] = (
            "samplers_flow", plots.sampler_comparison_plot(
                flow_comparisons, "the flow samplers users pick instead (solid: diffusers' schedulers, dashed: linmultistep)"))
    for caption, (stem, fig) in sampler_figures.items():
        plots.save(fig, out / stem, dpi=args.dpi)
        images[caption] = f"{stem}.png"
    figures.update(sampler_figures)
    (out / "report.md").write_text(report.markdown_report(result, images, args.fit_from, primary, runtime, command.strip(),
                                                          samplers=comparisons, samplers_note=skipped,
                                                          flow_samplers=flow_comparisons))
    payload = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name != "method_objects"}
    payload["records"] = [dataclasses.asdict(r) for r in result.records]
    payload["samplers"] = [{"title": c.title, "problem": c.problem, "schedule": c.schedule, "end": c.end,
                            **dataclasses.asdict(c.result)} for c in comparisons]
    payload["flow_samplers"] = [{"title": c.title, "problem": c.problem, "shift": c.shift, "grid": c.grid,
                                 **dataclasses.asdict(c.result)} for c in flow_comparisons]
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=float))
    print(f"\nwrote {out / 'report.md'}, results.json and {len(figures)} figures (PNG, SVG) in {out}/"
          f" (study {runtime:.1f} s)")
    return 0


def _sampler_comparisons(problem, args: argparse.Namespace) -> tuple[list, list, str]:
    """The study's comparisons with diffusers' samplers (:func:`.sampler_comparison.study_comparisons`) and
    with its flow samplers on the same data on the rectified-flow path
    (:func:`.flow_sampler_comparison.flow_study_comparisons`), or ([], [], why not) when torch or diffusers
    is missing: the rest of the study needs neither."""
    try:
        import diffusers  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        return [], [], f"skipped: it needs torch and diffusers ({exc}); pip install 'linmultistep[diffusers]'"
    import warnings

    from .flow_problems import FlowProblem
    from .flow_sampler_comparison import flow_study_comparisons
    from .sampler_comparison import study_comparisons

    with warnings.catch_warnings():
        # the sampler warnings advise against what the comparison measures on purpose (as run_study does)
        from linmultistep.errors import PrecisionWarning

        warnings.simplefilter("ignore", PrecisionWarning)
        return (study_comparisons(problem, args.schedule, args.sampler_steps, samples=args.samples, seed=args.seed),
                flow_study_comparisons(FlowProblem(problem), args.sampler_steps, samples=args.samples, seed=args.seed),
                "")
