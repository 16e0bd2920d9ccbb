"""Tiny offline flow-matching pipelines for tests (random weights, locally built tokenizers, no download).

:func:`tiny_sd3_pipeline` assembles a real ``StableDiffusion3Pipeline`` (SD3Transformer2DModel, two
CLIPTextModelWithProjection encoders and a T5EncoderModel, an AutoencoderKL with a shift factor)
and :func:`tiny_flux_pipeline` a real ``FluxPipeline`` (FluxTransformer2DModel with or without the
guidance embedding, CLIPTextModel + T5EncoderModel, packed 2x2 latents). The tokenizers are the
character-level CLIPTokenizer of :func:`.testing.tiny_tokenizer` (the pipelines only call them,
so the T5 side takes it too). The VAE's scaling factor is chosen as SD's was (unit-variance
latents on the test images).
"""

from __future__ import annotations

from typing import Any

import torch

from .testing import sample_images, tiny_tokenizer

__all__ = ["flow_scheduler_config", "tiny_sd3_pipeline", "tiny_flux_pipeline"]


def _eval(pipe: Any) -> None:
    """Inference mode for every module, as ``from_pretrained`` leaves them: a module built from a config
    is in training mode, and T5's dropout would make the text embeddings differ call by call."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()


def flow_scheduler_config(**kw: Any) -> dict:
    """A ``FlowMatchEulerDiscreteScheduler`` config: SD3's (shift 3) by default."""
    cfg = dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False)
    cfg.update(kw)
    return cfg


def _vae(latent_channels: int, shift_factor: float) -> Any:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=latent_channels,
        norm_num_groups=4, layers_per_block=1, sample_size=16, use_quant_conv=False, use_post_quant_conv=False,
    )
    with torch.no_grad():
        z = vae.encode(sample_images(4, 16, seed=12345)).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1.0 / (z - shift_factor).std()), shift_factor=float(shift_factor))
    return vae


def _clip(tokenizer: Any, width: int, projection: bool) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=tokenizer.model_max_length, bos_token_id=0, eos_token_id=1,
        pad_token_id=1, projection_dim=width, hidden_act="gelu",
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def _t5(tokenizer: Any, width: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=width, d_kv=4, d_ff=2 * width, num_layers=1,
                                   num_heads=2, relative_attention_num_buckets=8, pad_token_id=1, eos_token_id=1))


def tiny_sd3_pipeline(seed: int = 0, dtype: torch.dtype = torch.float32, scheduler_config: "dict | None" = None) -> Any:
    """A StableDiffusion3Pipeline with random tiny components: 4 latent channels at half the image
    size (VAE factor 2), patch size 1, CLIP widths 8 + 8 (pooled 16), T5 width 16 = joint width."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=1, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=16, out_channels=4,
        pos_embed_max_size=16,
    )
    tok, tok2, tok3 = tiny_tokenizer(), tiny_tokenizer(), tiny_tokenizer(max_length=16)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(**(scheduler_config or flow_scheduler_config())),
        vae=_vae(4, 0.1), text_encoder=_clip(tok, 8, True), tokenizer=tok, text_encoder_2=_clip(tok2, 8, True),
        tokenizer_2=tok2, text_encoder_3=_t5(tok3, 16), tokenizer_3=tok3,
    )
    _eval(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


def tiny_flux_pipeline(seed: int = 0, dtype: torch.dtype = torch.float32, guidance_embeds: bool = True,
                       scheduler_config: "dict | None" = None) -> Any:
    """A FluxPipeline with random tiny components: 4 latent channels at half the image size, packed
    2x2 into 16 transformer channels; ``guidance_embeds`` as FLUX.1-dev (True) or -schnell (False).
    The scheduler uses dynamic shifting as FLUX's does."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, pooled_projection_dim=8, guidance_embeds=guidance_embeds, axes_dims_rope=(2, 2, 4),
    )
    tok, tok2 = tiny_tokenizer(), tiny_tokenizer(max_length=16)
    cfg = scheduler_config or flow_scheduler_config(shift=1.0, use_dynamic_shifting=True, base_shift=0.5,
                                                    max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096)
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**cfg), vae=_vae(4, 0.1), text_encoder=_clip(tok, 8, False),
        tokenizer=tok, text_encoder_2=_t5(tok2, 16), tokenizer_2=tok2, transformer=transformer,
    )
    _eval(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)
