"""Command line: ``linmultistep COMMAND ...``.

The commands are registered by the packages that own them: each package lists its
[`Command`][linmultistep.cli.Command]s and declares the list under the entry-point group
``linmultistep.commands`` (``pyproject.toml``), so this module names no consumer and a new
package (or another distribution) adds commands without editing it. A command's own module is
imported only when that command runs, so ``--help`` and every refusal of a bad option come
before torch or diffusers is imported.

Errors about what the user gave end in one line and exit code 2, like argparse's own. An error
carrying the argument at fault ([`ArgumentError`][linmultistep.errors.ArgumentError]) is shown
under the option the user typed for it (read off the command's parser, no message rewriting).
A closed output pipe (``linmultistep derive --k 2 | head``) ends the command silently, as Unix
tools do.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

__all__ = ["Command", "commands", "main", "ENTRY_POINT_GROUP"]

#: The entry-point group under which packages register their command lists.
ENTRY_POINT_GROUP = "linmultistep.commands"

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], "int | None"]


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, one-line help and how to get its functions.

    ``load`` returns ``(add_arguments, run)``; it is called only when the command is used, so a
    package registers commands whose modules import torch without ``linmultistep --help``
    importing it. ``uses_torch``: ``--threads`` sets torch's intra-op threads before ``run``.
    ``options``: library keyword names whose option is spelled differently (``{"num_steps":
    "--steps"}``); the others are read off the parser (``guidance_scale`` -> ``--guidance-scale``).
    """

    name: str
    help: str
    load: Callable[[], "tuple[AddArguments, Run]"]
    uses_torch: bool = False
    options: "dict[str, str] | None" = None


def _registered() -> Iterable[Any]:
    from importlib.metadata import entry_points

    # one group only: entry_points(group=...) reads the installed distributions' entry_points.txt
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        yield from ep.load()


def commands() -> dict[str, Command]:
    """Every registered command by name (in the order of their packages' entry-point names)."""
    found: dict[str, Command] = {}
    for cmd in _registered():
        if cmd.name in found:
            raise RuntimeError(f"command {cmd.name!r} is registered twice (entry-point group {ENTRY_POINT_GROUP})")
        found[cmd.name] = cmd
    return found


def _top_parser(known: dict[str, Command]) -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<19} {cmd.help}" for name, cmd in known.items())
    return argparse.ArgumentParser(
        prog="linmultistep",
        description="Exact-inversion diffusion sampling with linear multistep methods.",
        epilog=f"commands:\n{lines}\n\nRun 'linmultistep COMMAND --help' for a command's options; "
               "'linmultistep --version' prints the version.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``linmultistep COMMAND ...``; returns the exit code (2: a user error, one line on stderr)."""
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:
        return _closed_pipe()


def _main(argv: list[str]) -> int:
    if argv[:1] in (["--version"], ["-V"]):
        from . import __version__

        print(f"linmultistep {__version__}")
        return 0
    known = commands()
    if not known:  # e.g. a source tree on sys.path, or an install older than the entry points
        print(f"linmultistep: no commands are registered (entry-point group {ENTRY_POINT_GROUP}); install the "
              "package: pip install -e .", file=sys.stderr)
        return 2
    if not argv or argv[0] not in known:
        parser = _top_parser(known)
        parser.add_argument("command", choices=list(known))
        parser.parse_args(argv[:1] or ["--help"])
        return 2
    cmd = known[argv[0]]
    add_arguments, run = cmd.load()
    parser = argparse.ArgumentParser(prog=f"linmultistep {cmd.name}", description=cmd.help)
    add_arguments(parser)
    if not any(a.dest == "threads" for a in parser._actions):
        parser.add_argument("--threads", type=int, default=None,
                            help="torch intra-op threads; unset: torch's own choice")
    args = parser.parse_args(argv[1:])
    return _run(cmd, run, args, _option_names(parser, cmd))


def _closed_pipe() -> int:
    """The reader of stdout went away (``| head``): stop quietly like a Unix tool killed by SIGPIPE.
    stdout is pointed at /dev/null so that the interpreter's final flush does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real stdout (a test's capture)
        pass
    return 128 + 13  # what a shell reports for a process ended by SIGPIPE


def _option_names(parser: argparse.ArgumentParser, cmd: Command) -> dict[str, str]:
    """Library keyword name -> the option typed: each option's destination, plus the command's aliases."""
    names = {a.dest: max(a.option_strings, key=len) for a in parser._actions if a.option_strings}
    return {**names, **(cmd.options or {})}


# Errors about what the user gave (values, files, latents, ranges) end in one line and exit code 2,
# like argparse's own; anything else is a bug and keeps its traceback. LINMULTISTEP_DEBUG=1 shows
# the traceback of user errors too.
_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, OverflowError, FloatingPointError, RuntimeError)


def user_message(exc: BaseException, options: dict[str, str]) -> str:
    """The one line shown for a user error, in the option names the user typed.

    The error's ``argument`` field (see [`LinmultistepError`][linmultistep.errors.LinmultistepError])
    names the keyword at fault: an [`ArgumentError`][linmultistep.errors.ArgumentError] is said as
    ``<option> <problem>``; another error whose message starts with that keyword gets the option in
    its place, and a boolean switch written as ``keyword=False``/``True`` becomes the option."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    argument = getattr(exc, "argument", None)
    if not argument:
        return text
    option = options.get(argument, argument)
    problem = getattr(exc, "problem", None)
    if problem is not None:
        return f"{option} {problem}"
    if text.startswith(argument + " "):
        return option + text[len(argument):]
    return text.replace(f"{argument}=False", option).replace(f"{argument}=True", option)


def _run(cmd: Command, run: Run, args: argparse.Namespace, options: dict[str, str]) -> int:
    import signal

    def terminate(signum: int, frame: object) -> None:  # SIGTERM: unwind, so partial outputs are cleaned up
        raise SystemExit(128 + signum)

    try:
        signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread (e.g. called from a test runner's worker thread)
        pass
    try:
        if cmd.uses_torch and getattr(args, "threads", None) is not None:
            _set_threads(args.threads)
        if getattr(args, "quiet", False):
            _quiet_libraries()
        result = int(run(args) or 0)
        sys.stdout.flush()  # a closed pipe is found here, inside the handler below
        return result
    except KeyboardInterrupt:
        print(f"linmultistep {cmd.name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _closed_pipe()
    except _USER_ERRORS as exc:
        if os.environ.get("LINMULTISTEP_DEBUG") or type(exc) in (RuntimeError, NotImplementedError, RecursionError):
            raise  # a plain RuntimeError is a bug here, not a user error
        print(f"linmultistep {cmd.name}: error: {user_message(exc, options)}", file=sys.stderr)
        return 2


def _quiet_libraries() -> None:
    """--quiet: no progress bars or info logs from diffusers/transformers/huggingface_hub either.

    Said through their environment variables, so nothing heavy is imported before the command's own
    checks; libraries a caller already imported (tests, notebooks) are told directly."""
    import importlib

    for var in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY"):
        os.environ[var] = "error"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    for lib in ("diffusers", "transformers"):
        if lib in sys.modules:
            logging_mod = importlib.import_module(f"{lib}.utils.logging")
            logging_mod.set_verbosity_error()
            logging_mod.disable_progress_bar()


def _set_threads(n: int | None) -> None:
    """--threads: on a shared 2-core machine torch's default threading can be many times slower."""
    if n is None:
        return
    if n < 1:
        from .errors import ArgumentError

        raise ArgumentError("threads", f"must be at least 1, got {n}")
    import torch

    torch.set_num_threads(n)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
