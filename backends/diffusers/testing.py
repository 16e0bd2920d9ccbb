"""Tiny offline diffusers components for tests and benchmarks (random weights, no download).

:func:`tiny_sd_pipeline` assembles a real ``StableDiffusionPipeline`` from a tiny
UNet2DConditionModel, AutoencoderKL (downsampling factor 2), CLIPTextModel and a CLIPTokenizer
whose vocab.json / merges.txt are written to a temporary directory (characters only).
:func:`tiny_unet2d` builds an unconditional UNet2DModel. :func:`sample_images` makes
deterministic smooth RGB images.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["tiny_tokenizer", "tiny_sd_pipeline", "tiny_unet2d", "sample_images", "ddim_config", "same_entry"]


def same_entry(a: Any, b: Any) -> bool:
    """Bitwise equality of two window entries: arrays, EDICT's (x, y) pairs, or the named
    entries of modes 'stable' / 'bits' (equal types, equal parts, the same parts absent)."""
    if isinstance(a, tuple) or isinstance(b, tuple):
        return (type(a) is type(b) and len(a) == len(b)
                and all((p is None and q is None) or same_entry(p, q) for p, q in zip(a, b)))
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype \
        and a.shape == b.shape and torch.equal(a, b)


def ddim_config(prediction_type: str = "epsilon", spacing: str = "leading", steps_offset: int = 1, **kw) -> dict:
    """A Stable-Diffusion-like DDIM scheduler config."""
    cfg = dict(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=steps_offset, prediction_type=prediction_type,
        timestep_spacing=spacing,
    )
    cfg.update(kw)
    return cfg


def tiny_tokenizer(directory: "str | Path | None" = None, max_length: int = 12):
    """A CLIPTokenizer with a character-level vocabulary written to ``directory`` (a temp dir by default)."""
    from transformers import CLIPTokenizer

    d = Path(directory or tempfile.mkdtemp(prefix="lms-tok-"))
    d.mkdir(parents=True, exist_ok=True)
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = ["<|startoftext|>", "<|endoftext|>", "!"] + chars + [c + "</w>" for c in chars]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=max_length,
                         pad_token="<|endoftext|>")


def tiny_sd_pipeline(
    prediction_type: str = "epsilon",
    text_width: int = 16,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    scheduler_config: dict | None = None,
    layout: str = "sd1",
) -> Any:
    """A StableDiffusionPipeline with random tiny components. ``layout='sd1'``: SD 1.x style
    (convolutional projections in the transformer blocks); ``'sd2'``: SD 2.x style (linear
    projections, per-block head dims; use with ``prediction_type='v_prediction'`` and another
    ``text_width``). Latents have 4 channels at half the image size (VAE factor 2)."""
    if layout not in ("sd1", "sd2"):
        raise ValueError(f"layout must be 'sd1' or 'sd2', got {layout!r}")
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=text_width, norm_num_groups=4,
        attention_head_dim=2 if layout == "sd1" else (2, 4), use_linear_projection=layout == "sd2",
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
        norm_num_groups=4, layers_per_block=1, sample_size=16,
    )
    with torch.no_grad():  # choose scaling_factor as SD did: unit-variance latents on (test) images
        std = vae.encode(sample_images(4, 16, seed=12345)).latent_dist.mean.std()
    vae.register_to_config(scaling_factor=float(1.0 / std))
    tokenizer = tiny_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=text_width, intermediate_size=2 * text_width, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=tokenizer.model_max_length, bos_token_id=0, eos_token_id=1,
        pad_token_id=1, projection_dim=text_width,
    ))
    scheduler = DDIMScheduler(**(scheduler_config or ddim_config(prediction_type)))
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


def tiny_unet2d(channels: int = 3, size: int = 8, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
    """An unconditional UNet2DModel with random tiny weights."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=4,
    )
    return unet if dtype == torch.float32 else unet.to(dtype)


def sample_images(batch: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Deterministic smooth test images in [-1, 1], shape (batch, 3, size, size): sums of low
    frequency sinusoids with random phases (a stand-in for natural images)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    out = np.zeros((batch, 3, size, size))
    for b in range(batch):
        for c in range(3):
            for _ in range(4):
                fx, fy = rng.integers(0, 3, size=2)
                out[b, c] += rng.uniform(0.2, 0.5) * np.cos(2 * np.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * np.pi))
    return torch.from_numpy(np.tanh(out)).float()
