"""Command line: ``linmultistep COMMAND ...``.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args)``;
modules are imported only when their command runs, so ``--help`` needs neither torch nor sympy.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
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
    "generate": ("linmultistep.backends.diffusers.cli_generate", "sample images from seeded noise with any method (e.g. --model digits --prompt 3)"),
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
                            help="torch intra-op threads; unset: torch's own choice")
    args = parser.parse_args(argv[1:])
    return _run(name, module, args)


# Errors about what the user gave (values, files, latents, ranges) end in one line and exit code 2,
# like argparse's own; anything else is a bug and keeps its traceback. LINMULTISTEP_DEBUG=1 shows
# the traceback of user errors too.
_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, OverflowError, FloatingPointError, RuntimeError)

# Python keyword names in library messages -> the option the CLI user typed
_OPTION_NAMES = {
    "num_steps": "--steps", "guidance_scale": "--guidance-scale", "source_guidance_scale": "--source-guidance-scale",
    "freeze_last": "--freeze-last", "self_attention_steps": "--self-attention-steps", "strength": "--strength",
    "eps_bound": "--eps-bound", "data_bound": "--data-bound", "check_model=False": "--ignore-model-mismatch",
    "state_dtype": "--state-dtype", "eval_threads": "--eval-threads", "batch_size": "--batch-size",
    "shard_size": "--shard-size", "negative_prompt": "--negative-prompt",
}
_OPTION_RE = re.compile(r"(?<![\w-])(" + "|".join(re.escape(k) for k in sorted(_OPTION_NAMES, key=len, reverse=True))
                        + r")(?![\w])")


def cli_message(message: str) -> str:
    """A library error message in the CLI's words: keyword names become the options typed."""
    message = message.replace("resize='down', 'up' or 'nearest'", "--resize down, up or nearest")
    message = re.sub(r"mode='bits', mode_options=\{'(\w+)': [^}]*\}", lambda m: "--mode bits " + _OPTION_NAMES.get(
        m.group(1), m.group(1)) + " VALUE", message)
    message = re.sub(r"mode_options=\{'(\w+)': [^}]*\}", lambda m: _OPTION_NAMES.get(m.group(1), m.group(0)) + " VALUE",
                     message)
    message = message.replace("(or 'data_bound')", "(or --data-bound)")
    return _OPTION_RE.sub(lambda m: _OPTION_NAMES[m.group(1)], message)


def _run(name: str, module: object, args: argparse.Namespace) -> int:
    import signal

    def terminate(signum: int, frame: object) -> None:  # SIGTERM: unwind, so partial outputs are cleaned up
        raise SystemExit(128 + signum)

    try:
        signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread (e.g. called from a test runner's worker thread)
        pass
    try:
        if getattr(args, "threads", None) is not None and name in _TORCH_COMMANDS:
            _set_threads(args.threads)
        if getattr(args, "quiet", False):
            _quiet_libraries()
        return int(module.run(args) or 0)  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        print(f"linmultistep {name}: interrupted", file=sys.stderr)
        return 130
    except _USER_ERRORS as exc:
        if os.environ.get("LINMULTISTEP_DEBUG") or type(exc) in (RuntimeError, NotImplementedError, RecursionError):
            raise  # a plain RuntimeError is a bug here, not a user error
        text = " ".join(str(exc).split()) or type(exc).__name__
        print(f"linmultistep {name}: error: {cli_message(text)}", file=sys.stderr)
        return 2


def _quiet_libraries() -> None:
    """--quiet: no progress bars or info logs from diffusers/transformers/huggingface_hub either."""
    for lib in ("diffusers", "transformers"):
        try:
            logging_mod = importlib.import_module(f"{lib}.utils.logging")
        except ImportError:
            continue
        logging_mod.set_verbosity_error()
        logging_mod.disable_progress_bar()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


_TORCH_COMMANDS = {"invert", "reconstruct", "edit", "generate", "invert-dataset", "reconstruct-dataset", "reproduce", "train-digits"}


def _set_threads(n: int | None) -> None:
    """--threads: on a shared 2-core machine torch's default threading can be many times slower."""
    if n is None:
        return
    if n < 1:
        raise ValueError(f"--threads must be at least 1, got {n}")
    import torch

    torch.set_num_threads(n)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
