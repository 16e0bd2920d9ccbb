"""Warnings attributed to the caller's line, not to a line inside linmultistep.

``warnings.warn(message, category, stacklevel=outside_stacklevel())`` points the warning at the
first frame outside the ``linmultistep`` package, however deep the call that warns is (a fixed
``stacklevel=4`` is right for one call path only).
"""

from __future__ import annotations

import sys

__all__ = ["outside_stacklevel"]


def outside_stacklevel() -> int:
    """The ``stacklevel`` for a ``warnings.warn`` call made by this function's caller that names the
    first frame outside the linmultistep package (1 if every frame is inside it)."""
    frame = sys._getframe(1)  # the function that is about to call warnings.warn: stacklevel 1
    level = 1
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith("linmultistep"):
        frame = frame.f_back
        level += 1
    return level if frame is not None else 1
