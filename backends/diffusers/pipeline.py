"""Exact inversion, reconstruction and editing with diffusers pipelines.

``pipe`` is a ``StableDiffusionPipeline`` (SD 1.x or 2.x layout; anything with ``unet``,
``vae``, ``scheduler``, ``encode_prompt``), an unconditional pipeline with ``unet`` and
``scheduler`` (e.g. ``DDPMPipeline``; pixel space), or a ``(unet, scheduler)`` pair.
The scheduler only supplies its config (schedule, spacing, offset, prediction type): the
stepping is done by the core integrator (:func:`linmultistep.invert` / :func:`linmultistep.sample`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import torch

import linmultistep as lms
from linmultistep import Grid, LatentMismatchError, Method, NondeterministicNetworkError, State, get_method

from .adapters import Conditioning, UNetEps, encode_classes, encode_prompts, is_class_conditional, is_conditional
from .arguments import check_edit_numbers
from . import environment
from .attention import SharedAttention
from .grid import grid_from_config, scheduler_config
from .images import check_trained_size, read_images
from .outputs import EditOutput, ReconstructionOutput, output_images, pipeline_progress
from .settings import (EDIT_FIELDS, EditSettings, InversionSettings, bound_hint, check_arguments, edit_settings_of,
                       method_in_mode, settings_of)

__all__ = ["Parts", "parts_of", "invert", "reconstruct", "edit", "encode_images", "decode_latents", "method_of",
           "method_in_mode", "model_digest", "conditioning_for", "check_word_swap", "InversionSettings", "EditSettings",
           "ReconstructionOutput", "EditOutput"]


@dataclass
class Parts:
    """The pieces of a pipeline the binding uses."""

    unet: Any
    scheduler: Any
    vae: Any = None
    pipe: Any = None
    name: str = ""

    @property
    def config(self) -> dict:
        return scheduler_config(self.scheduler)

    @property
    def prediction_type(self) -> str:
        return str(self.config["prediction_type"])

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def vae_factor(self) -> int:
        if self.vae is None:
            return 1
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def channels(self) -> int:
        """Image channels: the VAE's input channels (3, RGB, for Stable Diffusion; 1 for the grey mnist-sd);
        the UNet's own input channels in pixel space."""
        if self.vae is not None:
            return int(getattr(self.vae.config, "in_channels", 3) or 3)
        return int(self.unet.config.in_channels)

    @property
    def trained_size(self) -> "tuple[int, int] | None":
        """The (height, width) in pixels the model was trained at: the UNet's ``sample_size`` times the VAE factor."""
        size = getattr(self.unet.config, "sample_size", None)
        if size is None:
            return None
        h, w = (size, size) if isinstance(size, int) else tuple(size)[:2]
        return int(h) * self.vae_factor, int(w) * self.vae_factor

    @property
    def size_multiple(self) -> int:
        """Pixel sizes must be multiples of this: the VAE factor (the conditional UNet pads its
        up-sampling itself); an unconditional UNet2DModel also needs 2^(down-sampling blocks)."""
        unet_factor = 1 if is_conditional(self.unet) else 2 ** (len(self.unet.config.block_out_channels) - 1)
        return self.vae_factor * unet_factor


def parts_of(pipe: Any) -> Parts:
    """Split a pipeline or a (unet, scheduler) pair into :class:`Parts`."""
    if isinstance(pipe, Parts):
        return pipe
    if isinstance(pipe, (tuple, list)):
        if len(pipe) != 2:
            raise TypeError("give a pipeline or a (unet, scheduler) pair")
        unet, scheduler = pipe
        return Parts(unet, scheduler, None, None, str(getattr(unet.config, "_name_or_path", "") or ""))
    for attr in ("unet", "scheduler"):
        if getattr(pipe, attr, None) is None:
            raise TypeError(f"{type(pipe).__name__} has no {attr}; give a diffusers pipeline or a (unet, scheduler) pair")
    config = getattr(pipe, "config", None) or {}
    name = str(config.get("_name_or_path", "") or "")  # set by from_pretrained: the model id or local path
    return Parts(pipe.unet, pipe.scheduler, getattr(pipe, "vae", None), pipe, name)


def method_of(spec: lms.MethodSpec) -> Method:
    """The method object a latent's recorded spec names."""
    return get_method(spec.name, **dict(spec.params))


