"""mnist-flow: a rectified-flow text-to-image model of Stable Diffusion 3's architecture, trained here.

An ``SD3Transformer2DModel`` (2.3 M parameters) on mnist-sd's 8x8x4 latents, two frozen
``CLIPTextModelWithProjection`` encoders with mnist-sd's word-level tokenizer, no T5, and SD3's
``FlowMatchEulerDiscreteScheduler`` (shift 3). Trained as SD3 (``train.py``) on the same captions as
mnist-sd ("a thick wide seven slanted left"). A plain diffusers folder::

    from diffusers import StableDiffusion3Pipeline
    pipe = StableDiffusion3Pipeline.from_pretrained(model_path("mnist-flow"), text_encoder_3=None, tokenizer_3=None)
    images = pipe("a thin narrow one upright", max_sequence_length=16, height=32, width=32).images

``max_sequence_length=16``: the T5 slot of SD3's prompt embeddings is zeros of that many tokens when a
pipeline has no T5, and the model was trained with 16 (diffusers' default is 256).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from linmultistep.cli import Command

from ..diffusers.models import BuiltinModel
from ..mnist_sd import check_pipeline_folder, package_folder

__all__ = ["MODEL_DIR", "MODELS", "COMMANDS", "MAX_SEQUENCE_LENGTH", "REQUIRED_FILES", "model_path", "check_folder",
           "load_pipeline"]

MODEL_DIR = Path(__file__).resolve().with_name("model")
MAX_SEQUENCE_LENGTH = 16


def _train() -> tuple:
    from . import train

    return train.add_arguments, train.run


# registered under the entry-point groups linmultistep.models / linmultistep.commands (pyproject.toml)
MODELS = [BuiltinModel("mnist-flow", MODEL_DIR, "rectified-flow model of Stable Diffusion 3's architecture on "
                       "mnist-sd's latents and captions (shipped)", guidance_scale=3.0)]
COMMANDS = [Command("train-mnist-flow", "train the shipped mnist-flow transformer from a seed on mnist-sd's latents, "
                    "resumably", _train, uses_torch=True)]
REQUIRED_FILES = ("model_index.json", "scheduler/scheduler_config.json", "vae/config.json",
                  "vae/diffusion_pytorch_model.safetensors", "transformer/config.json",
                  "transformer/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
                  "text_encoder/model.safetensors", "text_encoder_2/config.json", "text_encoder_2/model.safetensors",
                  "tokenizer/vocab.json", "tokenizer_2/vocab.json")


def model_path(name: "str | os.PathLike" = "mnist-flow") -> Path:
    """The folder a built-in model name or a path means, by the one precedence of the API and the command
    line ([`resolve_model`][linmultistep.backends.diffusers.models.resolve_model])."""
    from ..diffusers.models import resolve_model

    return resolve_model(name)


def check_folder(path: "str | os.PathLike") -> Path:
    """``path`` as a Path if it holds every file an SD3 folder of this kind needs; else an error naming them."""
    return check_pipeline_folder(path, "mnist-flow", MODEL_DIR, REQUIRED_FILES, "StableDiffusion3Pipeline",
                                 "Stable Diffusion 3")


def load_pipeline(path: "str | os.PathLike | None" = None, dtype: Any = None, device: Any = None) -> Any:
    """``StableDiffusion3Pipeline`` from the shipped folder or ``path`` (a built-in name or a folder) in
    ``dtype`` (default float32) on ``device`` (default cpu); never downloads. The folder is checked first
    (missing files named), then read by the one loader of the API and the command line
    ([`load_pipeline`][linmultistep.backends.diffusers.models.load_pipeline]), which loads the absent T5
    (``text_encoder_3`` / ``tokenizer_3`` listed as null) as None, diffusers' documented way."""
    from ..diffusers.models import load_pipeline as load

    folder = check_folder(package_folder(path, MODEL_DIR))
    return load(folder, dtype=dtype or "float32", device=device or "cpu", quiet=True)
