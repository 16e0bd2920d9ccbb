"""The integration loop, kept under its earlier module name: it lives in :mod:`linmultistep.stepping`
beside :func:`~linmultistep.stepping.step`, the one loop every entry point runs."""

from .context import StepContext
from .stepping import Direction, StepInfo, integrate, progress_label

__all__ = ["StepContext", "StepInfo", "integrate", "Direction", "progress_label"]
