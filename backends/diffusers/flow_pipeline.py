"""Exact inversion, reconstruction and editing with flow-matching pipelines (SD3 / SD3.5, FLUX).

``pipe`` is a ``StableDiffusion3Pipeline``-like pipeline (``transformer`` an SD3Transformer2DModel;
three text encoders, the T5 one optional) or a ``FluxPipeline``-like one (``transformer`` a
FluxTransformer2DModel; CLIP + T5 encoders, packed latents, optional guidance embedding), with a
``FlowMatchEulerDiscreteScheduler`` config. The scheduler supplies its config only; the grid is the
one the pipeline itself samples on (:func:`flow_grid_for`, FLUX's sigmas and mu included) laid out as
a rectified-flow grid (:mod:`linmultistep.paths`: coordinates (x, t), field = the transformer's
velocity), and the stepping is the core's (:func:`linmultistep.invert` / :func:`linmultistep.sample`).

The core's state is the VAE latent z = (E(image) - shift_factor) * scaling_factor, shape
(B, C, h, w), for both families: FLUX's 2x2 packing into tokens is a permutation done inside the
network call (bit-exact both ways), so a latent looks the same for every model.

Guidance conventions (as the pipelines): ``guidance_scale`` is classifier-free guidance,
v = v_u + w (v_c - v_u), with the negative prompt (default '') giving v_u -- SD3's ``guidance_scale``,
one batched call; FLUX's ``true_cfg_scale``, two calls as FLUX runs them. ``guidance`` is FLUX's
embedded (distilled) guidance, the transformer's ``guidance`` input (FLUX.1-dev: default 3.5; refused
for a transformer without the embedding). An exact method inverts any of these exactly: the field
only has to be the same function of (x, t) in both directions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

import linmultistep as lms
from linmultistep import Grid, LatentMismatchError, Method, State, get_method
from linmultistep.paths import FLOW, check_latent_path, dynamic_shift_mu

from .arguments import check_finite
from .flow_schedulers import flow_config, flow_grid_from_config
from .images import check_trained_size, read_images, resize_to, to_pil
from .outputs import EditOutput, GenerationOutput, ReconstructionOutput, pipeline_progress
from .pipeline import model_digest
from .settings import INVERSION_FIELDS, InversionSettings, settings_of

__all__ = ["FlowParts", "flow_parts_of", "FlowConditioning", "encode_flow_prompts", "TransformerVelocity",
           "flow_grid_for", "velocity_for", "pack_latents", "unpack_latents", "invert", "reconstruct", "edit", "generate",
           "encode_images", "decode_latents"]

FLUX_DEFAULT_GUIDANCE = 3.5  # FluxPipeline's default guidance_scale (the embedded guidance)


# --- the pipeline's parts -----------------------------------------------------------------------------
@dataclass
class FlowParts:
    """The pieces of a flow-matching pipeline the binding uses; ``kind`` is 'sd3' or 'flux'."""

    transformer: Any
    scheduler: Any
    vae: Any
    pipe: Any
    kind: str
    name: str = ""

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.transformer.parameters()).dtype

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_multiple(self) -> int:
        """Latent sizes must be multiples of this: FLUX packs 2x2, SD3 patchifies by its patch size."""
        return 2 if self.kind == "flux" else int(self.transformer.config.patch_size)

    @property
    def embedded_guidance(self) -> bool:
        return bool(getattr(self.transformer.config, "guidance_embeds", False))

    @property
    def latent_size(self) -> int:
        """The latent side the pipeline samples at by default (its ``default_sample_size``)."""
        size = getattr(self.pipe, "default_sample_size", None) or getattr(self.transformer.config, "sample_size", None)
        return int(size or 64)

    @property
    def trained_size(self) -> "tuple[int, int] | None":
        """The pixel size the transformer was trained at: its config's ``sample_size`` (SD3: 128 latents,
        1024 pixels) times the VAE factor; None where the config does not say (FLUX)."""
        size = getattr(self.transformer.config, "sample_size", None)
        if size is None:
            return None
        h, w = (size, size) if isinstance(size, int) else tuple(size)[:2]
        return int(h) * self.vae_factor, int(w) * self.vae_factor


def flow_parts_of(pipe: Any) -> FlowParts:
    """Split an SD3- or FLUX-style pipeline into :class:`FlowParts` (clear errors for anything else)."""
    if isinstance(pipe, FlowParts):
        return pipe
    transformer = getattr(pipe, "transformer", None)
    if transformer is None:
        hint = " (a UNet pipeline: use linmultistep.backends.diffusers.invert)" if hasattr(pipe, "unet") else ""
        raise TypeError(f"{type(pipe).__name__} has no transformer; give an SD3- or FLUX-style pipeline{hint}")
    for attr in ("scheduler", "vae"):
        if getattr(pipe, attr, None) is None:
            raise TypeError(f"{type(pipe).__name__} has no {attr}")
    cfg = pipe.scheduler.config
    if "shift" not in cfg and "beta_schedule" in cfg:
        raise TypeError(f"{type(pipe).__name__}'s scheduler ({type(pipe.scheduler).__name__}) is not a flow-matching "
                        "scheduler; give the pipeline its FlowMatchEulerDiscreteScheduler")
    flow_config(cfg)  # shift > 0, no stochastic sampling
    cls = type(transformer).__name__
    if "Flux" in cls:
        kind = "flux"
    elif "SD3" in cls:
        kind = "sd3"
    else:
        raise TypeError(f"unknown flow transformer {cls}; supported: SD3Transformer2DModel, FluxTransformer2DModel")
    name = str((getattr(pipe, "config", None) or {}).get("_name_or_path", "") or "")
    return FlowParts(transformer, pipe.scheduler, pipe.vae, pipe, kind, name)


# --- latents --------------------------------------------------------------------------------------------
def pack_latents(z: torch.Tensor) -> torch.Tensor:
    """FLUX's packing: (B, C, h, w) -> (B, h/2 * w/2, 4C), each token one 2x2 patch, channels
    ordered (c, dy, dx) -- FluxPipeline._pack_latents' layout."""
    b, c, h, w = z.shape
    return z.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of :func:`pack_latents`."""
    b, _, c4 = tokens.shape
    return tokens.reshape(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c4 // 4, h, w)


def _image_ids(h: int, w: int, device: Any, dtype: torch.dtype) -> torch.Tensor:
    """FLUX's positional ids of the (h/2 x w/2) token grid: (0, row, column) per token."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = torch.arange(h // 2)[:, None]
    ids[..., 2] = torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


