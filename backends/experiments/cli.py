"""``linmultistep reproduce``: the seeds' experiments on a model, one command.

    linmultistep reproduce --out out/reproduce                       # the shipped digits model
    linmultistep reproduce --model mnist-sd --out out/mnist-sd       # the latent text-to-image model
    linmultistep reproduce --model mnist-flow --out out/mnist-flow   # the rectified-flow model
    linmultistep reproduce --quick ...                               # the short version (`make run`)
    linmultistep reproduce --model PATH --images a.png b.png --prompt "a photo" [--target-prompt ...]

The experiment lists are data (``definitions.py``); one runner executes them (``runner.py``).
"""

from __future__ import annotations

import argparse

from .definitions import definitions_for

__all__ = ["add_arguments", "run", "experiments_for"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/reproduce", help="output folder (default out/reproduce)")
    parser.add_argument("--model", default="digits", help="digits, mnist-sd, mnist-flow or a local diffusers folder "
                        "(default digits)")
    parser.add_argument("--quick", action="store_true", help="the short list of the model (a minute or two)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--gen-samples", type=int, default=None,
                        help="samples per seed in the generation table (default: the model's list)")
    # resizing a list for a slow machine: the same experiments, fewer steps/seeds/samples (say so in the report)
    parser.add_argument("--recon-steps", type=int, nargs="+", default=None, help="step counts of the reconstruction tables")
    parser.add_argument("--only", nargs="+", default=None, help="run only the experiments of these names (the parts of "
                        "one report run in parallel; `python -m linmultistep.backends.experiments.report --merge` joins them)")
    parser.add_argument("--samplers", nargs="+", default=None, help="keep only the samplers of these labels")
    parser.add_argument("--recon-guidance", type=float, nargs="+", default=None,
                        help="guidance scales of the reconstruction tables")
    parser.add_argument("--float64-guidance", type=float, nargs="+", default=None,
                        help="guidance scales of the float64 reconstruction table")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds of the generation table")
    parser.add_argument("--reference-steps", type=int, default=None,
                        help="steps of the reference of the generation and samplers tables")
    parser.add_argument("--edit-steps", type=int, default=None, help="steps of the edits and interpolations")
    parser.add_argument("--strengths", type=float, nargs="+", default=None, help="strengths of the edit sweep")
    parser.add_argument("--images", nargs="*", default=None,
                        help="other models (no judge shipped, e.g. a local Stable Diffusion folder): image files to "
                             "reconstruct and interpolate")
    parser.add_argument("--prompt", default="", help="other models: the prompt of --images (default '')")
    parser.add_argument("--target-prompt", default=None, help="other models: an edit of the first image to this prompt")


def experiments_for(family: str, quick: bool, gen_samples: "int | None" = None, target_prompt: "str | None" = None,
                    images: int = 0, args: "argparse.Namespace | None" = None) -> list:
    """The model's list, with the command line's overrides applied."""
    exps = definitions_for(family, quick)
    if gen_samples is not None:
        exps = [e.replace(samples=gen_samples) if e.kind == "generation" else e for e in exps]
    a = vars(args) if args is not None else {}
    out = []
    for e in exps:
        if e.kind == "reconstruction" and a.get("recon_steps"):
            e = e.replace(steps=tuple(a["recon_steps"]))
        if a.get("samplers") and any(x.label in a["samplers"] for x in e.samplers):
            e = e.replace(samplers=tuple(x for x in e.samplers if x.label in a["samplers"]))
        if e.kind == "reconstruction" and a.get("recon_guidance"):
            e = e.replace(guidance=tuple(a["recon_guidance"]))
        if e.kind == "reconstruction" and e.dtypes == ("float64",) and a.get("float64_guidance"):
            e = e.replace(guidance=tuple(a["float64_guidance"]))
        if e.kind == "generation" and a.get("seeds"):
            e = e.replace(seeds=tuple(a["seeds"]))
        if e.kind in ("generation", "samplers") and a.get("reference_steps"):
            e = e.replace(reference_steps=a["reference_steps"])
        if e.kind in ("edit", "interpolation") and a.get("edit_steps"):
            e = e.replace(steps=(a["edit_steps"],))
        if e.kind == "edit" and a.get("strengths"):
            e = e.replace(strengths=tuple(a["strengths"]))
        out.append(e)
    exps = out
    if a.get("only"):
        unknown = sorted(set(a["only"]) - {e.name for e in exps})
        if unknown:
            raise ValueError(f"--only names {unknown}, not experiments of this model's list {[e.name for e in exps]}")
        exps = [e for e in exps if e.name in a["only"]]
    if family == "generic":
        exps = [e.replace(images=images) if e.kind == "reconstruction" else e for e in exps]
        exps = [e for e in exps if e.kind != "edit" or target_prompt]
        if images < 2:
            exps = [e for e in exps if e.kind != "interpolation"]
    return exps


def run(args: argparse.Namespace) -> int:
    import torch

    from .models import family_of, subject_for
    from .runner import run as run_list

    torch.set_num_threads(args.threads)
    family = family_of(args.model)
    subject, header = subject_for(args.model, args.images, args.prompt)
    subject.target_prompt = args.target_prompt
    exps = experiments_for(family, args.quick, args.gen_samples, args.target_prompt, len(subject.heldout.images), args)
    import shlex
    import sys

    command = "linmultistep reproduce " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["reproduce"] else ""
    header = header + ([f"Command: `{command}` (results.json holds every experiment's definition).", ""] if command else [])
    report = run_list(exps, subject, args.out, header=header)
    print(f"report written to {report}")
    return 0
