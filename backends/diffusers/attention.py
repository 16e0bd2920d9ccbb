"""Self-attention map sharing between a source and a target branch of one UNet batch.

Used by the Direct-Inversion edit (see :func:`..pipeline.edit`). The UNet batch is laid out as
G groups of [source (B images), target (B images)] (G = 2 with classifier-free guidance:
[src_u, tgt_u, src_c, tgt_c]). While ``active``, every self-attention layer (``attn1`` of the
transformer blocks) of the target half uses the source half's attention map:

    out_tgt = softmax(Q_src K_src^T / sqrt(d)) V_tgt

(Prompt-to-Prompt's self-attention injection, Hertz et al. 2022; Plug-and-Play, Tumanyan et
al. 2023): the layout of the source image is imposed while the target keeps its own values and
its own cross-attention to the target prompt. The source half is computed normally.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["SharedSelfAttention"]


class _SharedProcessor:
    def __init__(self, owner: "SharedSelfAttention", base: Any) -> None:
        self.owner = owner
        self.base = base

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs) -> torch.Tensor:
        if not self.owner.active or encoder_hidden_states is not None or attention_mask is not None:
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        residual = hidden_states
        if getattr(attn, "spatial_norm", None) is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        ndim = hidden_states.ndim
        if ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        if getattr(attn, "group_norm", None) is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        total, length, _ = hidden_states.shape
        heads = attn.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(total, length, heads, -1).transpose(1, 2)

        q, k, v = split(attn.to_q(hidden_states)), split(attn.to_k(hidden_states)), split(attn.to_v(hidden_states))
        if getattr(attn, "norm_q", None) is not None:
            q = attn.norm_q(q)
        if getattr(attn, "norm_k", None) is not None:
            k = attn.norm_k(k)
        q, k = self.owner.source_to_target(q), self.owner.source_to_target(k)
        out = F.scaled_dot_product_attention(q, k, v, scale=getattr(attn, "scale", None))
        out = out.transpose(1, 2).reshape(total, length, -1).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if getattr(attn, "residual_connection", False):
            out = out + residual
        return out / getattr(attn, "rescale_output_factor", 1.0)


class SharedSelfAttention:
    """Context manager installing the sharing processors on a UNet's self-attention layers
    (restoring the previous processors on exit). ``active`` switches sharing per call."""

    def __init__(self, unet: Any, batch: int) -> None:
        self.unet = unet
        self.batch = int(batch)  # images per branch
        self.active = False
        self._saved: dict[str, Any] | None = None

    def source_to_target(self, t: torch.Tensor) -> torch.Tensor:
        """Copy each group's source half over its target half (batch laid out [S, T] * G)."""
        total = t.shape[0]
        if total % (2 * self.batch):
            raise ValueError(f"a shared-attention batch holds [source, target] groups of {self.batch}, got {total}")
        groups = t.reshape(-1, 2, self.batch, *t.shape[1:])
        return groups[:, :1].expand_as(groups).reshape(t.shape)

    def _self_attention_layers(self) -> list[tuple[str, Any]]:
        """(name, Attention module) of every self-attention layer: a text UNet's transformer-block
        ``attn1``; every attention layer of a UNet2DModel (it has no cross-attention)."""
        from diffusers.models.attention_processor import Attention

        pixel_unet = getattr(self.unet.config, "cross_attention_dim", None) is None
        return [(name, m) for name, m in self.unet.named_modules()
                if isinstance(m, Attention) and (pixel_unet or name.endswith("attn1"))]

    def __enter__(self) -> "SharedSelfAttention":
        self._saved = {}
        for name, module in self._self_attention_layers():
            self._saved[name] = module.processor
            module.set_processor(_SharedProcessor(self, module.processor))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._saved is not None:
            for name, module in self._self_attention_layers():
                if name in self._saved:
                    module.set_processor(self._saved[name])
            self._saved = None
        self.active = False
