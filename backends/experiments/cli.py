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
    parser.add_argument("--images", nargs="*", default=None,
                        help="other models (no judge shipped, e.g. a local Stable Diffusion folder): image files to "
                             "reconstruct and interpolate")
    parser.add_argument("--prompt", default="", help="other models: the prompt of --images (default '')")
    parser.add_argument("--target-prompt", default=None, help="other models: an edit of the first image to this prompt")


def experiments_for(family: str, quick: bool, gen_samples: "int | None" = None, target_prompt: "str | None" = None,
                    images: int = 0) -> list:
    """The model's list, with the command line's overrides applied."""
    exps = definitions_for(family, quick)
    if gen_samples is not None:
        exps = [e.replace(samples=gen_samples) if e.kind == "generation" else e for e in exps]
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
    exps = experiments_for(family, args.quick, args.gen_samples, args.target_prompt, len(subject.heldout.images))
    report = run_list(exps, subject, args.out, header=header)
    print(f"report written to {report}")
    return 0
