"""`linmultistep edit` (see :mod:`linmultistep.backends.diffusers.cli`)."""

from .cli import edit_arguments as add_arguments, edit_command as run

__all__ = ["add_arguments", "run"]