@torch.no_grad()
def encode_images(parts: FlowParts, x: torch.Tensor, generator: "torch.Generator | None" = None) -> torch.Tensor:
    """z = (E(x) - shift_factor) * scaling_factor, E the posterior mean (or a sample with ``generator``)."""
    p = next(parts.vae.parameters())
    dist = parts.vae.encode(x.to(device=p.device, dtype=p.dtype)).latent_dist
    z = dist.mean if generator is None else dist.sample(generator)
    shift = getattr(parts.vae.config, "shift_factor", None) or 0.0
    return ((z - shift) * float(parts.vae.config.scaling_factor)).contiguous()


@torch.no_grad()
def decode_latents(parts: FlowParts, z: torch.Tensor) -> torch.Tensor:
    """Pixels in [-1, 1] (clipped): the pipelines' z / scaling_factor + shift_factor, decoded."""
    p = next(parts.vae.parameters())
    shift = getattr(parts.vae.config, "shift_factor", None) or 0.0
    x = parts.vae.decode(z.to(device=p.device, dtype=p.dtype) / float(parts.vae.config.scaling_factor) + shift).sample
    return x.float().clamp(-1, 1)


# --- conditioning -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlowConditioning:
    """Text conditioning of a batch: sequence embeddings (B, L, D) and pooled ones (B, P) (FLUX: and
    its text ids), the negative ones when ``guidance_scale`` != 1, and FLUX's embedded ``guidance``."""

    embeds: torch.Tensor
    pooled: torch.Tensor
    text_ids: "torch.Tensor | None" = None
    neg_embeds: "torch.Tensor | None" = None
    neg_pooled: "torch.Tensor | None" = None
    neg_text_ids: "torch.Tensor | None" = None
    guidance_scale: float = 1.0
    guidance: "float | None" = None

    @property
    def guided(self) -> bool:
        return self.neg_embeds is not None and self.guidance_scale != 1.0


