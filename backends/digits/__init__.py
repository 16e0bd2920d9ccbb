"""The project's own diffusion model: class-conditional handwritten digits, trained here and shipped.

A diffusers ``UNet2DModel`` (8x8 grey pixels, 10 classes + a null class for classifier-free
guidance) with a DDIM-style scheduler config, stored as a local diffusers pipeline folder inside the
package, so every real end-to-end run works offline::

    from linmultistep.backends.digits import load_pipeline, load_heldout
    pipe = load_pipeline()                      # or DDIMPipeline.from_pretrained(model_path())
    images, labels = load_heldout()             # the 300 held-out digits training never saw
    latent = invert(pipe, images[:4], labels[:4].tolist(), num_steps=50)

The command line knows it as ``--model digits``. ``train.py`` reproduces the weights from a seed,
``classifier.py`` the shipped classifier that measures samples (accuracy, Fréchet distance).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["MODEL_DIR", "BUILTIN_MODELS", "model_path", "load_pipeline", "load_heldout", "load_classifier"]

MODEL_DIR = Path(__file__).resolve().with_name("model")
BUILTIN_MODELS = {"digits": MODEL_DIR}


def model_path(name: "str | os.PathLike" = "digits") -> Path:
    """The folder of a built-in model name, or the given path itself."""
    if str(name) in BUILTIN_MODELS:
        return BUILTIN_MODELS[str(name)]
    return Path(name)


def _check_folder(path: Path) -> None:
    missing = [p for p in ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                           "scheduler/scheduler_config.json") if not (path / p).is_file()]
    if missing:
        raise FileNotFoundError(f"{path} is not a complete digits model folder: missing {', '.join(missing)}")


def load_pipeline(path: "str | os.PathLike | None" = None, dtype: Any = None, device: Any = None) -> Any:
    """The digits pipeline (:class:`DigitsPipeline`) from the shipped folder or ``path``; never downloads."""
    import torch

    from .pipeline import DigitsPipeline

    folder = model_path(path or "digits")
    _check_folder(folder)
    try:
        pipe = DigitsPipeline.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # diffusers/safetensors raise many kinds for a damaged file
        raise ValueError(f"cannot load the model in {folder}: {type(exc).__name__}: {exc}") from exc
    return pipe.to(device=device or "cpu", dtype=dtype or torch.float32)


def load_heldout(path: "str | os.PathLike | None" = None) -> tuple[Any, Any]:
    """The held-out digits as ((300, 1, 8, 8) float32 in [-1, 1], (300,) int64 labels)."""
    from safetensors.torch import load_file

    f = model_path(path or "digits") / "heldout.safetensors"
    if not f.is_file():
        raise FileNotFoundError(f"no held-out data at {f}")
    d = load_file(str(f))
    return d["images"], d["labels"]


def load_classifier(path: "str | os.PathLike | None" = None) -> Any:
    """The shipped digit classifier (eval mode): ``.predict(x)``, ``.features(x)``."""
    from .classifier import load_classifier as _load

    return _load(model_path(path or "digits") / "classifier")
