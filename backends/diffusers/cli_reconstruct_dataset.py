"""`linmultistep reconstruct-dataset` (see :mod:`linmultistep.backends.diffusers.dataset`)."""

from .cli_dataset import reconstruct_arguments as add_arguments, reconstruct_run as run

__all__ = ["add_arguments", "run"]
