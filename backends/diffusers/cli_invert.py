"""`linmultistep invert` (see :mod:`linmultistep.backends.diffusers.cli`)."""

from .cli import invert_arguments as add_arguments, invert_command as run

__all__ = ["add_arguments", "run"]
