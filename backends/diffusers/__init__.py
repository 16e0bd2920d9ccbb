"""diffusers binding of linmultistep: exact inversion, reconstruction and editing with UNets.

Public: :func:`invert`, :func:`reconstruct`, :func:`edit`, :class:`BELMScheduler`,
:class:`BELMInverseScheduler`, :func:`save_latent`, :func:`load_latent`, :func:`grid_from_config`.
Names are imported on first use, so importing this package is cheap and ``import linmultistep``
never imports torch or diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "invert", "reconstruct", "edit", "BELMScheduler", "BELMInverseScheduler",
    "save_latent", "load_latent", "grid_from_config", "UNetEps", "Conditioning", "encode_prompts",
]

_WHERE = {
    "invert": "pipeline", "reconstruct": "pipeline", "edit": "pipeline",
    "BELMScheduler": "schedulers", "BELMInverseScheduler": "schedulers",
    "save_latent": "latents", "load_latent": "latents",
    "grid_from_config": "grid",
    "UNetEps": "adapters", "Conditioning": "adapters", "encode_prompts": "adapters",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