def _prompts(name: str, value: Any, batch: int) -> list[str]:
    if isinstance(value, str):
        return [value] * batch
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name} must be a string or a list of strings, got {value!r:.80}")
    if len(value) == 1:
        return list(value) * batch
    if len(value) != batch:
        raise ValueError(f"{name} has {len(value)} entries for a batch of {batch} images (give 1 or {batch})")
    return list(value)


@torch.no_grad()
def encode_flow_prompts(parts: FlowParts, prompt: Any, batch: int, guidance_scale: float = 1.0,
                        negative_prompt: Any = None, guidance: "float | None" = None,
                        max_sequence_length: "int | None" = None) -> FlowConditioning:
    """Encode prompts with the pipeline's own ``encode_prompt`` (all its text encoders)."""
    check_finite(guidance_scale=guidance_scale)
    if guidance is not None:
        check_finite(guidance=guidance)
        if not parts.embedded_guidance:
            raise ValueError("this transformer has no guidance embedding (guidance_embeds=False, e.g. FLUX.1-schnell "
                             "or SD3): guidance= does not apply; use guidance_scale for classifier-free guidance")
    elif parts.embedded_guidance:
        guidance = FLUX_DEFAULT_GUIDANCE
    prompts = _prompts("prompt", "" if prompt is None else prompt, batch)
    guided = float(guidance_scale) != 1.0
    negatives = _prompts("negative_prompt", negative_prompt or "", batch) if guided else None
    msl = {} if max_sequence_length is None else {"max_sequence_length": int(max_sequence_length)}
    device = parts.device
    if parts.kind == "sd3":
        pe, npe, ppe, nppe = parts.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, device=device, num_images_per_prompt=1,
            do_classifier_free_guidance=guided, negative_prompt=negatives, **msl)
        return FlowConditioning(pe, ppe, None, npe if guided else None, nppe if guided else None, None,
                                float(guidance_scale), None)
    pe, ppe, ids = parts.pipe.encode_prompt(prompt=prompts, prompt_2=None, device=device, **msl)
    npe = nppe = nids = None
    if guided:
        npe, nppe, nids = parts.pipe.encode_prompt(prompt=negatives, prompt_2=None, device=device, **msl)
    return FlowConditioning(pe, ppe, ids, npe, nppe, nids, float(guidance_scale),
                            None if guidance is None else float(guidance))


