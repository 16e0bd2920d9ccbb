"""The project's own diffusion model: class-conditional handwritten digits, trained here and shipped.

A diffusers ``UNet2DModel`` (8x8 grey pixels, 10 classes + a null class for classifier-free
guidance) with a DDIM-style scheduler config, stored as a local diffusers pipeline folder inside the
package, so every real end-to-end run works offline::

    from linmultistep.backends.digits import load_pipeline, load_heldout
    pipe = load_pipeline()                      # a DigitsPipeline: pipe([3, 5]) samples a 3 and a 5
    images, labels = load_heldout()             # the 300 held-out digits training never saw
    latent = invert(pipe, images[:4], labels[:4].tolist(), num_steps=50)

Plain diffusers loads the folder too, by its custom-pipeline convention (``model_index.json``
names ``["digits_pipeline", "DigitsPipeline"]``; the folder's ``digits_pipeline.py`` only imports
the class from this package): ``DiffusionPipeline.from_pretrained(model_path(),
trust_remote_code=True)``.

The command line knows it as ``--model digits`` (registered under the entry-point group
``linmultistep.models`` as ``MODELS``). ``train.py``
reproduces the weights from a seed, ``classifier.py`` the shipped classifier that measures samples
(accuracy, Fréchet distance).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from linmultistep.cli import Command

from ..diffusers.models import BuiltinModel

__all__ = ["MODEL_DIR", "MODELS", "COMMANDS", "model_path", "load_pipeline", "load_heldout", "load_classifier"]

MODEL_DIR = Path(__file__).resolve().with_name("model")


def _pipeline_class() -> type:
    from .pipeline import DigitsPipeline

    return DigitsPipeline


MODELS = [BuiltinModel("digits", MODEL_DIR, "class-conditional 8x8 handwritten digits (shipped)",
                       pipeline_class=_pipeline_class, guidance_scale=2.0)]
"""The built-in models of this package (entry-point group ``linmultistep.models``)."""


def _reproduce() -> tuple:
    from . import reproduce

    return reproduce.add_arguments, reproduce.run


def _train() -> tuple:
    from . import train

    return train.add_arguments, train.run


COMMANDS = [
    Command("reproduce", "the seeds' experiments (reconstruction, generation quality, editing, interpolation) "
            "on the shipped digits model", _reproduce, uses_torch=True),
    Command("train-digits", "train the shipped digits diffusion model and its classifier from a seed", _train,
            uses_torch=True),
]
"""The commands of this package (entry-point group ``linmultistep.commands``)."""


def model_path(name: "str | os.PathLike" = "digits") -> Path:
    """The folder a built-in model name or a path means (see
    [`resolve_model`][linmultistep.backends.diffusers.models.resolve_model] for the precedence)."""
    from ..diffusers.models import resolve_model

    return resolve_model(name)


def _check_folder(path: Path) -> None:
    missing = [p for p in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                           "scheduler/scheduler_config.json") if not (path / p).is_file()]
    if missing:
        raise FileNotFoundError(f"{path} is not a complete digits model folder: missing {', '.join(missing)}")


def load_pipeline(path: "str | os.PathLike | None" = None, dtype: Any = None, device: Any = None) -> Any:
    """The digits pipeline ([`DigitsPipeline`][linmultistep.backends.digits.pipeline.DigitsPipeline]) from the
    shipped folder or ``path``, in ``dtype`` (default float32) on ``device`` (default cpu); never downloads.

    The same resolver as ``--model`` on the command line
    ([`load_pipeline`][linmultistep.backends.diffusers.models.load_pipeline])."""
    from ..diffusers.models import load_pipeline as load

    if path is not None and (str(path) != "digits" or Path(path, "model_index.json").is_file()):
        _check_folder(Path(path))  # a folder, not the built-in name: name what is missing in a damaged copy
    return load(path if path is not None else MODEL_DIR, dtype=dtype or "float32", device=device or "cpu")


def load_heldout(path: "str | os.PathLike | None" = None) -> tuple[Any, Any]:
    """The held-out digits as ((300, 1, 8, 8) float32 in [-1, 1], (300,) int64 labels)."""
    from safetensors.torch import load_file

    f = (model_path(path) if path is not None else MODEL_DIR) / "heldout.safetensors"
    if not f.is_file():
        raise FileNotFoundError(f"no held-out data at {f}")
    d = load_file(str(f))
    return d["images"], d["labels"]


def load_classifier(path: "str | os.PathLike | None" = None) -> Any:
    """The shipped digit classifier (eval mode): ``.predict(x)``, ``.features(x)``."""
    from .classifier import load_classifier as _load

    return _load((model_path(path) if path is not None else MODEL_DIR) / "classifier")
