"""`linmultistep invert-dataset` (see :mod:`linmultistep.backends.diffusers.dataset`)."""

from .cli_dataset import invert_arguments as add_arguments, invert_run as run

__all__ = ["add_arguments", "run"]
