"""Command line: ``linmultistep COMMAND ...``.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args)``;
modules are imported only when their command runs, so ``--help`` needs neither torch nor sympy.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("linmultistep.analysis.demo", "round trip and accuracy of every sampler on a closed-form Gaussian problem"),
    "derive": ("linmultistep.analysis.cli_derive", "derive k-step BELM coefficients, leading LTE term and zero-stability (sympy)"),
    "study": ("linmultistep.analysis.cli_study", "convergence orders, distribution error and round trips against exact solutions; plots and report"),
    "invert": ("linmultistep.backends.diffusers.cli_invert", "invert images to an exact latent with a local diffusers model"),
    "reconstruct": ("linmultistep.backends.diffusers.cli_reconstruct", "images from a latent file (exact reconstruction)"),
    "edit": ("linmultistep.backends.diffusers.cli_edit", "edit images through exact inversion (O-BELM + Direct Inversion)"),
    "invert-dataset": ("linmultistep.backends.diffusers.cli_invert_dataset", "invert a folder of images to sharded latents (one process, torchrun or accelerate launch)"),
    "reconstruct-dataset": ("linmultistep.backends.diffusers.cli_reconstruct_dataset", "reconstruct the images of an invert-dataset folder"),
    "reproduce": ("linmultistep.backends.digits.reproduce", "the seeds' experiments (reconstruction, generation quality, editing, interpolation) on the shipped digits model"),
    "train-digits": ("linmultistep.backends.digits.train", "train the shipped digits diffusion model and its classifier from a seed"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<12} {text}" for name, (_, text) in COMMANDS.items())
    return argparse.ArgumentParser(
        prog="linmultistep",
        description="Exact-inversion diffusion sampling with linear multistep methods.",
        epilog=f"commands:\n{lines}\n\nRun 'linmultistep COMMAND --help' for a command's options; "
               "'linmultistep --version' prints the version.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["--version"], ["-V"]):
        from . import __version__

        print(f"linmultistep {__version__}")
        return 0
    if not argv or argv[0] not in COMMANDS:
        parser = _top_parser()
        parser.add_argument("command", choices=sorted(COMMANDS))
        parser.parse_args(argv[:1] or ["--help"])
        return 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"linmultistep {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    if not any(a.dest == "threads" for a in parser._actions):
        parser.add_argument("--threads", type=int, default=None,
                            help="torch intra-op threads (default: torch's own choice)")
    args = parser.parse_args(argv[1:])
    if getattr(args, "threads", None) is not None and name in _TORCH_COMMANDS:
        _set_threads(args.threads)
    return int(module.run(args) or 0)


_TORCH_COMMANDS = {"invert", "reconstruct", "edit", "invert-dataset", "reconstruct-dataset", "reproduce", "train-digits"}


def _set_threads(n: int | None) -> None:
    """--threads: on a shared 2-core machine torch's default threading can be many times slower."""
    if n is None:
        return
    if n < 1:
        raise SystemExit(f"linmultistep: error: --threads must be at least 1, got {n}")
    import torch

    torch.set_num_threads(n)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
