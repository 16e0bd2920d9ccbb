"""The commands of the analysis package, registered under the entry-point group
``linmultistep.commands`` (``pyproject.toml``: ``analysis = "linmultistep.analysis.commands:COMMANDS"``).
Each command's module is imported when it runs."""

from __future__ import annotations

from linmultistep.cli import Command

__all__ = ["COMMANDS"]


def _demo() -> tuple:
    from . import demo

    return demo.add_arguments, demo.run


def _derive() -> tuple:
    from . import cli_derive

    return cli_derive.add_arguments, cli_derive.run


def _study() -> tuple:
    from . import cli_study

    return cli_study.add_arguments, cli_study.run


COMMANDS = [
    Command("demo", "round trip and accuracy of every sampler on a closed-form Gaussian problem", _demo),
    Command("derive", "derive k-step BELM coefficients, leading LTE term and zero-stability (sympy)", _derive),
    Command("study", "convergence orders, distribution error and round trips against exact solutions; plots and "
            "report", _study),
]
