"""Attention-map sharing between a source and a target branch of one UNet batch.

Used by the Direct-Inversion and Prompt-to-Prompt edits (see :func:`..pipeline.edit`). The UNet batch
is laid out as G groups of [source (B images), target (B images)] (G = 2 with classifier-free
guidance: [src_u, tgt_u, src_c, tgt_c]). Two kinds of layer can share, each switched on its own:

- **self-attention** (``attn1`` of the transformer blocks; every attention layer of a UNet2DModel),
  while ``self_active``: the layout of the source image is imposed (Prompt-to-Prompt's self-attention
  injection, Hertz et al. 2022; Plug-and-Play, Tumanyan et al. 2023);
- **cross-attention** (``attn2``, queries from the image, keys and values from the prompt), while
  ``cross_active``: the target keeps the source's attention of each pixel to each token, so a swapped
  word takes the place of the word it replaces (Prompt-to-Prompt word swap, Hertz et al. 2022, sec. 3.2:
  M_t* = M_t of the source for t > tau).

In a shared layer every target row uses the source row's attention probabilities with its OWN values:

    out_tgt = softmax(Q_src K_src^T / sqrt(d)) V_tgt

(for cross-attention V_tgt = W_v of the target prompt's embeddings, the word swap itself). The source
half is always computed normally. Word swap needs token position t of the source prompt to be
position t of the target prompt: :func:`..pipeline.edit` checks that both prompts have as many tokens.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["SharedAttention", "SharedSelfAttention"]


class _SharedProcessor:
    """Wraps a layer's own processor; computes the shared form only while its kind is active."""

    def __init__(self, owner: "SharedAttention", base: Any, kind: str) -> None:
        self.owner = owner
        self.base = base
        self.kind = kind  # "self" or "cross"

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs) -> torch.Tensor:
        active = self.owner.cross_active if self.kind == "cross" else self.owner.self_active
        if not active:
            return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if attention_mask is not None:  # SD passes none; a masked model would be shared wrongly, so say so
            raise NotImplementedError("attention sharing does not support attention masks (this UNet passes one)")
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
        if encoder_hidden_states is None:
            context = hidden_states
        elif getattr(attn, "norm_cross", None):
            context = attn.norm_encoder_hidden_states(encoder_hidden_states)
        else:
            context = encoder_hidden_states
        heads = attn.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(total, t.shape[1], heads, -1).transpose(1, 2)

        q, k, v = split(attn.to_q(hidden_states)), split(attn.to_k(context)), split(attn.to_v(context))
        if getattr(attn, "norm_q", None) is not None:
            q = attn.norm_q(q)
        if getattr(attn, "norm_k", None) is not None:
            k = attn.norm_k(k)
        # the target rows take the source rows' queries and keys, hence their attention probabilities
        q, k = self.owner.source_to_target(q), self.owner.source_to_target(k)
        out = F.scaled_dot_product_attention(q, k, v, scale=getattr(attn, "scale", None))
        out = out.transpose(1, 2).reshape(total, length, -1).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if getattr(attn, "residual_connection", False):
            out = out + residual
        return out / getattr(attn, "rescale_output_factor", 1.0)


class SharedAttention:
    """Context manager installing the sharing processors on a UNet's self- and cross-attention layers
    (restoring the previous processors on exit). ``self_active`` / ``cross_active`` switch each kind
    per network call; both start off."""

    def __init__(self, unet: Any, batch: int) -> None:
        self.unet = unet
        self.batch = int(batch)  # images per branch
        self.self_active = False
        self.cross_active = False
        self._saved: dict[str, Any] | None = None

    def source_to_target(self, t: torch.Tensor) -> torch.Tensor:
        """Copy each group's source half over its target half (batch laid out [S, T] * G)."""
        total = t.shape[0]
        if total % (2 * self.batch):
            raise ValueError(f"a shared-attention batch holds [source, target] groups of {self.batch}, got {total}")
        groups = t.reshape(-1, 2, self.batch, *t.shape[1:])
        return groups[:, :1].expand_as(groups).reshape(t.shape)

    def layers(self) -> list[tuple[str, Any, str]]:
        """(name, Attention module, kind) of every attention layer: a text UNet's transformer-block
        ``attn1`` ("self") and ``attn2`` ("cross"); every attention layer of a UNet2DModel ("self": it
        has no cross-attention)."""
        from diffusers.models.attention_processor import Attention

        pixel_unet = getattr(self.unet.config, "cross_attention_dim", None) is None
        found = []
        for name, m in self.unet.named_modules():
            if not isinstance(m, Attention):
                continue
            if pixel_unet or name.endswith("attn1"):
                found.append((name, m, "self"))
            elif name.endswith("attn2"):
                found.append((name, m, "cross"))
        return found

    def __enter__(self) -> "SharedAttention":
        self._saved = {}
        for name, module, kind in self.layers():
            self._saved[name] = module.processor
            module.set_processor(_SharedProcessor(self, module.processor, kind))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._saved is not None:
            for name, module, _ in self.layers():
                if name in self._saved:
                    module.set_processor(self._saved[name])
            self._saved = None
        self.self_active = False
        self.cross_active = False


class SharedSelfAttention(SharedAttention):
    """:class:`SharedAttention` with one switch, ``active``, for the self-attention layers only."""

    @property
    def active(self) -> bool:
        return self.self_active

    @active.setter
    def active(self, value: bool) -> None:
        self.self_active = bool(value)
