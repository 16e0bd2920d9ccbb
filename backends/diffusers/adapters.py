"""diffusers UNets as the core's ``eps_fn(x, i)``.

The core integrator calls ``eps_fn(x, i)`` with the stored state x (model coordinates) at grid
index i; the network is run at model timestep ``grid.timesteps[i]`` and its output converted to
a noise prediction with the grid's alpha_i, sigma_i (x = alpha x0 + sigma eps, alpha^2 + sigma^2 = 1):

- ``epsilon``:      eps = out
- ``v_prediction``: v = alpha eps - sigma x0 (Salimans & Ho 2022)  =>  eps = alpha v + sigma x
- ``sample``:       x0 = out                                       =>  eps = (x - alpha x0) / sigma

Classifier-free guidance (Ho & Salimans 2022): eps = eps_u + w (eps_c - eps_u), with the
unconditional and conditional halves evaluated in ONE batched call (as diffusers pipelines do),
so a given (x, i) always gives the same bits: the property exact inversion relies on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from linmultistep import Grid

__all__ = ["PREDICTION_TYPES", "to_epsilon", "Conditioning", "UNetEps", "encode_prompts", "encode_classes",
           "model_timestep", "is_conditional", "is_class_conditional", "null_class", "eval_chunk_for", "EVAL_CHUNK_BUDGET"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def to_epsilon(output: torch.Tensor, x: torch.Tensor, alpha: float, sigma: float, prediction_type: str) -> torch.Tensor:
    """Convert a network output at x = alpha x0 + sigma eps to the noise prediction (formulas above).

    alpha and sigma are float64 host scalars; the result has x's dtype and device.
    """
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":
        return torch.add(output * float(alpha), x, alpha=float(sigma))
    if prediction_type == "sample":
        if sigma == 0:
            raise ValueError("a 'sample' prediction cannot be converted to noise at sigma = 0")
        return torch.add(x, output, alpha=-float(alpha)) * (1.0 / float(sigma))
    raise ValueError(f"unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}")


def model_timestep(grid: Grid, i: int) -> float | int:
    """The network's timestep at grid index i (an int when the grid's timestep is integral)."""
    t = grid.timestep(i)
    if math.isnan(t):
        raise ValueError(f"grid index {i} is the clean point; the network is never evaluated there")
    return int(t) if float(t).is_integer() else t


@dataclass(frozen=True)
class Conditioning:
    """Conditioning of a batch: text embeddings ``cond`` (B, L, D) and, with guidance, ``uncond``
    (B, L, D); or, for a class-conditional UNet2DModel, class labels ``cond`` (B,) int64 and the
    null class ``uncond`` (B,)."""

    cond: torch.Tensor | None = None
    uncond: torch.Tensor | None = None
    guidance_scale: float = 1.0

    @property
    def guided(self) -> bool:
        return self.uncond is not None and self.guidance_scale != 1.0

    @staticmethod
    def concat(parts: Sequence["Conditioning"], guidance_scale: float) -> "Conditioning":
        """The conditioning of the stacked batches (e.g. [source branch, target branch])."""
        conds = [p.cond for p in parts]
        unconds = [p.uncond for p in parts]
        return Conditioning(
            None if any(c is None for c in conds) else torch.cat(conds),
            None if any(u is None for u in unconds) else torch.cat(unconds),
            guidance_scale,
        )


def is_conditional(unet: Any) -> bool:
    """True for a UNet2DConditionModel-like network (it takes encoder_hidden_states)."""
    return getattr(unet.config, "cross_attention_dim", None) is not None


def is_class_conditional(unet: Any) -> bool:
    """True for a class-conditional UNet2DModel (``num_class_embeds``: an embedding per class)."""
    return not is_conditional(unet) and getattr(unet.config, "num_class_embeds", None) is not None


def null_class(unet: Any) -> int:
    """The label of the unconditional ("no class") embedding: by this binding's convention the LAST
    of ``num_class_embeds`` (a model trained with label dropout to that index, as the shipped digits
    model is); classes 0 .. num_class_embeds - 2 are the real ones."""
    return int(unet.config.num_class_embeds) - 1


def _labels(value: Any, batch: int, classes: int) -> torch.Tensor:
    """Class labels (B,) int64 from an int, a digit string, a sequence of them or an integer tensor."""
    if isinstance(value, torch.Tensor):
        if value.dtype.is_floating_point or value.dtype == torch.bool or value.ndim > 1:
            raise ValueError(f"class labels must be an integer tensor of shape (B,), got {value.dtype} {tuple(value.shape)}")
        items = [int(v) for v in value.reshape(-1).tolist()]
    else:
        seq = [value] if isinstance(value, (int, str)) or not hasattr(value, "__iter__") else list(value)
        items = []
        for v in seq:
            if isinstance(v, bool) or not isinstance(v, (int, str)) and not hasattr(v, "__index__"):
                raise ValueError(f"a class label must be an int (or a digit string), got {v!r}")
            if isinstance(v, str):
                if not v.strip().lstrip("-").isdigit():
                    raise ValueError(f"this UNet is class-conditional: the prompt is a class label, got {v!r}")
                v = int(v)
            items.append(int(v))
    if len(items) == 1:
        items = items * batch
    if len(items) != batch:
        raise ValueError(f"{len(items)} class labels for a batch of {batch} images (give 1 or {batch})")
    bad = [v for v in items if not 0 <= v < classes]
    if bad:
        raise ValueError(f"class label(s) {bad} out of range: this model has classes 0..{classes - 1}")
    return torch.tensor(items, dtype=torch.long)


def encode_classes(unet: Any, labels: Any, batch: int, guidance_scale: float = 1.0) -> Conditioning:
    """Class conditioning for a batch: one label for all images or one per image; with guidance
    (scale != 1) the null class (:func:`null_class`) gives the unconditional half."""
    classes = int(unet.config.num_class_embeds)
    cond = _labels(labels, batch, classes)
    guided = float(guidance_scale) != 1.0
    uncond = torch.full_like(cond, null_class(unet)) if guided else None
    return Conditioning(cond, uncond, float(guidance_scale))


#: rows x pixels of one network call in a dataset run's fixed evaluation chunk (:func:`eval_chunk_for`)
EVAL_CHUNK_BUDGET = 32 * 32 * 32
_MAX_EVAL_CHUNK = 32


def eval_chunk_for(unet: Any) -> int:
    """The fixed evaluation chunk of a model: rows per network call, a function of the model alone.

    Kernels choose their algorithm by the batch shape, so a row's last bits depend on how many rows a
    call holds; running every call with the same number of rows (padded) makes each image's network
    outputs, and so its mode-'bits' latent, independent of ``batch_size`` and the world size. The chunk
    is the largest power of two <= 32 with chunk x (the UNet's ``sample_size``)^2 <= EVAL_CHUNK_BUDGET:
    32 for the 8x8 digits model (where per-call overhead dominates), 8 for 64x64 latents (Stable
    Diffusion 1.x), 2 for 128x128 ones, so that one call's activations stay bounded."""
    size = getattr(unet.config, "sample_size", None) or 64
    h, w = (size, size) if isinstance(size, int) else tuple(size)[:2]
    chunk = _MAX_EVAL_CHUNK
    while chunk > 1 and chunk * int(h) * int(w) > EVAL_CHUNK_BUDGET:
        chunk //= 2
    return chunk


class UNetEps:
    """A diffusers UNet (``UNet2DModel`` or ``UNet2DConditionModel``) as a noise predictor on a grid.

    ``eps(x, i, conditioning)`` returns the (guided) noise prediction for the batch x at grid index
    i, in x's dtype; the network runs in its own dtype and device. ``self(x, i)`` uses the
    conditioning given at construction, so an instance is directly an ``eps_fn`` for the core.
    """

    def __init__(
        self,
        unet: Any,
        grid: Grid,
        prediction_type: str = "epsilon",
        conditioning: Conditioning | None = None,
        cross_attention_kwargs: dict | None = None,
        eval_batch: int | None = None,
        eval_threads: int | None = None,
    ) -> None:
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}")
        self.unet = unet
        self.grid = grid
        self.prediction_type = prediction_type
        self.conditioning = conditioning or Conditioning()
        self.cross_attention_kwargs = cross_attention_kwargs
        self.conditional = is_conditional(unet)
        self.class_conditional = is_class_conditional(unet)
        if self.conditional and self.conditioning.cond is None:
            raise ValueError("this UNet is text-conditioned: give prompt embeddings (Conditioning.cond)")
        if self.class_conditional and self.conditioning.cond is None:
            raise ValueError("this UNet is class-conditional: give class labels (Conditioning.cond, see encode_classes)")
        if eval_batch is not None and (isinstance(eval_batch, bool) or not isinstance(eval_batch, int) or eval_batch < 1):
            raise ValueError(f"eval_batch must be a positive int or None, got {eval_batch!r}")
        if eval_threads is not None and (isinstance(eval_threads, bool) or not isinstance(eval_threads, int) or eval_threads < 1):
            raise ValueError(f"eval_threads must be a positive int or None, got {eval_threads!r}")
        self.eval_batch = eval_batch
        self.eval_threads = eval_threads
        self.calls = 0

    def __call__(self, x: torch.Tensor, i: int) -> torch.Tensor:
        return self.eps(x, i, self.conditioning)

    def _run(self, x: torch.Tensor, t: Any, hidden: torch.Tensor | None) -> torch.Tensor:
        """The network on x; with ``eval_batch`` in chunks of exactly that many rows (the last padded
        with zeros / the null class). Kernels pick their algorithm by shape, so a row's output bits then
        depend on its own input only, not on the batch it came in: what makes a 'bits' latent
        reconstruct exactly alone, in another batch, or on another rank (measured on the digits model
        in tests/test_dataset.py)."""
        n = self.eval_threads
        if n is not None and next(self.unet.parameters()).device.type == "cpu" and torch.get_num_threads() != n:
            # CPU kernels split their reductions by thread count: pin it so every run computes the same bits
            previous = torch.get_num_threads()
            torch.set_num_threads(n)
            try:
                return self._chunked(x, t, hidden)
            finally:
                torch.set_num_threads(previous)
        return self._chunked(x, t, hidden)

    def _chunked(self, x: torch.Tensor, t: Any, hidden: torch.Tensor | None) -> torch.Tensor:
        b = self.eval_batch
        if b is None or x.shape[0] == b:
            return self._call(x, t, hidden)
        outs = []
        for k in range(0, x.shape[0], b):
            xb, hb = x[k:k + b], None if hidden is None else hidden[k:k + b]
            m = xb.shape[0]
            if m < b:
                xb = torch.cat([xb, xb.new_zeros((b - m, *xb.shape[1:]))])
                if hb is not None:
                    fill = hb.new_full((b - m, *hb.shape[1:]), null_class(self.unet)) if self.class_conditional \
                        else hb.new_zeros((b - m, *hb.shape[1:]))
                    hb = torch.cat([hb, fill])
            outs.append(self._call(xb, t, hb)[:m])
        return torch.cat(outs)

    def _call(self, x: torch.Tensor, t: Any, hidden: torch.Tensor | None) -> torch.Tensor:
        p = next(self.unet.parameters())
        xin = x.to(device=p.device, dtype=p.dtype).contiguous()  # kernels (and last bits) depend on layout
        tt = torch.tensor(t, device=p.device)
        if self.conditional:
            out = self.unet(
                xin, tt, encoder_hidden_states=hidden.to(device=p.device, dtype=p.dtype),
                cross_attention_kwargs=self.cross_attention_kwargs, return_dict=False,
            )[0]
        elif self.class_conditional:
            out = self.unet(xin, tt, class_labels=hidden.to(device=p.device), return_dict=False)[0]
        else:
            out = self.unet(xin, tt, return_dict=False)[0]
        self.calls += 1
        if out.shape[1] == 2 * x.shape[1]:  # learned-variance models: the mean part comes first
            out = out[:, : x.shape[1]]
        return out.to(device=x.device, dtype=x.dtype)

    @torch.no_grad()
    def eps(self, x: torch.Tensor, i: int, conditioning: Conditioning) -> torch.Tensor:
        return self.eps_with_grad(x, i, conditioning)

    def eps_with_grad(self, x: torch.Tensor, i: int, conditioning: Conditioning | None = None) -> torch.Tensor:
        """:meth:`eps` without ``torch.no_grad``: differentiable in x, the network's parameters and the
        conditioning tensors (embeddings; a tensor guidance scale), for
        :mod:`linmultistep.backends.gradients`."""
        t = model_timestep(self.grid, i)
        alpha, sigma = float(self.grid.alpha[i]), float(self.grid.sigma[i])
        c = self.conditioning if conditioning is None else conditioning
        takes_condition = self.conditional or self.class_conditional
        if takes_condition and c.guided:
            out_u, out_c = self._run(torch.cat([x, x]), t, torch.cat([c.uncond, c.cond])).chunk(2)
            w = c.guidance_scale
            out = out_u + (out_c - out_u) * w if isinstance(w, torch.Tensor) else torch.add(out_u, out_c - out_u, alpha=float(w))
        else:
            out = self._run(x, t, c.cond if takes_condition else None)
        return to_epsilon(out, x, alpha, sigma, self.prediction_type)