def model_digest(unet: Any) -> str:
    """A cheap digest of a network's weights: sha256 over every parameter's name, shape and a fixed
    strided sample of its values (about 4096 numbers per tensor), so another checkpoint of the same
    architecture gets another digest without hashing gigabytes. Cached on the module per weights version."""
    import hashlib

    versions = tuple(p._version for p in unet.parameters())  # in-place updates bump a tensor's version
    cached = getattr(unet, "_lms_digest", None)
    if cached is not None and cached[0] == versions:
        return cached[1]
    h = hashlib.sha256()
    for name, p in sorted(unet.state_dict().items()):
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
        h.update(flat[::step].to("cpu", torch.float64).numpy().tobytes())
    digest = h.hexdigest()[:16]
    try:
        object.__setattr__(unet, "_lms_digest", (versions, digest))
    except Exception:  # a module that refuses attributes: no cache
        pass
    return digest


def _check_model(parts: "Parts", latent: State) -> None:
    """Reconstruction with another model (same architecture, other weights) gives garbage silently."""
    recorded = latent.metadata.get("model_digest")
    if recorded is None:
        return  # latents from before model digests: nothing to compare
    now = model_digest(parts.unet)
    if recorded != now:
        raise LatentMismatchError(
            f"this latent was inverted with another model (weights digest {recorded}, model "
            f"{latent.metadata.get('model')!r}); this pipeline's UNet has digest {now}. Use the same model, or "
            "pass check_model=False to sample it with this one anyway (an edit, not a reconstruction)",
            argument="check_model")


