"""diffusers binding of linmultistep: exact inversion, reconstruction and editing with UNets.

Public: [`invert`][linmultistep.backends.diffusers.pipeline.invert],
[`reconstruct`][linmultistep.backends.diffusers.pipeline.reconstruct],
[`edit`][linmultistep.backends.diffusers.pipeline.edit],
[`generate`][linmultistep.backends.diffusers.generation.generate],
[`BELMScheduler`][linmultistep.backends.diffusers.schedulers.BELMScheduler],
[`BELMInverseScheduler`][linmultistep.backends.diffusers.schedulers.BELMInverseScheduler],
[`save_latent`][linmultistep.backends.diffusers.latents.save_latent],
[`load_latent`][linmultistep.backends.diffusers.latents.load_latent],
[`grid_from_config`][linmultistep.backends.diffusers.grid.grid_from_config],
[`load_pipeline`][linmultistep.backends.diffusers.models.load_pipeline] (a built-in name or a local
folder) and [`UNetDenoiser`][linmultistep.backends.diffusers.denoiser.UNetDenoiser] (a k-diffusion-style
``model(x, sigma)`` around a diffusers UNet).
Names are imported on first use, so importing this package is cheap and ``import linmultistep``
never imports torch or diffusers. Every public name is a function or class, never a module of the
same name (``generate`` is the function; its module is ``generation``).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "invert", "reconstruct", "edit", "generate", "BELMScheduler", "BELMInverseScheduler",
    "save_latent", "load_latent", "grid_from_config", "UNetEps", "Conditioning", "encode_prompts",
    "load_pipeline", "resolve_model", "register_model", "BuiltinModel", "UNetDenoiser",
]

_WHERE = {
    "invert": "pipeline", "reconstruct": "pipeline", "edit": "pipeline", "generate": "generation",
    "BELMScheduler": "schedulers", "BELMInverseScheduler": "schedulers",
    "save_latent": "latents", "load_latent": "latents",
    "grid_from_config": "grid",
    "UNetEps": "adapters", "Conditioning": "adapters", "encode_prompts": "adapters",
    "load_pipeline": "models", "resolve_model": "models", "register_model": "models", "BuiltinModel": "models",
    "UNetDenoiser": "denoiser",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
