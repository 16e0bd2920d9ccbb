"""Which model a name or path means, and loading it: one resolver for the API and the command line.

Precedence of [`resolve_model`][linmultistep.backends.diffusers.models.resolve_model] (``--model``
on the command line, ``load_pipeline(...)`` in Python):

1. A directory holding ``model_index.json`` is a model: that directory (``./digits`` written by
   ``save_pretrained`` is yours, whatever its name).
2. Else a registered name (``digits``, the model shipped with the package, and the names other
   model packages register) is that model. A file or folder of the same name that is not a
   model never shadows it.
3. Else: an existing path that is not a model folder is refused (no ``model_index.json``), and
   anything else is "not found", with the registered names listed. Nothing is downloaded.

Model packages register names with [`BuiltinModel`][linmultistep.backends.diffusers.models.BuiltinModel]
entries, listed under the entry-point group ``linmultistep.models`` (``pyproject.toml``; e.g.
``digits = "linmultistep.backends.digits:MODELS"``), or at run time with
[`register_model`][linmultistep.backends.diffusers.models.register_model]. Neither torch nor
diffusers is imported until a model is loaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

__all__ = ["BuiltinModel", "ModelPathError", "register_model", "builtin_models", "resolve_model", "builtin_model",
           "load_pipeline", "trained_size", "ENTRY_POINT_GROUP"]

#: The entry-point group under which model packages list their built-in models.
ENTRY_POINT_GROUP = "linmultistep.models"


class ModelPathError(ValueError, FileNotFoundError):
    """The name or path does not give a locally stored diffusers model."""


@dataclass(frozen=True)
class BuiltinModel:
    """A model known by name.

    ``folder``: its diffusers pipeline folder (``save_pretrained`` layout). ``pipeline_class``:
    returns the pipeline class to build it with when ``model_index.json`` names a class of the
    project (diffusers' custom-pipeline convention, see docs/digits.md); None: diffusers'
    ``DiffusionPipeline``. ``guidance_scale``: the default guidance of ``generate`` for it.
    """

    name: str
    folder: Path
    description: str = ""
    pipeline_class: "Callable[[], type] | None" = None
    guidance_scale: float = 1.0


_RUNTIME: dict[str, BuiltinModel] = {}


def register_model(model: BuiltinModel) -> None:
    """Make ``model.name`` resolve to ``model`` in this process (entry points do it for installed packages)."""
    if not isinstance(model, BuiltinModel):
        raise TypeError(f"register_model takes a BuiltinModel, got {type(model).__name__}")
    _RUNTIME[model.name] = model


def builtin_models() -> dict[str, BuiltinModel]:
    """Every registered model by name: the installed packages' entry points, then run-time registrations."""
    from importlib.metadata import entry_points

    found: dict[str, BuiltinModel] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        for model in ep.load():
            found[model.name] = model
    return {**found, **_RUNTIME}


@dataclass(frozen=True)
class ResolvedModel:
    """What a name or path resolved to: the folder, and the built-in entry when it is one."""

    folder: Path
    builtin: "BuiltinModel | None" = None


def resolve_model(name_or_path: "str | os.PathLike") -> Path:
    """The model folder ``name_or_path`` means, by the precedence in the module docstring (no torch)."""
    return _resolve(name_or_path).folder


def builtin_model(name_or_path: "str | os.PathLike") -> "BuiltinModel | None":
    """The registered model ``name_or_path`` resolves to (by name, or its folder by path), else None."""
    return _resolve(name_or_path).builtin


def _resolve(name_or_path: "str | os.PathLike") -> ResolvedModel:
    path = Path(name_or_path)
    builtins = builtin_models()
    if (path / "model_index.json").is_file():
        same = [m for m in builtins.values() if _same(m.folder, path)]
        return ResolvedModel(path, same[0] if same else None)
    if str(name_or_path) in builtins:
        model = builtins[str(name_or_path)]
        return ResolvedModel(model.folder, model)
    names = ", ".join(sorted(builtins)) or "none"
    if path.exists():
        raise ModelPathError(f"{path} is not a diffusers pipeline directory (no model_index.json); "
                             f"built-in model names: {names}")
    raise ModelPathError(f"model path not found: {path} (give a local directory written by save_pretrained, or a "
                         f"built-in model name: {names}; nothing is downloaded)")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def trained_size(folder: "str | os.PathLike") -> "tuple[int, int] | None":
    """The (height, width) in pixels the model was trained at, read from its configs (no torch):
    the UNet's (or transformer's) ``sample_size`` times the VAE's down-sampling factor; None if the configs do not say."""
    folder = Path(folder)
    denoiser = folder / "unet" / "config.json"
    if not denoiser.is_file():  # SD3 / FLUX folders: a transformer on the same latent grid
        denoiser = folder / "transformer" / "config.json"
    try:
        unet = json.loads(denoiser.read_text())
    except (OSError, ValueError):
        return None
    size = unet.get("sample_size")
    if size is None:
        return None
    factor = 1
    vae_config = folder / "vae" / "config.json"
    if vae_config.is_file():
        try:
            factor = 2 ** (len(json.loads(vae_config.read_text()).get("block_out_channels", [0])) - 1)
        except (OSError, ValueError):
            return None
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return int(h) * factor, int(w) * factor


def load_pipeline(name_or_path: "str | os.PathLike", dtype: Any = "float32", device: Any = None,
                  quiet: bool = False) -> Any:
    """A diffusers pipeline from a built-in name or a local folder (``local_files_only``: never downloads).

    ``dtype``: a torch dtype or its name, given to ``from_pretrained`` as ``torch_dtype`` (modules a
    model keeps in float32 stay so). ``device`` None: cuda if available, else cpu. The pipeline's
    own progress bar is off (the binding's calls take ``progress=``); ``quiet``: no loading bar.
    """
    resolved = _resolve(name_or_path)
    import torch

    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if not isinstance(torch_dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch dtype or its name, got {dtype!r}")
    from diffusers.utils import logging as diffusers_logging

    bar = diffusers_logging.is_progress_bar_enabled()
    if quiet:
        diffusers_logging.disable_progress_bar()
    try:
        pipe = _from_folder(resolved, torch_dtype)
    except (ModelPathError, TypeError):
        raise
    except Exception as exc:  # diffusers/safetensors raise many kinds for a damaged folder
        raise ValueError(f"cannot load the model in {resolved.folder}: {type(exc).__name__}: {exc}") from exc
    finally:
        if quiet and bar:
            diffusers_logging.enable_progress_bar()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = pipe.to(device)
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe


def _class_name(index: dict) -> str:
    """The pipeline class ``model_index.json`` names: a diffusers class, or [file, class] (a custom pipeline)."""
    name = index.get("_class_name")
    return str(name[-1]) if isinstance(name, (list, tuple)) else str(name)


def _project_class(resolved: ResolvedModel, class_name: str) -> "type | None":
    """The registered pipeline class of that name (the model's own, or one a copy or a saved pipeline names)."""
    candidates = [resolved.builtin] if resolved.builtin is not None else []
    candidates += [m for m in builtin_models().values() if m is not resolved.builtin]
    for model in candidates:
        if model.pipeline_class is not None:
            cls = model.pipeline_class()
            if cls.__name__ == class_name:
                return cls
    return None


def _from_folder(resolved: ResolvedModel, torch_dtype: Any) -> Any:
    folder = resolved.folder
    index = json.loads((folder / "model_index.json").read_text())
    cls = _project_class(resolved, _class_name(index))
    if cls is not None:
        return _components_into(cls, folder, index, torch_dtype)
    import warnings

    from diffusers import DiffusionPipeline

    with warnings.catch_warnings():  # diffusers >= 0.36 renamed torch_dtype to dtype; the old name works in all
        warnings.filterwarnings("ignore", message=".*torch_dtype.* is deprecated", category=FutureWarning)
        # a component model_index.json lists as [null, null] (SD3 without T5, SD without a safety checker) must
        # be passed as None: diffusers refuses to build a pipeline whose non-optional components are left out
        absent = {k: None for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[:1] == [None]}
        return DiffusionPipeline.from_pretrained(str(folder), torch_dtype=torch_dtype, local_files_only=True, **absent)


def _components_into(cls: type, folder: Path, index: dict, torch_dtype: Any) -> Any:
    """``cls`` built from the folder's components, as ``DiffusionPipeline.from_pretrained`` does, without
    running the folder's pipeline file (the class comes from the installed package)."""
    import importlib

    from diffusers import SchedulerMixin

    parts = {}
    for key, spec in index.items():
        if key.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        library, class_name = spec
        component = getattr(importlib.import_module(library), class_name)
        if isinstance(component, type) and issubclass(component, SchedulerMixin):
            parts[key] = component.from_pretrained(str(folder / key))
        else:
            parts[key] = component.from_pretrained(str(folder / key), torch_dtype=torch_dtype, local_files_only=True)
    pipe = cls(**parts)
    pipe.register_to_config(_name_or_path=str(folder))
    return pipe