# --- VAE ----------------------------------------------------------------------------------
@torch.no_grad()
def encode_images(parts: Parts, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Model-space x0: z = (E(x) - shift) * scaling_factor with E the posterior MEAN (deterministic),
    or a posterior sample drawn with ``generator``; the pixels themselves without a VAE."""
    if parts.vae is None:
        return x.to(device=parts.device, dtype=parts.dtype).contiguous()
    vae = parts.vae
    p = next(vae.parameters())
    dist = vae.encode(x.to(device=p.device, dtype=p.dtype)).latent_dist
    z = dist.mean if generator is None else dist.sample(generator)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    # contiguous: the VAE may return channels-last tensors, and convolution kernels (hence the
    # last bits of eps) depend on the memory format; a saved and reloaded latent must match.
    return ((z - shift) * float(vae.config.scaling_factor)).contiguous()


@torch.no_grad()
def decode_latents(parts: Parts, z: torch.Tensor) -> torch.Tensor:
    """Pixels in [-1, 1] (clipped) from model-space latents."""
    if parts.vae is None:
        return z.float().clamp(-1, 1)
    vae = parts.vae
    p = next(vae.parameters())
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    x = vae.decode(z.to(device=p.device, dtype=p.dtype) / float(vae.config.scaling_factor) + shift).sample
    return x.float().clamp(-1, 1)


def conditioning_for(parts: Parts, batch: int, prompt: Any, guidance_scale: float, negative_prompt: Any = None,
                     prompt_embeds: Any = None, negative_prompt_embeds: Any = None) -> Conditioning | None:
    """The conditioning of a batch for this pipeline's UNet: class labels, text (prompts or embeddings) or none."""
    if is_class_conditional(parts.unet):
        # class labels play the role of the prompt; the null class is the unconditional half
        if prompt_embeds is not None or negative_prompt is not None or negative_prompt_embeds is not None:
            raise ValueError("this UNet is class-conditional: give class labels as the prompt "
                             "(no prompt embeddings or negative prompt; guidance uses the null class)")
        if prompt is None or (isinstance(prompt, str) and prompt == ""):
            raise ValueError("this UNet is class-conditional: give a class label (or one per image) as the prompt")
        return encode_classes(parts.unet, prompt, batch, guidance_scale)
    if not is_conditional(parts.unet):
        if prompt_embeds is not None or (prompt not in (None, "") and prompt != [""] * batch):
            raise ValueError("this UNet is unconditional: it takes no prompt")
        return None
    return encode_prompts(parts.pipe, prompt, batch, guidance_scale, negative_prompt, prompt_embeds,
                          negative_prompt_embeds, device=parts.device)


def _jsonable_prompt(prompt: Any) -> Any:
    """The prompt as recorded in a latent's metadata: text, class labels (ints), or None for embeddings."""
    if prompt is None or isinstance(prompt, str):
        return prompt
    if isinstance(prompt, torch.Tensor):
        if prompt.dtype.is_floating_point:
            return None  # embeddings: not recordable
        return [int(v) for v in prompt.reshape(-1).tolist()]
    if hasattr(prompt, "__index__") and not isinstance(prompt, bool):
        return int(prompt)
    return [int(p) if hasattr(p, "__index__") and not isinstance(p, bool) else p for p in prompt]


# --- public API -----------------------------------------------------------------------------
def invert(
    pipe: Any,
    images: Any,
    prompt: "str | Sequence[str] | None" = "",
    *,
    settings: InversionSettings | None = None,
    guidance_scale: float = 1.0,
    negative_prompt: "str | Sequence[str] | None" = None,
    prompt_embeds: torch.Tensor | None = None,
    negative_prompt_embeds: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    stop: int | None = None,
    progress: bool | dict | None = None,
    callback: Any = None,
    **options: Any,
) -> State:
    """Invert images to the noise end of a ``num_steps`` grid of the pipeline's scheduler.

    ``settings``: an :class:`~.settings.InversionSettings` (num_steps 50 and method 'obelm' by default);
    each of its fields may also be given as a keyword (``num_steps=10, method="edict", mode="bits"``),
    which overrides ``settings``.

    ``images``: PIL image(s)/paths (any mode, see :mod:`.images`) or a float tensor in [-1, 1],
    (B, 3, H, W). One prompt for the batch or one per image. With ``guidance_scale != 1`` the
    inversion uses classifier-free guidance (negative prompt default ''), which an exact method
    inverts exactly too. The states are kept in ``state_dtype`` (default: the UNet's dtype); the
    network always runs in its own dtype. Returns the core :class:`~linmultistep.State` (for a
    2-step method the pair (x_N, x_{N-1}); EDICT the pair (x_N, y_N)) whose ``metadata`` holds
    what :func:`reconstruct` needs (model, prompt, guidance, num_steps, method, input kind).

    ``mode`` (None: the core's default, 'stable' for O-BELM and BDIA(gamma=1), 'recurrence'
    otherwise; or 'recurrence', 'stable', 'bits') and ``mode_options`` (the mode's keyword
    options, e.g. ``{"eps_bound": 256}`` for 'bits' when classifier-free guidance pushes |eps|
    beyond the default bound of 64) select the form, see docs/precision.md; the latent records it.

    ``eval_batch``: run the network in chunks of exactly this many rows (padded), so that an image's
    network outputs do not depend on the batch it was inverted in; recorded in the latent and used
    again by :func:`reconstruct`. With mode 'bits' this makes each image of a batch reconstruct bit for
    bit alone or in any other batch (docs/datasets.md). ``eval_threads``: on the CPU, run the network
    with this many intra-op threads (kernels split their sums by thread count), also recorded.
    """
    parts = parts_of(pipe)
    s = settings_of("invert", settings, options)
    num_steps, state_dtype, eval_batch, eval_threads = s.steps(50), s.state_dtype, s.eval_batch, s.eval_threads
    check_arguments(generator, state_dtype, guidance_scale=guidance_scale)
    read = read_sized(parts, images, s)
    x = read.x
    batch = x.shape[0]
    grid = grid_from_config(parts.scheduler, num_steps)
    method_obj = s.method_object()
    cond = conditioning_for(parts, batch, prompt, guidance_scale, negative_prompt, prompt_embeds, negative_prompt_embeds)
    x0 = encode_images(parts, x, generator).to(dtype=state_dtype or parts.dtype)
    eps_fn = UNetEps(parts.unet, grid, parts.prediction_type, cond, eval_batch=eval_batch, eval_threads=eval_threads)
    with bound_hint():
        state = lms.invert(eps_fn, x0, grid, method_obj, stop=stop, mode=method_obj.mode,
                           progress=pipeline_progress(parts.pipe, progress), callback=callback)
    metadata = _latent_metadata(parts, read, num_steps, method_obj, prompt if prompt_embeds is None else None,
                                negative_prompt, guidance_scale, generator, eval_batch, eval_threads)
    metadata.update(environment.record(parts.unet, grid, tuple(x0.shape), method_obj.mode, eval_batch, eval_threads))
    return dataclasses.replace(state, metadata=metadata)


def read_sized(parts: Parts, images: Any, settings: InversionSettings) -> Any:
    """The images as the model takes them (:func:`.images.read_images`), refused when far from the model's
    trained size (:func:`.images.check_trained_size`: the cost grows with the pixels and the output is
    garbage) unless ``settings.allow_size_mismatch``."""
    read = read_images(images, parts.size_multiple, settings.resize, channels=parts.channels)
    if not settings.allow_size_mismatch:
        check_trained_size(tuple(read.x.shape[-2:]), parts.trained_size, allow="allow_size_mismatch=True")
    return read


def _latent_metadata(parts: Parts, read: Any, num_steps: int, method_obj: Method, prompt: Any, negative_prompt: Any,
                     guidance_scale: float, generator: Any, eval_batch: Any, eval_threads: Any) -> dict:
    """What a latent records for :func:`reconstruct` (and to refuse another model or grid)."""
    cfg, x, batch = parts.config, read.x, read.x.shape[0]
    resized = any(tuple(sz) != tuple(x.shape[-2:]) for sz in read.sizes)
    return {
        "model": parts.name,
        "prompt": _jsonable_prompt(prompt),
        "negative_prompt": _jsonable_prompt(negative_prompt),
        "guidance_scale": float(guidance_scale),
        "num_steps": int(num_steps),
        "method": str(method_obj.spec),
        "prediction_type": parts.prediction_type,
        "timestep_spacing": cfg["timestep_spacing"],
        "steps_offset": int(cfg["steps_offset"]),
        "set_alpha_to_one": bool(cfg["set_alpha_to_one"]),
        "image_kind": read.kind,
        "image_size": [int(x.shape[-2]), int(x.shape[-1])],
        "batch": int(batch),
        "vae_sample": generator is not None,
        "eval_batch": eval_batch,
        "eval_threads": eval_threads,
        "model_digest": model_digest(parts.unet),
        **({"input_sizes": [list(sz) for sz in read.sizes]} if resized else {}),
    }


def _grid_for(parts: Parts, latent: State, num_steps: int | None) -> Grid:
    n = num_steps if num_steps is not None else latent.metadata.get("num_steps")
    if n is None:
        raise LatentMismatchError("the latent records no num_steps; pass num_steps=")
    grid = grid_from_config(parts.scheduler, n)  # validated there: 10.7 or "10" is refused, not truncated
    if grid.fingerprint != latent.fingerprint:
        cfg, meta = parts.config, latent.metadata
        now = {"num_steps": n, "timestep_spacing": cfg["timestep_spacing"], "steps_offset": int(cfg["steps_offset"]),
               "set_alpha_to_one": bool(cfg["set_alpha_to_one"]), "prediction_type": parts.prediction_type}
        differ = [f"{k} {meta[k]!r} vs {v!r}" for k, v in now.items() if k in meta and meta[k] != v]
        what = "; ".join(differ) if differ else "the noise schedule (betas) differs"
        raise LatentMismatchError(
            f"this latent belongs to grid {latent.fingerprint}, but {n} steps of this pipeline's scheduler give grid "
            f"{grid.fingerprint}: {what} (latent vs pipeline)"
        )
    return grid


def reconstruct(
    pipe: Any,
    latent: State,
    prompt: "str | Sequence[str] | None" = None,
    *,
    settings: InversionSettings | None = None,
    guidance_scale: float | None = None,
    negative_prompt: "str | Sequence[str] | None" = None,
    prompt_embeds: torch.Tensor | None = None,
    negative_prompt_embeds: torch.Tensor | None = None,
    output_type: str | None = None,
    return_dict: bool = True,
    restore_size: bool = True,
    progress: bool | dict | None = None,
    check_model: bool = True,
    exact: bool = True,
    **options: Any,
) -> "ReconstructionOutput | tuple":
    """Sample back from an inverted latent to images with the same method and grid.

    ``settings`` / keywords: the :class:`~.settings.InversionSettings` fields ``num_steps``, ``method``,
    ``mode``, ``mode_options``, ``eval_batch``, ``eval_threads``; each None (the default) is the latent's.

    Prompt, guidance, negative prompt, num_steps and the method default to what the latent
    records; give other values to edit (a different prompt) instead of reconstruct. Returns a
    :class:`ReconstructionOutput` (``return_dict=False``: the tuple (images, latents)) whose
    ``images`` are of the kind :func:`invert` was given (PIL list or tensor in [-1, 1]) unless
    ``output_type`` says otherwise, at the sizes the inputs had before ``resize=`` (unless
    ``restore_size=False``), and ``latents`` the model-space x_0. ``progress`` None follows the
    pipeline's ``set_progress_bar_config`` (on by default).
    The mode is the latent's (with its options, e.g. 'bits(data_bound=64.0, eps_bound=256.0)');
    another ``mode`` / ``mode_options`` is refused (LatentMismatchError). A latent recording another
    model's weights digest is refused unless ``check_model=False``.
    A mode-'bits' latent records the numerics environment of its inversion (docs/precision.md); where the
    network computes other bits here, :class:`~.environment.EnvironmentMismatchError` says so before the
    first step, naming both environments; ``exact=False`` then samples it in float arithmetic instead
    (an approximate reconstruction, its expected error stated in an ApproximateReconstructionWarning).
    """
    if isinstance(latent, EditOutput):
        latent = latent.inversion
    if not isinstance(latent, State):
        raise TypeError(f"latent must be the State returned by invert (or load_latent), got {type(latent).__name__}")
    parts = parts_of(pipe)
    s = settings_of("reconstruct", settings, options, unused=("state_dtype", "resize", "allow_size_mismatch"))
    num_steps, method, mode, mode_options = s.num_steps, s.method, s.mode, s.mode_options
    eval_batch, eval_threads = s.eval_batch, s.eval_threads
    if guidance_scale is not None:
        check_arguments(guidance_scale=guidance_scale)
    meta = dict(latent.metadata)
    if check_model:
        _check_model(parts, latent)
    elif meta.get("model_digest") not in (None, model_digest(parts.unet)):
        latent = latent.as_edit()  # other weights by request: an edit, whose network outputs differ by design
    grid = _grid_for(parts, latent, num_steps)
    method_obj = get_method(method) if method is not None else method_of(latent.method)
    method_obj = method_in_mode(method_obj, latent.mode if mode is None and not mode_options else mode, mode_options)
    if prompt is None and prompt_embeds is None:
        prompt = meta.get("prompt")
        if prompt is None and (is_conditional(parts.unet) or is_class_conditional(parts.unet)):
            raise ValueError("the latent records no prompt (it was inverted from embeddings): pass prompt or prompt_embeds")
        negative_prompt = negative_prompt if negative_prompt is not None else meta.get("negative_prompt")
    elif prompt is not None and _jsonable_prompt(prompt) != meta.get("prompt"):
        latent = latent.as_edit()
    guidance = float(meta.get("guidance_scale", 1.0) if guidance_scale is None else guidance_scale)
    if guidance != float(meta.get("guidance_scale", 1.0)):
        latent = latent.as_edit()
    batch = latent.x.shape[0]
    cond = conditioning_for(parts, batch, prompt, guidance, negative_prompt, prompt_embeds, negative_prompt_embeds)
    chunk = eval_batch if eval_batch is not None else meta.get("eval_batch")  # the inversion's, by default
    threads = eval_threads if eval_threads is not None else meta.get("eval_threads")
    eps_fn = UNetEps(parts.unet, grid, parts.prediction_type, cond, eval_batch=chunk, eval_threads=threads)
    here = environment.before_reconstruction(parts.unet, latent, grid, method_obj, chunk, threads, exact)
    if not exact:
        latent = latent.as_edit()  # no bit-for-bit checks: this environment's network outputs, float arithmetic
    try:
        z0 = lms.sample(eps_fn, latent, grid, method_obj, mode=method_obj.mode,
                        progress=pipeline_progress(parts.pipe, progress))
    except NondeterministicNetworkError as exc:  # a per-step check failed: name where the latent came from
        raise NondeterministicNetworkError(environment.explain(exc, meta.get(environment.ENVIRONMENT_KEY), here)) from None
    x = decode_latents(parts, z0)
    images = output_images(x, meta.get("image_kind", "pt"), output_type, meta.get("input_sizes") if restore_size else None)
    out = ReconstructionOutput(images=images, latents=z0)
    return out if return_dict else out.to_tuple()


def edit(
    pipe: Any,
    images: Any,
    source_prompt: "str | Sequence[str]",
    target_prompt: "str | Sequence[str]",
    *,
    settings: InversionSettings | None = None,
    editing: EditSettings | None = None,
    source_guidance_scale: float = 1.0,
    guidance_scale: float = 7.5,
    negative_prompt: "str | Sequence[str] | None" = None,
    generator: torch.Generator | None = None,
    output_type: str | None = None,
    return_dict: bool = True,
    restore_size: bool = True,
    progress: bool | dict | None = None,
    **options: Any,
) -> "EditOutput | tuple":
    """Edit images from ``source_prompt`` to ``target_prompt`` through exact inversion.

    ``settings``: the :class:`~.settings.InversionSettings` (num_steps 50, method 'obelm' by default);
    ``editing``: the :class:`~.settings.EditSettings` (``strength``, ``freeze_last``,
    ``direct_inversion``, ``self_attention_steps``, ``cross_attention_steps``); every field of either may
    also be given as a keyword, which overrides them.

    1. Invert with the source prompt at ``source_guidance_scale`` to grid index
       n_s = round(strength * N) (``strength`` < 1 skips the noise-most steps, keeping more of the
       image), recording the network inputs of every call.
    2. Sample the target branch from the exact latent at n_s down to 0 with the target prompt at
       ``guidance_scale``; the last ``freeze_last`` steps (grid indices freeze_last..1, the data
       end) use the source prompt instead (keeps fine texture).
    3. A **source branch** runs alongside in the same UNet batch (layout of :mod:`.attention`) when
       ``direct_inversion`` or ``cross_attention_steps > 0``:

       - ``direct_inversion=True`` (O-BELM + Direct Inversion, Ju et al. ICLR 2024; seed sec. 4.4): the
         source branch is PINNED to the inversion: at every network call its latent is the network
         input the inversion used at that grid index (mirrored call order; for O-BELM/BDIA exactly the
         inverted x_i, for EDICT the matching coupled state), with the source prompt at ``guidance_scale``,
         so it cannot drift whatever the guidance.
       - ``direct_inversion=False`` and ``cross_attention_steps > 0`` (classical Prompt-to-Prompt): the
         source branch is sampled freely from the same exact latent with the source prompt at
         ``source_guidance_scale``. For an exact method it retraces the inversion (to float rounding);
         for DDIM it drifts, and the maps it injects drift with it. Its x_0 is returned as
         ``EditOutput.source_latents``.

       While grid index i > (1 - ``self_attention_steps``) * n_s the target's self-attention maps are
       the source branch's (softmax(Q_src K_src^T / sqrt(d)) V_tgt; PnP-style structure injection); while
       i > (1 - ``cross_attention_steps``) * n_s its cross-attention maps (``attn2``) are the source's
       too, with the target prompt's values: Prompt-to-Prompt word swap (Hertz et al. 2022). Word swap
       aligns token position t of the two prompts, so every source prompt must tokenize to as many
       tokens as its target prompt (the tokenizer pads both to the same maximum length, so the
       positions after the prompts align too); otherwise a ValueError names both prompts.
       Without a source branch (``direct_inversion=False``, ``cross_attention_steps=0``) nothing is shared.

    With target = source prompt and equal guidance every variant reproduces the input (exactness).
    ``mode`` / ``mode_options`` as in :func:`invert` (None: the core's default).
    Returns an :class:`EditOutput` (``return_dict=False``: the tuple (images, latents, inversion[,
    source_latents])): the edited images of the input kind (at the inputs' sizes before ``resize=``, unless
    ``restore_size=False``), the model-space edited x_0, and the exact latent of the source images
    (``save_latent`` writes it; ``reconstruct`` gives the inputs back from it).
    """
    parts = parts_of(pipe)
    s = settings_of("edit", settings, options, unused=("eval_batch", "eval_threads"), also=EDIT_FIELDS)
    e = edit_settings_of(editing, options)
    num_steps, state_dtype = s.steps(50), s.state_dtype
    strength, freeze_last, direct_inversion = e.strength, e.freeze_last, e.direct_inversion
    self_attention_steps, cross_attention_steps = e.self_attention_steps, e.cross_attention_steps
    check_arguments(generator, state_dtype)
    check_edit_numbers(strength=strength, self_attention_steps=self_attention_steps, guidance_scale=guidance_scale,
                       source_guidance_scale=source_guidance_scale, cross_attention_steps=cross_attention_steps)
    if isinstance(freeze_last, bool) or not isinstance(freeze_last, int):
        raise TypeError(f"freeze_last must be an integer number of steps, got {freeze_last!r}")
    if not (is_conditional(parts.unet) or is_class_conditional(parts.unet)):
        raise ValueError("edit needs a conditional UNet (text: UNet2DConditionModel; or a class-conditional UNet2DModel)")
    cross = float(cross_attention_steps) > 0
    if cross:
        check_word_swap(parts, source_prompt, target_prompt)
    read = read_sized(parts, images, s)
    x, kind = read.x, read.kind
    batch = x.shape[0]
    grid = grid_from_config(parts.scheduler, num_steps)
    method_obj = s.method_object()
    n_s = max(method_obj.k, int(round(float(strength) * grid.N)))
    if n_s > grid.N:
        raise ValueError(f"{method_obj.spec} needs {method_obj.k} steps; {num_steps} steps at strength {strength} give {n_s}")
    if not 0 <= int(freeze_last) < n_s:
        raise ValueError(f"freeze_last must be in [0, {n_s}), got {freeze_last!r}")

    def encode(prompt: Any, scale: float) -> Conditioning:
        return conditioning_for(parts, batch, prompt, scale, negative_prompt, None, None)

    src = encode(source_prompt, source_guidance_scale)
    src_edit = encode(source_prompt, guidance_scale)
    tgt = encode(target_prompt, guidance_scale)

    x0 = encode_images(parts, x, generator).to(dtype=state_dtype or parts.dtype)
    inverter = UNetEps(parts.unet, grid, parts.prediction_type, src)
    # the network inputs of the inversion, per grid index, in call order (the pinned source branch)
    inputs: dict[int, list[torch.Tensor]] = {}

    def recording(xt: torch.Tensor, i: int) -> torch.Tensor:
        inputs.setdefault(i, []).append(xt)
        return inverter(xt, i)

    progress = pipeline_progress(parts.pipe, progress)
    with bound_hint():
        inversion = lms.invert(recording if direct_inversion else inverter, x0, grid, method_obj, stop=n_s,
                               mode=method_obj.mode, progress=progress)
    inversion = dataclasses.replace(inversion, metadata=_latent_metadata(
        parts, read, num_steps, method_obj, source_prompt, negative_prompt, source_guidance_scale, generator, None, None)
        | environment.record(parts.unet, grid, tuple(x0.shape), method_obj.mode, None, None))
    latent = inversion.as_edit()  # the target branch's outputs differ from the inversion's by design
    predictor = UNetEps(parts.unet, grid, parts.prediction_type, tgt)
    self_from = (1.0 - float(self_attention_steps)) * n_s
    cross_from = (1.0 - float(cross_attention_steps)) * n_s
    source_z0 = None

    def share(sharing: SharedAttention, i: int) -> None:
        sharing.self_active = i > self_from
        sharing.cross_active = cross and i > cross_from

    if direct_inversion:
        sharing = SharedAttention(parts.unet, batch)
        both_tgt = Conditioning.concat([src_edit, tgt], float(guidance_scale))
        both_src = Conditioning.concat([src_edit, src_edit], float(guidance_scale))
        used: dict[int, int] = {}

        def eps_fn(xt: torch.Tensor, i: int) -> torch.Tensor:
            # sampling retraces the inversion's network calls in mirrored order: its k-th call at
            # index i pairs with the inversion's k-th call from the end at that index
            k = used.get(i, 0)
            used[i] = k + 1
            recorded = inputs.get(i) or [xt]
            pinned = recorded[max(0, len(recorded) - 1 - k)].to(xt.dtype)
            share(sharing, i)
            cond = both_src if i <= freeze_last else both_tgt
            return predictor.eps(torch.cat([pinned, xt]), i, cond)[batch:]

        with sharing:
            z0 = lms.sample(eps_fn, latent, grid, method_obj, mode=method_obj.mode, progress=progress)
    elif cross:
        # classical Prompt-to-Prompt: [source, target] sampled together from two copies of the latent
        sharing = SharedAttention(parts.unet, batch)
        need_uncond = float(source_guidance_scale) != 1.0 or float(guidance_scale) != 1.0
        pair = {
            False: branch_pair(encode(source_prompt, source_guidance_scale), tgt, need_uncond, x0,
                               lambda: encode(source_prompt, 2.0).uncond, lambda: encode(target_prompt, 2.0).uncond),
            True: branch_pair(encode(source_prompt, source_guidance_scale), src_edit, need_uncond, x0,
                              lambda: encode(source_prompt, 2.0).uncond, lambda: encode(source_prompt, 2.0).uncond),
        }

        def eps_fn(xt: torch.Tensor, i: int) -> torch.Tensor:
            share(sharing, i)
            return predictor.eps(xt, i, pair[i <= freeze_last])

        with sharing:
            both = lms.sample(eps_fn, stack_rows(latent, 2), grid, method_obj, mode=method_obj.mode, progress=progress)
        source_z0, z0 = both[:batch], both[batch:]
    else:
        def eps_fn(xt: torch.Tensor, i: int) -> torch.Tensor:
            return predictor.eps(xt, i, src_edit if i <= freeze_last else tgt)

        z0 = lms.sample(eps_fn, latent, grid, method_obj, mode=method_obj.mode, progress=progress)
    x = decode_latents(parts, z0)
    sizes = inversion.metadata.get("input_sizes") if restore_size else None
    out = EditOutput(images=output_images(x, kind, output_type, sizes), latents=z0, inversion=inversion,
                     source_latents=source_z0)
    return out if return_dict else out.to_tuple()


def check_word_swap(parts: Parts, source_prompt: Any, target_prompt: Any) -> None:
    """Prompt-to-Prompt word swap maps token position t of each source prompt to position t of its
    target prompt: refuse, naming both prompts, a pair whose token counts differ (the text encoder's
    tokenizer counts, before padding to its maximum length)."""
    if not is_conditional(parts.unet):
        raise ValueError("cross_attention_steps needs a text-conditioned UNet (a class-conditional UNet has no "
                         "cross-attention to share); give cross_attention_steps=0")
    tokenizer = getattr(parts.pipe, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("cross_attention_steps needs the pipeline's tokenizer to align the prompts' tokens")
    sources = [source_prompt] if isinstance(source_prompt, str) else list(source_prompt)
    targets = [target_prompt] if isinstance(target_prompt, str) else list(target_prompt)
    if len(sources) == 1:
        sources = sources * len(targets)
    if len(targets) == 1:
        targets = targets * len(sources)
    for s, t in zip(sources, targets):
        if not isinstance(s, str) or not isinstance(t, str):
            raise TypeError(f"cross_attention_steps needs text prompts, got {s!r} and {t!r}")
        n_src, n_tgt = (len(tokenizer(p).input_ids) for p in (s, t))
        if n_src != n_tgt:
            raise ValueError(
                f"cross_attention_steps (Prompt-to-Prompt word swap) needs prompts of equal token counts: source "
                f"prompt {s!r} has {n_src} tokens, target prompt {t!r} has {n_tgt}; swap words for words of one "
                "token each, or give cross_attention_steps=0")


@dataclass(frozen=True)
class _RowGuidance(Conditioning):
    """Guidance with one scale per batch row (a (rows, 1, 1, 1) tensor): the two branches of a
    Prompt-to-Prompt batch may be guided differently; with scale 1 a row is its conditional output."""

    @property
    def guided(self) -> bool:
        return True


def branch_pair(src: Conditioning, tgt: Conditioning, need_uncond: bool, like: torch.Tensor,
                src_uncond: Any, tgt_uncond: Any) -> Conditioning:
    """The conditioning of a [source, target] batch. Equal scales: the plain concatenation (the usual
    arithmetic, eps_u + w (eps_c - eps_u)); different ones: both unconditional halves (``src_uncond()`` /
    ``tgt_uncond()`` encode the one a branch at scale 1 lacks) and a per-row scale."""
    if src.guidance_scale == tgt.guidance_scale or not need_uncond:
        return Conditioning.concat([src, tgt], float(tgt.guidance_scale))
    rows = src.cond.shape[0]
    scales = torch.tensor([float(src.guidance_scale)] * rows + [float(tgt.guidance_scale)] * rows,
                          dtype=like.dtype, device=like.device)
    uncond = torch.cat([src.uncond if src.uncond is not None else src_uncond(),
                        tgt.uncond if tgt.uncond is not None else tgt_uncond()])
    return _RowGuidance(torch.cat([src.cond, tgt.cond]), uncond, scales.view(-1, 1, 1, 1))


def stack_rows(latent: State, copies: int) -> State:
    """``copies`` copies of a latent's batch stacked along the batch (rows [all of copy 1, all of copy 2, ...])."""
    def stack(e: Any) -> Any:
        return type(e)(*(None if p is None else torch.cat([p] * copies) for p in e))

    return dataclasses.replace(latent, window={i: stack(e) for i, e in latent.window.items()})
