"""Warnings attributed to the caller's line, not to a line inside linmultistep.

``warnings.warn(message, category, stacklevel=outside_stacklevel())`` points the warning at the
first frame outside the ``linmultistep`` package (its backends included), however deep the call that
warns is: a fixed ``stacklevel=4`` is right for one call path only, and the same check is reached from
``lm.sample``, the diffusers binding's ``invert`` and a scheduler's ``step`` at different depths.
Frames of the libraries that only pass a call through on its way to us (diffusers' pipelines and
schedulers, torch's ``no_grad`` decorator, ``contextlib``, ``functools``) are skipped as well, so a
warning raised inside ``pipe(...)`` names the line that called the pipeline.
(Python 3.12's ``warnings.warn(skip_file_prefixes=...)`` does the same by file; this works on 3.9+.)
"""

from __future__ import annotations

import sys
import warnings
from types import FrameType

__all__ = ["outside_stacklevel", "warn_at_caller", "PASS_THROUGH"]

#: module-name prefixes of frames that are never "the caller": this package and the libraries whose code
#: only passes a call through to it
PASS_THROUGH: tuple[str, ...] = ("linmultistep", "diffusers", "torch.utils._contextlib", "torch.autograd.grad_mode",
                                 "contextlib", "functools")


def _passes_through(frame: FrameType) -> bool:
    name = str(frame.f_globals.get("__name__", ""))
    return any(name == p or name.startswith(p + ".") for p in PASS_THROUGH)


def outside_stacklevel() -> int:
    """The ``stacklevel`` for a ``warnings.warn`` call made by this function's caller that names the
    first frame outside the library (1, the warning call itself, if every frame passes through)."""
    frame = sys._getframe(1)  # the function that calls warnings.warn: stacklevel 1
    level = 1
    while frame is not None and _passes_through(frame):
        frame = frame.f_back
        level += 1
    return level if frame is not None else 1


def warn_at_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn(message, category)`` attributed to the first frame outside the library."""
    warnings.warn(message, category, stacklevel=outside_stacklevel())
