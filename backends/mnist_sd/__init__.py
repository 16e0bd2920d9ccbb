"""mnist-sd: a small Stable-Diffusion-architecture text-to-image model of MNIST digits, trained here.

The same parts as Stable Diffusion v1 at a tiny size: an ``AutoencoderKL`` (32x32x1 pixels <-> 8x8x4
latents, ``scaling_factor`` set from the data), a frozen ``CLIPTextModel`` with a word-level
``CLIPTokenizer``, a cross-attention ``UNet2DConditionModel`` trained with prompt dropout (empty prompt =
unconditional), SD's DDIM scheduler config. Captions carry the digit and three attributes measured from
each image (``data.py``), e.g. ``"a thick wide seven slanted left"``. The folder is a plain diffusers
folder, so::

    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(model_path("mnist-sd"))   # offline

    from linmultistep.backends.mnist_sd import load_pipeline, load_heldout, load_judge
    pipe = load_pipeline()                       # the same, with a clear error for a missing/damaged folder
    images, labels, captions = load_heldout()    # the 500 held-out digits the model never saw
    judge = load_judge()                         # .predict(x) -> digit and attribute classes; .features(x)

``train.py`` trains it (``main(argv)``: ``--workdir``, ``--stage``, ``--resume``, ``--seed``), ``build.py``
writes the folder, ``judge.py`` is the independent classifier that measures samples.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from linmultistep.cli import Command

from ..diffusers.models import BuiltinModel

__all__ = ["MODEL_DIR", "MODELS", "COMMANDS", "REQUIRED_FILES", "model_path", "check_folder",
           "check_pipeline_folder", "package_folder", "load_pipeline", "load_heldout", "load_judge", "load_attribute_bins"]

MODEL_DIR = Path(__file__).resolve().with_name("model")


def _train() -> tuple:
    from . import train

    return train.add_arguments, train.run


# registered under the entry-point groups linmultistep.models / linmultistep.commands (pyproject.toml)
MODELS = [BuiltinModel("mnist-sd", MODEL_DIR, "Stable-Diffusion-architecture text-to-image model of MNIST digits, "
                       "captioned with measured attributes (shipped)", guidance_scale=3.0)]
COMMANDS = [Command("train-mnist-sd", "train the shipped mnist-sd model (VAE, UNet, judge) from a seed, resumably",
                    _train, uses_torch=True)]
REQUIRED_FILES = ("model_index.json", "scheduler/scheduler_config.json", "vae/config.json",
                  "vae/diffusion_pytorch_model.safetensors", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                  "text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt")


def model_path(name: "str | os.PathLike" = "mnist-sd") -> Path:
    """The folder a built-in model name or a path means, by the one precedence of the API and the command
    line ([`resolve_model`][linmultistep.backends.diffusers.models.resolve_model]: a folder holding
    ``model_index.json`` first, whatever its name; then a built-in name; a folder that is not a model
    never shadows a built-in name)."""
    from ..diffusers.models import resolve_model

    return resolve_model(name)


def package_folder(path: "str | os.PathLike | None", shipped: Path) -> Path:
    """The folder ``path`` means for a model package's loaders: ``None``, the ``shipped`` folder; else by
    [`model_path`][linmultistep.backends.mnist_sd.model_path]'s precedence, where a path that names no
    model (absent, or a folder without ``model_index.json``, e.g. of held-out data alone) is returned as
    given, so that the loader's own check names what is missing there. Shared by the model packages."""
    from ..diffusers.models import ModelPathError, resolve_model

    if path is None:
        return shipped
    try:
        return resolve_model(path)
    except ModelPathError:
        return Path(path)


def check_folder(path: "str | os.PathLike") -> Path:
    """``path`` as a Path if it holds every file a Stable Diffusion folder needs; else FileNotFoundError naming them."""
    return check_pipeline_folder(path, "mnist-sd", MODEL_DIR, REQUIRED_FILES, "StableDiffusionPipeline", "Stable Diffusion")


def check_pipeline_folder(path: "str | os.PathLike", name: str, shipped: Path, required: "tuple[str, ...]",
                          class_name: str, kind: str) -> Path:
    """``path`` as a Path if it is a complete ``kind`` folder (every file of ``required``, ``model_index.json``
    naming ``class_name``); else an error naming what is missing or wrong. ``name``/``shipped``: the built-in
    model's name and folder (a missing shipped folder is said to be not shipped yet). Shared by the model packages."""
    folder = Path(path)
    if not folder.is_dir():
        hint = " (the trained weights are not shipped in this checkout yet)" if folder == shipped else ""
        raise FileNotFoundError(f"no {name} model folder at {folder}{hint}")
    missing = [p for p in required if not (folder / p).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a complete {kind} model folder: missing {', '.join(missing)}")
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except ValueError as exc:
        raise ValueError(f"{folder / 'model_index.json'} is not valid JSON: {exc}") from exc
    if not isinstance(index, dict) or index.get("_class_name") != class_name:
        found = index.get("_class_name") if isinstance(index, dict) else type(index).__name__
        raise ValueError(f"{folder / 'model_index.json'} names {found!r}, expected {class_name!r}")
    return folder


def load_pipeline(path: "str | os.PathLike | None" = None, dtype: Any = None, device: Any = None) -> Any:
    """``StableDiffusionPipeline`` from the shipped folder or ``path`` (a built-in name or a folder, see
    [`model_path`][linmultistep.backends.mnist_sd.model_path]) in ``dtype`` (default float32) on ``device``
    (default cpu); never downloads. The folder is checked first, so a damaged copy's missing files are named;
    then the one loader of the API and the command line
    ([`load_pipeline`][linmultistep.backends.diffusers.models.load_pipeline]) reads it."""
    from ..diffusers.models import load_pipeline as load

    folder = check_folder(package_folder(path, MODEL_DIR))
    return load(folder, dtype=dtype or "float32", device=device or "cpu", quiet=True)


def load_heldout(path: "str | os.PathLike | None" = None) -> tuple[Any, Any, list[str]]:
    """The held-out digits: ((500, 1, 32, 32) float32 in [-1, 1], (500,) int64 labels, their captions)."""
    import torch
    from safetensors.torch import load_file

    folder = package_folder(path, MODEL_DIR)
    f = folder / "heldout.safetensors"
    if not f.is_file():
        raise FileNotFoundError(f"no held-out data at {f}")
    from .data import to_unit_range

    d = load_file(str(f))
    images = torch.from_numpy(to_unit_range(d["pixels"].numpy()))  # bit for bit what training read
    caps = json.loads((folder / "heldout_captions.json").read_text())
    return images, d["labels"], caps


def load_judge(path: "str | os.PathLike | None" = None) -> Any:
    """The judge (eval mode): ``.predict(x)`` -> {digit, thickness, width, slant} class indices; ``.features(x)``."""
    from .judge import load_judge as _load

    return _load(package_folder(path, MODEL_DIR) / "judge")


def load_attribute_bins(path: "str | os.PathLike | None" = None) -> Any:
    """The caption thresholds (``data.AttributeBins``) the model was trained with."""
    from .data import AttributeBins

    return AttributeBins.load(package_folder(path, MODEL_DIR) / "attributes.json")