def _broadcast(name: str, value: Any, batch: int) -> list | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value] * batch
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name} must be a string or a list of strings for a text-conditioned UNet, got "
                        f"{value!r:.80}" + ("" if isinstance(value, (list, tuple)) else f" ({type(value).__name__})"))
    value = list(value)
    if len(value) == 1:
        return value * batch
    if len(value) != batch:
        raise ValueError(f"{name} has {len(value)} entries for a batch of {batch} images (give 1 or {batch})")
    return value


def _expand(name: str, emb: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    if emb is None:
        return None
    if emb.ndim != 3:
        raise ValueError(f"{name} must have shape (batch, tokens, width), got {tuple(emb.shape)}")
    if emb.shape[0] == 1 and batch > 1:
        return emb.expand(batch, -1, -1)
    if emb.shape[0] != batch:
        raise ValueError(f"{name} has batch {emb.shape[0]} for a batch of {batch} images")
    return emb


@torch.no_grad()
def encode_prompts(
    pipe: Any,
    prompt: "str | Sequence[str] | None",
    batch: int,
    guidance_scale: float = 1.0,
    negative_prompt: "str | Sequence[str] | None" = None,
    prompt_embeds: torch.Tensor | None = None,
    negative_prompt_embeds: torch.Tensor | None = None,
    device: Any = None,
) -> Conditioning:
    """Text conditioning for a batch: one prompt for all images or one per image.

    Uses the pipeline's own ``encode_prompt`` (tokenizer + text encoder) when prompts are
    strings; precomputed ``prompt_embeds`` / ``negative_prompt_embeds`` bypass the tokenizer.
    With guidance (scale != 1) the negative prompt (default: empty) gives the unconditional half.
    """
    guided = float(guidance_scale) != 1.0
    if prompt_embeds is not None:
        cond = _expand("prompt_embeds", prompt_embeds, batch)
        uncond = _expand("negative_prompt_embeds", negative_prompt_embeds, batch)
        if guided and uncond is None:
            if negative_prompt is None and getattr(pipe, "tokenizer", None) is None:
                raise ValueError("guidance with prompt_embeds needs negative_prompt_embeds (no tokenizer to encode '')")
            uncond = encode_prompts(pipe, _broadcast("negative_prompt", negative_prompt or "", batch), batch,
                                    device=device).cond
        return Conditioning(cond, uncond if guided else None, float(guidance_scale))
    if not hasattr(pipe, "encode_prompt"):
        raise ValueError(f"{type(pipe).__name__} cannot encode prompts; give prompt_embeds")
    prompts = _broadcast("prompt", "" if prompt is None else prompt, batch)
    negatives = _broadcast("negative_prompt", negative_prompt, batch)
    device = device or pipe.unet.device
    cond, uncond = pipe.encode_prompt(
        prompts, device, 1, guided, negatives,
        negative_prompt_embeds=_expand("negative_prompt_embeds", negative_prompt_embeds, batch),
    )
    return Conditioning(cond, uncond if guided else None, float(guidance_scale))
