"""Typed results of the pipeline functions, in diffusers' ``BaseOutput`` convention.

``reconstruct`` and ``edit`` return these by default; ``return_dict=False`` gives the plain tuple
of their fields, in order (as diffusers pipelines do). :func:`~.pipeline.invert` returns the core's
:class:`~linmultistep.State` itself: it already is a typed, frozen record (window, method, mode,
grid fingerprint, metadata) and is what ``save_latent``, ``reconstruct`` and ``linmultistep.sample``
take.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.utils import BaseOutput

from linmultistep import State
from linmultistep.caller import outside_stacklevel

from .images import resize_to, to_pil

__all__ = ["GenerationOutput", "ReconstructionOutput", "EditOutput", "pipeline_progress", "output_images"]


@dataclass
class GenerationOutput(BaseOutput):
    """``images``: a (B, C, H, W) tensor in [-1, 1] or PIL images (``output_type``); ``latents``: the
    model-space x_0 the sampler reached; ``noise``: the x_N it started from (to sample again)."""

    images: Any
    latents: torch.Tensor
    noise: torch.Tensor


@dataclass
class ReconstructionOutput(BaseOutput):
    """``images``: PIL images or a (B, C, H, W) tensor in [-1, 1] (``output_type``); ``latents``: the
    model-space x_0 the sampler reached (before the VAE decoder)."""

    images: Any
    latents: torch.Tensor


@dataclass
class EditOutput(BaseOutput):
    """``images`` and ``latents`` of the edited result, as in :class:`ReconstructionOutput`, and
    ``inversion``: the exact latent of the source images (with the source prompt and guidance), from
    which ``reconstruct`` gives the inputs back; ``save_latent`` writes it (``edit --save-latent``).
    ``source_latents``: the x_0 of the freely sampled source branch of a classical Prompt-to-Prompt
    edit (``direct_inversion=False, cross_attention_steps > 0``), else None (and left out of the tuple)."""

    images: Any
    latents: torch.Tensor
    inversion: State
    source_latents: "torch.Tensor | None" = None


def pipeline_progress(pipe: Any, progress: "bool | dict | None") -> "bool | dict":
    """The core's ``progress=`` for a pipeline call: ``None`` follows the pipeline's own
    ``set_progress_bar_config(...)`` (on by default, as in diffusers; ``disable=True`` turns it off),
    a bool or a dict of tqdm options is used as given."""
    if progress is not None:
        if not isinstance(progress, (bool, dict)):
            raise TypeError(f"progress must be None, a bool or a dict of tqdm options, got {type(progress).__name__}")
        return progress
    config = getattr(pipe, "_progress_bar_config", None)
    config = config if isinstance(config, dict) else {}
    if config.get("disable"):
        return False
    return {k: v for k, v in config.items() if k != "disable"} or True


def output_images(x: torch.Tensor, kind: str, output_type: str | None, sizes: "list | None" = None) -> Any:
    """Decoded images ``x`` as ``output_type`` (default: ``kind``, what the inputs were), at ``sizes``
    (the (height, width) each input had before ``resize=`` fitted it to the model) when given."""
    out = output_type or kind
    if out not in ("pil", "pt"):
        raise ValueError(f"output_type must be 'pil' or 'pt', got {output_type!r}")
    if sizes and len({tuple(sz) for sz in sizes}) == 1:
        x, sizes = resize_to(x, tuple(sizes[0])), None
    if out == "pt":
        if sizes:
            warnings.warn("the inputs had different sizes before resize=; a tensor cannot hold them, so the images "
                          "are returned at the model's size (output_type='pil' restores each size)", UserWarning,
                          stacklevel=outside_stacklevel())
        return x
    if sizes:
        return [to_pil(resize_to(x[k:k + 1], tuple(sz)))[0] for k, sz in enumerate(sizes)]
    return to_pil(x)