# --- the transformer as the core's field ---------------------------------------------------------------------
class TransformerVelocity:
    """The transformer's (guided) velocity at grid index i for a batch of latents (B, C, h, w): the
    core's ``eps_fn`` on a flow grid. Runs in the transformer's dtype; returns x's dtype."""

    def __init__(self, parts: FlowParts, grid: Grid, conditioning: FlowConditioning) -> None:
        if grid.path != FLOW:
            raise ValueError(f"TransformerVelocity needs a flow grid, got a {grid.path!r} one")
        self.parts, self.grid, self.conditioning = parts, grid, conditioning
        self.calls = 0

    def __call__(self, x: torch.Tensor, i: int) -> torch.Tensor:
        return self.velocity(x, i, self.conditioning)

    @torch.no_grad()
    def velocity(self, x: torch.Tensor, i: int, c: FlowConditioning) -> torch.Tensor:
        t = self.grid.timestep(i)
        if not np.isfinite(t):
            raise ValueError(f"grid index {i} is the data end; the network is never evaluated there")
        p = next(self.parts.transformer.parameters())
        xin = x.to(device=p.device, dtype=p.dtype).contiguous()
        tt = torch.tensor(t, dtype=torch.float32, device=p.device)  # scheduler.timesteps' float32 value
        out = self._sd3(xin, tt, c) if self.parts.kind == "sd3" else self._flux(xin, tt, c)
        self.calls += 1
        return out.to(device=x.device, dtype=x.dtype)

    def _sd3(self, x: torch.Tensor, t: torch.Tensor, c: FlowConditioning) -> torch.Tensor:
        tr = self.parts.transformer
        if c.guided:  # one batched call [uncond, cond], as StableDiffusion3Pipeline
            out = tr(hidden_states=torch.cat([x, x]), timestep=t.expand(2 * x.shape[0]),
                     encoder_hidden_states=torch.cat([c.neg_embeds, c.embeds]),
                     pooled_projections=torch.cat([c.neg_pooled, c.pooled]), return_dict=False)[0]
            u, v = out.chunk(2)
            return u + c.guidance_scale * (v - u)
        return tr(hidden_states=x, timestep=t.expand(x.shape[0]), encoder_hidden_states=c.embeds,
                  pooled_projections=c.pooled, return_dict=False)[0]

    def _flux(self, x: torch.Tensor, t: torch.Tensor, c: FlowConditioning) -> torch.Tensor:
        tr = self.parts.transformer
        b, _, h, w = x.shape
        tokens = pack_latents(x)
        ts = t.expand(b).to(x.dtype) / 1000  # FluxPipeline: timestep.to(latents.dtype) / 1000
        g = None if c.guidance is None else torch.full([b], c.guidance, device=x.device, dtype=torch.float32)
        ids = _image_ids(h, w, x.device, x.dtype)

        def run(embeds: torch.Tensor, pooled: torch.Tensor, text_ids: torch.Tensor) -> torch.Tensor:
            return tr(hidden_states=tokens, timestep=ts, guidance=g, pooled_projections=pooled,
                      encoder_hidden_states=embeds, txt_ids=text_ids, img_ids=ids, return_dict=False)[0]

        out = run(c.embeds, c.pooled, c.text_ids)
        if c.guided:  # FluxPipeline's true CFG: a second call with the negative prompt
            neg = run(c.neg_embeds, c.neg_pooled, c.neg_text_ids)
            out = neg + c.guidance_scale * (out - neg)
        return unpack_latents(out, h, w)


