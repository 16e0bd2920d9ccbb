"""The commands of the diffusers binding, registered under the entry-point group
``linmultistep.commands`` (``pyproject.toml``: ``diffusers = "linmultistep.backends.diffusers.commands:COMMANDS"``).

Importing this module imports neither torch nor diffusers: each command's functions are fetched
when it runs.
"""

from __future__ import annotations

from linmultistep.cli import Command

__all__ = ["COMMANDS"]


def _cli(add: str, run: str):
    def load() -> tuple:
        from . import cli

        return getattr(cli, add), getattr(cli, run)

    return load


def _dataset(add: str, run: str):
    def load() -> tuple:
        from . import cli_dataset

        return getattr(cli_dataset, add), getattr(cli_dataset, run)

    return load


_NAMES = {"num_steps": "--steps", "check_model": "--ignore-model-mismatch", "state_dtype": "--state-dtype"}

COMMANDS = [
    Command("invert", "invert images to an exact latent with a local diffusers model",
            _cli("invert_arguments", "invert_command"), uses_torch=True, options=_NAMES),
    Command("reconstruct", "images from a latent file (exact reconstruction)",
            _cli("reconstruct_arguments", "reconstruct_command"), uses_torch=True, options=_NAMES),
    Command("edit", "edit images through exact inversion (O-BELM + Direct Inversion)",
            _cli("edit_arguments", "edit_command"), uses_torch=True, options=_NAMES),
    Command("generate", "sample images from seeded noise with any method (e.g. --model digits --prompt 3)",
            _cli("generate_arguments", "generate_command"), uses_torch=True, options=_NAMES),
    Command("invert-dataset", "invert a folder of images to sharded latents (one process, torchrun or accelerate "
            "launch)", _dataset("invert_arguments", "invert_run"), uses_torch=True, options=_NAMES),
    Command("reconstruct-dataset", "reconstruct the images of an invert-dataset folder",
            _dataset("reconstruct_arguments", "reconstruct_run"), uses_torch=True, options=_NAMES),
]
