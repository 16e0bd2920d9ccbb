"""`linmultistep reconstruct` (see :mod:`linmultistep.backends.diffusers.cli`)."""

from .cli import reconstruct_arguments as add_arguments, reconstruct_command as run

__all__ = ["add_arguments", "run"]