# --- the grid ---------------------------------------------------------------------------------------------
def flow_grid_for(parts: FlowParts, num_steps: int, latent_hw: "tuple[int, int]") -> tuple[Grid, "float | None"]:
    """The grid (and mu) the pipeline samples ``num_steps`` steps on for latents of size ``latent_hw``:
    FLUX passes sigmas = linspace(1, 1/n, n) and mu from its token count; SD3 passes mu only with
    dynamic shifting (token count by patch size; its default max_shift is 1.16)."""
    cfg = parts.scheduler.config
    h, w = latent_hw
    if isinstance(num_steps, bool) or not hasattr(num_steps, "__index__"):
        raise lms.GridError(f"num_steps must be an integer, got {num_steps!r} ({type(num_steps).__name__})")
    n = int(num_steps)
    if parts.kind == "flux":
        sigmas = None if cfg.get("use_flow_sigmas", False) or n < 1 else np.linspace(1.0, 1.0 / n, n)
        mu = dynamic_shift_mu((h // 2) * (w // 2), cfg.get("base_image_seq_len", 256),
                              cfg.get("max_image_seq_len", 4096), cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))
    else:
        sigmas, mu = None, None
        if cfg.get("use_dynamic_shifting", False):
            p = int(parts.transformer.config.patch_size)
            mu = dynamic_shift_mu((h // p) * (w // p), cfg.get("base_image_seq_len", 256),
                                  cfg.get("max_image_seq_len", 4096), cfg.get("base_shift", 0.5),
                                  cfg.get("max_shift", 1.16))
    return flow_grid_from_config(cfg, n, sigmas=sigmas, mu=mu), mu


def velocity_for(pipe: Any, prompt: Any, latent_shape: Sequence[int], num_steps: int, *, guidance_scale: float = 1.0,
                 negative_prompt: Any = None, guidance: "float | None" = None,
                 max_sequence_length: "int | None" = None) -> tuple[TransformerVelocity, Grid]:
    """(field, grid) for running :func:`linmultistep.sample` / :func:`linmultistep.invert` directly
    on latents of ``latent_shape`` = (B, C, h, w) (e.g. generation: ``lms.sample(v, noise, grid)``)."""
    parts = flow_parts_of(pipe)
    b, _, h, w = latent_shape
    grid, _ = flow_grid_for(parts, num_steps, (h, w))
    cond = encode_flow_prompts(parts, prompt, b, guidance_scale, negative_prompt, guidance, max_sequence_length)
    return TransformerVelocity(parts, grid, cond), grid


# --- public API -----------------------------------------------------------------------------------------
def _read(parts: FlowParts, images: Any, resize: "str | None", allow_size_mismatch: bool = False) -> Any:
    """The images as the VAE takes them (its ``in_channels``: 3 for SD3 / FLUX, 1 for the grey mnist-flow),
    refused when far from the model's trained size unless ``allow_size_mismatch``."""
    read = read_images(images, parts.vae_factor * parts.latent_multiple, resize,
                       channels=int(getattr(parts.vae.config, "in_channels", 3) or 3))
    if not allow_size_mismatch:
        check_trained_size(tuple(read.x.shape[-2:]), parts.trained_size, allow="allow_size_mismatch=True")
    return read


def _output(x: torch.Tensor, kind: str, output_type: "str | None", sizes: Any) -> Any:
    out = output_type or kind
    if out not in ("pil", "pt"):
        raise ValueError(f"output_type must be 'pil' or 'pt', got {output_type!r}")
    if sizes and len({tuple(s) for s in sizes}) == 1:
        x = resize_to(x, tuple(sizes[0]))
    return x if out == "pt" else to_pil(x)


def _invert_latent(parts: FlowParts, z0: torch.Tensor, prompt: Any, num_steps: int, method_obj: Method,
                   guidance_scale: float, negative_prompt: Any, guidance: Any, max_sequence_length: Any,
                   stop: Any, progress: Any, callback: Any = None, recorder: Any = None) -> tuple[State, Grid, dict]:
    grid, mu = flow_grid_for(parts, num_steps, tuple(z0.shape[-2:]))
    cond = encode_flow_prompts(parts, prompt, z0.shape[0], guidance_scale, negative_prompt, guidance,
                               max_sequence_length)
    field = TransformerVelocity(parts, grid, cond)
    state = lms.invert(recorder(field) if recorder else field, z0, grid, method_obj, stop=stop, mode=method_obj.mode,
                       progress=pipeline_progress(parts.pipe, progress), callback=callback)
    meta = {
        "model": parts.name, "path": FLOW, "kind": parts.kind,
        "prompt": prompt if isinstance(prompt, (str, type(None))) else list(prompt),
        "negative_prompt": negative_prompt if isinstance(negative_prompt, (str, type(None))) else list(negative_prompt),
        "guidance_scale": float(guidance_scale), "guidance": cond.guidance, "num_steps": int(num_steps),
        "mu": mu, "method": str(method_obj.spec), "latent_size": [int(z0.shape[-2]), int(z0.shape[-1])],
        "batch": int(z0.shape[0]), "max_sequence_length": max_sequence_length,
        "model_digest": model_digest(parts.transformer),
    }
    return state, grid, meta


def invert(pipe: Any, images: Any, prompt: Any = "", *, settings: "InversionSettings | None" = None,
           guidance_scale: float = 1.0, negative_prompt: Any = None, guidance: "float | None" = None,
           max_sequence_length: "int | None" = None, generator: "torch.Generator | None" = None,
           stop: "int | None" = None, progress: Any = None, callback: Any = None, **options: Any) -> State:
    """Invert images to the noise end (t = 1) of the pipeline's ``num_steps`` grid.

    ``settings`` / keywords: the :class:`~.settings.InversionSettings` fields ``num_steps`` (28),
    ``method`` ('obelm'), ``mode``, ``mode_options``, ``state_dtype``, ``resize``.

    ``images``: PIL image(s)/paths or a float tensor in [-1, 1] (B, 3, H, W), sizes multiples of the
    VAE factor times 2 (FLUX packing) or the patch size (SD3); one prompt or one per image;
    ``guidance_scale`` / ``negative_prompt`` / ``guidance`` as in the module docstring. States are
    kept in ``state_dtype`` (default: the transformer's). ``mode`` / ``mode_options`` as in
    :func:`linmultistep.invert` (docs/precision.md). Returns the core latent (for a 2-step method
    the pair (x_N, x_{N-1}), on a 'flow-...' grid) with what :func:`reconstruct` needs in ``metadata``.
    """
    parts = flow_parts_of(pipe)
    s = settings_of("invert", settings, options, unused=("eval_batch", "eval_threads"))
    num_steps, state_dtype = s.steps(28), s.state_dtype
    if state_dtype is not None and (not isinstance(state_dtype, torch.dtype) or not state_dtype.is_floating_point):
        raise TypeError(f"state_dtype must be a floating-point torch dtype, got {state_dtype!r}")
    read = _read(parts, images, s.resize, s.allow_size_mismatch)
    method_obj = s.method_object()
    z0 = encode_images(parts, read.x, generator).to(dtype=state_dtype or parts.dtype)
    state, _, meta = _invert_latent(parts, z0, prompt, num_steps, method_obj, guidance_scale, negative_prompt,
                                    guidance, max_sequence_length, stop, progress, callback)
    meta.update(image_kind=read.kind, image_size=[int(read.x.shape[-2]), int(read.x.shape[-1])],
                input_sizes=[list(s) for s in read.sizes])
    return dataclasses.replace(state, metadata={**dict(state.metadata), **meta})


def _grid_of(parts: FlowParts, latent: State, num_steps: "int | None") -> Grid:
    check_latent_path(latent, lms.flow_grid([0.0, 1.0]))  # a gaussian (VP) latent: refused by name
    meta = latent.metadata
    n = num_steps if num_steps is not None else meta.get("num_steps")
    if n is None:
        raise LatentMismatchError("the latent records no num_steps; pass num_steps=")
    grid, _ = flow_grid_for(parts, n, tuple(latent.x.shape[-2:]))
    if grid.fingerprint != latent.fingerprint:
        raise LatentMismatchError(
            f"this latent belongs to grid {latent.fingerprint}, but {n} steps of this pipeline's scheduler give grid "
            f"{grid.fingerprint} (num_steps {meta.get('num_steps')!r} vs {n}, or another shift / mu / schedule)")
    return grid


def reconstruct(pipe: Any, latent: State, prompt: Any = None, *, settings: "InversionSettings | None" = None,
                guidance_scale: "float | None" = None, negative_prompt: Any = None, guidance: "float | None" = None,
                output_type: "str | None" = None, return_dict: bool = True, check_model: bool = True,
                progress: Any = None, **options: Any) -> Any:
    """Sample back from an inverted latent with its method, grid and mode: the input images (exactly,
    up to the VAE). Prompt and guidance default to the latent's; other values make it an edit.
    ``settings`` / keywords: ``num_steps`` (None: the latent's; the method and mode are always the latent's).
    A latent of another path (a VP latent of a UNet model), grid or model is refused."""
    if isinstance(latent, EditOutput):
        latent = latent.inversion
    if not isinstance(latent, State):
        raise TypeError(f"latent must be the State returned by invert, got {type(latent).__name__}")
    parts = flow_parts_of(pipe)
    s = settings_of("reconstruct", settings, options, unused=tuple(f for f in INVERSION_FIELDS if f != "num_steps"))
    grid = _grid_of(parts, latent, s.num_steps)
    meta = dict(latent.metadata)
    recorded = meta.get("model_digest")
    if check_model and recorded is not None and recorded != model_digest(parts.transformer):
        raise LatentMismatchError(f"this latent was inverted with another model (weights digest {recorded}); use the "
                                  "same model, or check_model=False to sample it with this one (an edit)")
    same = prompt is None and guidance_scale is None and guidance is None and negative_prompt is None
    if not same or (not check_model and recorded != model_digest(parts.transformer)):
        latent = latent.as_edit()
    cond = encode_flow_prompts(
        parts, meta.get("prompt", "") if prompt is None else prompt, latent.x.shape[0],
        meta.get("guidance_scale", 1.0) if guidance_scale is None else guidance_scale,
        meta.get("negative_prompt") if negative_prompt is None else negative_prompt,
        meta.get("guidance") if guidance is None else guidance, meta.get("max_sequence_length"))
    method_obj = get_method(latent.method.name, **dict(latent.method.params))
    z0 = lms.sample(TransformerVelocity(parts, grid, cond), latent, grid, method_obj, mode=latent.mode,
                    progress=pipeline_progress(parts.pipe, progress))
    images = _output(decode_latents(parts, z0), meta.get("image_kind", "pt"), output_type, meta.get("input_sizes"))
    out = ReconstructionOutput(images=images, latents=z0)
    return out if return_dict else out.to_tuple()


def edit(pipe: Any, images: Any, source_prompt: Any, target_prompt: Any, *, settings: "InversionSettings | None" = None,
         strength: float = 1.0, source_guidance_scale: float = 1.0, guidance_scale: float = 1.0,
         negative_prompt: Any = None, guidance: "float | None" = None, max_sequence_length: "int | None" = None,
         output_type: "str | None" = None, return_dict: bool = True, progress: Any = None, **options: Any) -> Any:
    """Edit images from ``source_prompt`` to ``target_prompt`` through exact inversion: invert with the
    source prompt (``source_guidance_scale``) to grid index n_s = round(strength N), then sample the
    target prompt (``guidance_scale``) from that exact latent. With target = source and equal guidance
    it reproduces the input. (The UNet binding's Direct-Inversion branch and self-attention sharing
    are not implemented for transformers.) ``settings`` / keywords: the :class:`~.settings.InversionSettings`
    fields ``num_steps`` (28), ``method``, ``mode``, ``mode_options``, ``state_dtype``, ``resize``.
    Returns an :class:`EditOutput` (images, latents, inversion)."""
    parts = flow_parts_of(pipe)
    s = settings_of("edit", settings, options, unused=("eval_batch", "eval_threads"))
    num_steps, state_dtype = s.steps(28), s.state_dtype
    check_finite(strength=strength, guidance_scale=guidance_scale, source_guidance_scale=source_guidance_scale)
    if not 0.0 < float(strength) <= 1.0:
        raise ValueError(f"strength must be in (0, 1], got {strength!r}")
    read = _read(parts, images, s.resize, s.allow_size_mismatch)
    method_obj = s.method_object()
    z0 = encode_images(parts, read.x).to(dtype=state_dtype or parts.dtype)
    grid, _ = flow_grid_for(parts, num_steps, tuple(z0.shape[-2:]))
    n_s = max(method_obj.k, int(round(float(strength) * grid.N)))
    if n_s > grid.N:
        raise ValueError(f"{method_obj.spec} needs {method_obj.k} steps; {num_steps} steps at strength {strength} "
                         f"give {n_s}")
    inversion, grid, meta = _invert_latent(parts, z0, source_prompt, num_steps, method_obj, source_guidance_scale,
                                           negative_prompt, guidance, max_sequence_length, n_s, progress)
    meta.update(image_kind=read.kind, image_size=[int(read.x.shape[-2]), int(read.x.shape[-1])],
                input_sizes=[list(s) for s in read.sizes])
    inversion = dataclasses.replace(inversion, metadata={**dict(inversion.metadata), **meta})
    cond = encode_flow_prompts(parts, target_prompt, z0.shape[0], guidance_scale, negative_prompt, guidance,
                               max_sequence_length)
    same = (target_prompt == source_prompt and float(guidance_scale) == float(source_guidance_scale))
    z = lms.sample(TransformerVelocity(parts, grid, cond), inversion if same else inversion.as_edit(), grid, method_obj,
                   mode=method_obj.mode, progress=pipeline_progress(parts.pipe, progress))
    out = EditOutput(images=_output(decode_latents(parts, z), read.kind, output_type, meta["input_sizes"]),
                     latents=z, inversion=inversion)
    return out if return_dict else out.to_tuple()


@torch.no_grad()
def generate(pipe: Any, prompt: Any = "", *, settings: "InversionSettings | None" = None, guidance_scale: float = 1.0,
             negative_prompt: Any = None, guidance: "float | None" = None, max_sequence_length: "int | None" = None,
             batch: "int | None" = None, noise: "torch.Tensor | None" = None, generator: "torch.Generator | None" = None, output_type: str = "pt",
             return_dict: bool = True, progress: Any = None, **options: Any) -> Any:
    """Sample images from noise (t = 1) along the pipeline's ``num_steps`` grid with any method of the core.

    ``noise`` (B, C, h, w) is x_N when given, else standard normal of the pipeline's default latent size,
    drawn in float64 on the CPU with ``generator`` (B = the number of prompts, or ``batch``).
    ``settings`` / keywords: ``num_steps`` (28), ``method`` ('obelm'), ``mode``, ``mode_options``,
    ``state_dtype``. Returns a :class:`~.outputs.GenerationOutput` (images, latents, noise)."""
    parts = flow_parts_of(pipe)
    s = settings_of("generate", settings, options, unused=("resize", "eval_batch", "eval_threads", "allow_size_mismatch"))
    check_finite(guidance_scale=guidance_scale)
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    dtype = s.state_dtype or parts.dtype
    if noise is None:
        n = batch or (len(prompt) if isinstance(prompt, (list, tuple)) else 1)
        side = parts.latent_size
        shape = (n, int(parts.vae.config.latent_channels), side, side)
        noise = torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
    elif not isinstance(noise, torch.Tensor) or noise.ndim != 4:
        raise ValueError(f"noise must be a (B, C, h, w) tensor, got {getattr(noise, 'shape', type(noise).__name__)}")
    x_n = noise.to(device=parts.device, dtype=dtype)
    field, grid = velocity_for(parts, prompt, tuple(x_n.shape), s.steps(28), guidance_scale=guidance_scale,
                               negative_prompt=negative_prompt, guidance=guidance,
                               max_sequence_length=max_sequence_length)
    method_obj = s.method_object()
    z0 = lms.sample(field, x_n, grid, method_obj, mode=method_obj.mode, progress=pipeline_progress(parts.pipe, progress))
    out = GenerationOutput(images=_output(decode_latents(parts, z0), "pt", output_type, None), latents=z0, noise=x_n)
    return out if return_dict else out.to_tuple()
