"""`linmultistep generate` (see :mod:`linmultistep.backends.diffusers.cli`)."""

from .cli import generate_arguments as add_arguments, generate_command as run

__all__ = ["add_arguments", "run"]
