"""Compatibility: ``reproduce`` moved to :mod:`linmultistep.backends.experiments` (experiments as data, one
runner for digits, mnist-sd and mnist-flow). The command's registration imports these two names."""

from __future__ import annotations

from ..experiments.cli import add_arguments, run

__all__ = ["add_arguments", "run"]
