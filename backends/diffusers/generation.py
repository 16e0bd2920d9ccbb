"""Sampling from noise with any method of the core: ``generate(pipe, prompt, ...)``."""

from __future__ import annotations

from typing import Any, Sequence

import torch

import linmultistep as lms

from .adapters import UNetEps
from .grid import grid_from_config
from .outputs import GenerationOutput, output_images, pipeline_progress
from .pipeline import conditioning_for, decode_latents, parts_of
from .settings import InversionSettings, bound_hint, check_arguments, settings_of

__all__ = ["generate", "initial_noise"]


def initial_noise(pipe: Any, batch: int, height: int | None = None, width: int | None = None,
                  generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal x_N of the model's latent shape (B, C, h, w), drawn on the CPU with ``generator``
    (so a seed gives the same noise on every device), in ``dtype``."""
    parts = parts_of(pipe)
    size = int(parts.unet.config.sample_size) * parts.vae_factor
    h, w = int(height or size), int(width or size)
    f = parts.vae_factor
    shape = (int(batch), int(parts.unet.config.in_channels), h // f, w // f)
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)


@torch.no_grad()
def generate(
    pipe: Any,
    prompt: "str | Sequence[Any] | int | None" = "",
    *,
    settings: InversionSettings | None = None,
    guidance_scale: float = 1.0,
    negative_prompt: "str | Sequence[str] | None" = None,
    batch: int | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    output_type: str = "pt",
    return_dict: bool = True,
    progress: bool | dict | None = None,
    **options: Any,
) -> "GenerationOutput | tuple":
    """Sample images from noise x_N along the ``num_steps`` grid of the pipeline's scheduler.

    ``settings`` / keywords: the :class:`~.settings.InversionSettings` fields ``num_steps`` (50),
    ``method`` ('obelm'), ``mode``, ``mode_options``, ``state_dtype``, ``eval_batch``, ``eval_threads``.

    ``prompt``: text (text-conditioned UNets), class label(s) (class-conditional UNet2DModel), or
    nothing (unconditional). ``noise`` (B, C, h, w) is used as x_N when given, else it is drawn with
    ``generator`` (batch = the number of prompts/labels, or ``batch``). Returns a
    [`GenerationOutput`][linmultistep.backends.diffusers.outputs.GenerationOutput] (``return_dict=False``: the tuple (images, latents, noise))
    with images in [-1, 1] (``output_type='pt'``) or PIL images (``'pil'``). ``progress`` None follows
    the pipeline's ``set_progress_bar_config`` (on by default).
    """
    parts = parts_of(pipe)
    s = settings_of("generate", settings, options, unused=("resize", "allow_size_mismatch"))
    state_dtype = s.state_dtype
    check_arguments(generator, state_dtype, guidance_scale=guidance_scale)
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    if noise is None:
        n = batch or (len(prompt) if isinstance(prompt, (list, tuple)) else 1)
        noise = initial_noise(parts, n, generator=generator, dtype=state_dtype or parts.dtype)
    elif not isinstance(noise, torch.Tensor) or noise.ndim != 4:
        raise ValueError(f"noise must be a (B, C, h, w) tensor, got {getattr(noise, 'shape', type(noise).__name__)}")
    x_n = noise.to(device=parts.device, dtype=state_dtype or noise.dtype)
    grid = grid_from_config(parts.scheduler, s.steps(50))
    method_obj = s.method_object()
    cond = conditioning_for(parts, x_n.shape[0], prompt, guidance_scale, negative_prompt)
    eps_fn = UNetEps(parts.unet, grid, parts.prediction_type, cond, eval_batch=s.eval_batch, eval_threads=s.eval_threads)
    with bound_hint():
        z0 = lms.sample(eps_fn, x_n, grid, method_obj, mode=method_obj.mode, progress=pipeline_progress(parts.pipe, progress))
    out = GenerationOutput(images=output_images(decode_latents(parts, z0), "pt", output_type), latents=z0, noise=x_n)
    return out if return_dict else out.to_tuple()
