"""A model under study: the few operations the experiments need, one class per model family.

- :class:`UNetSubject`: a diffusers UNet pipeline through the library's pipeline functions
  (``invert`` / ``reconstruct`` / ``edit`` / ``generate``): the class-conditional pixel-space digits
  model (conditions are class labels) and text-to-image latent models such as mnist-sd or a local
  Stable Diffusion folder (conditions are captions).
- :class:`FlowSubject`: a flow-matching transformer pipeline (SD3 architecture, mnist-flow) through
  ``flow_pipeline``'s public ``velocity_for`` / ``encode_images`` / ``decode_latents`` and the core's
  ``linmultistep.invert`` / ``sample`` on its latents.

Images are (B, C, H, W) tensors in [-1, 1]; latents are model-space x_0 (the pixels for a model
without an autoencoder). A judge, where the model ships one, has ``predict(x) -> {head: classes}``
and ``features(x)``.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from linmultistep import PrecisionWarning

from .definitions import EditVariant, Sampler

__all__ = ["Heldout", "UNetSubject", "FlowSubject", "ClassifierJudge", "slerp"]


@dataclass
class Heldout:
    """Images the model never saw, their conditions (labels or captions) and judged classes per head."""

    images: torch.Tensor
    conditions: list
    classes: dict[str, torch.Tensor] = field(default_factory=dict)

    def pick(self, k: int) -> "Heldout":
        """``k`` images spread evenly over the set (every class present when sorted or balanced)."""
        k = min(int(k), len(self.images))
        idx = torch.linspace(0, len(self.images) - 1, k).round().long()
        return Heldout(self.images[idx], [self.conditions[int(i)] for i in idx], {h: c[idx] for h, c in self.classes.items()})


class ClassifierJudge:
    """The digits model's classifier seen as a one-head judge (head ``digit``)."""

    def __init__(self, classifier: Any) -> None:
        self.classifier = classifier

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"digit": self.classifier.predict(x)}

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation per batch row (Shoemake 1985), the usual choice for Gaussian latents:
    sin((1-t) w)/sin(w) a + sin(t w)/sin(w) b with cos(w) = <a, b> / (|a| |b|)."""
    fa, fb = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1))
    w = torch.arccos(cos.clamp(-1, 1))
    s = torch.sin(w)
    ca = torch.where(s > 1e-8, torch.sin((1 - t) * w) / s, torch.full_like(w, 1 - t))
    cb = torch.where(s > 1e-8, torch.sin(t * w) / s, torch.full_like(w, t))
    out = ca[:, None] * fa + cb[:, None] * fb
    return out.reshape(a.shape).to(a.dtype)


def _blend(a: Any, b: Any, t: float) -> Any:
    """slerp of two window entries (arrays, or tuples such as EDICT's (x, y) pair or a mode's named tuple)."""
    if isinstance(a, tuple):
        parts = [None if p is None else slerp(p, q, t) for p, q in zip(a, b)]
        return type(a)(*parts) if hasattr(a, "_fields") else tuple(parts)
    return slerp(a, b, t)


def blend_latents(la: Any, lb: Any, t: float) -> Any:
    """The latent whose every window entry is slerp(a, b, t) (for a 2-step method x_N and x_{N-1} alike)."""
    return dataclasses.replace(la, window={i: _blend(la.window[i], lb.window[i], t) for i in la.window})


def _mode_options(sampler: Sampler, guidance: float) -> "dict | None":
    # mode 'bits' needs a bound on |eps|; guidance widens it (the digits report's choice, kept)
    return {"eps_bound": 64.0 * max(1.0, guidance)} if sampler.mode == "bits" else None


class UNetSubject:
    """A UNet pipeline: class-conditional pixel model (digits) or text-to-image latent model (mnist-sd, SD)."""

    family = "unet"

    def __init__(self, pipe: Any, name: str, guidance: float, heldout: "Heldout | None" = None, judge: Any = None,
                 text: bool = True, edit_words: "dict[str, Sequence[str]] | None" = None) -> None:
        from ..diffusers.pipeline import parts_of

        self.pipe, self.name, self.guidance = pipe, name, float(guidance)
        self.heldout, self.judge, self.text = heldout, judge, text
        self.edit_words = edit_words or {}  # head -> its words in class order (captions)
        self.parts = parts_of(pipe)
        self.latent_space = self.parts.vae is not None

    # --- latents ---------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        from ..diffusers.pipeline import encode_images

        with torch.no_grad():
            return encode_images(self.parts, x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        from ..diffusers.pipeline import decode_latents

        return decode_latents(self.parts, z)

    def _cond(self, conditions: Any) -> Any:
        return conditions.tolist() if isinstance(conditions, torch.Tensor) else conditions

    def invert(self, x: torch.Tensor, conditions: Any, sampler: Sampler, steps: int, guidance: float,
               dtype: torch.dtype) -> Any:
        from ..diffusers import invert

        with warnings.catch_warnings():  # the tables measure the rounding growth these warn of
            warnings.simplefilter("ignore", PrecisionWarning)
            return invert(self.pipe, x, self._cond(conditions), num_steps=steps, method=sampler.method, mode=sampler.mode,
                          mode_options=_mode_options(sampler, guidance), guidance_scale=guidance, state_dtype=dtype,
                          progress=False)

    def reconstruct(self, latent: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixels, model-space x_0) sampled back from an inverted latent with its own settings."""
        from ..diffusers import reconstruct

        out = reconstruct(self.pipe, latent, progress=False)
        return out.images, out.latents

    # --- generation -------------------------------------------------------------------------------
    def prompts(self, n: int, seed: int) -> tuple[list, dict[str, np.ndarray]]:
        """``n`` conditions and their target class per judged head (labels 0..9 in turn; captions with
        seeded random attributes, mnist-sd's own ``evaluate.prompts_for``)."""
        if not self.text:
            digits = np.arange(n) % 10
            return digits.tolist(), {"digit": digits}
        from ..mnist_sd.evaluate import prompts_for

        return prompts_for(n, seed)

    def noise(self, n: int, seed: int) -> torch.Tensor:
        from ..diffusers.generation import initial_noise

        return initial_noise(self.pipe, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def generate(self, conditions: list, noise: torch.Tensor, sampler: Sampler, steps: int, guidance: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixels, model-space x_0) from ``noise`` with float64 states."""
        from ..diffusers.generation import generate

        out = generate(self.pipe, conditions, num_steps=steps, method=sampler.method, mode=sampler.mode,
                       guidance_scale=guidance, noise=noise, state_dtype=torch.float64, progress=False)
        return out.images, out.latents

    # --- editing ----------------------------------------------------------------------------------
    def edit_variant_note(self, variant: EditVariant) -> "str | None":
        """Why ``variant`` cannot run on this pipeline (None: it can)."""
        if variant.cross_attention_steps is not None and getattr(self.pipe.unet.config, "cross_attention_dim", None) is None:
            return ("Prompt-to-Prompt skipped: it swaps a word's cross-attention maps, and this model's UNet has no "
                    "cross-attention (no text prompt)")
        return None

    def edit(self, x: torch.Tensor, source: list, target: list, sampler: Sampler, steps: int, strength: float,
             guidance: float, variant: EditVariant) -> torch.Tensor:
        from ..diffusers import edit

        kw: dict[str, Any] = {"direct_inversion": variant.direct_inversion}
        if variant.cross_attention_steps is not None:
            kw["cross_attention_steps"] = variant.cross_attention_steps
        return edit(self.pipe, x, self._cond(source), self._cond(target), num_steps=steps, method=sampler.method,
                    mode=sampler.mode, strength=strength, guidance_scale=guidance, progress=False, **kw).images

    def fresh(self, conditions: list, steps: int, guidance: float, seed: int) -> torch.Tensor:
        from ..diffusers.generation import generate

        return generate(self.pipe, self._cond(conditions), num_steps=steps, guidance_scale=guidance,
                        generator=torch.Generator().manual_seed(seed), progress=False).images

    def unconditional(self) -> Any:
        from ..diffusers.adapters import is_class_conditional, null_class

        return null_class(self.parts.unet) if is_class_conditional(self.parts.unet) else ""

    def blend(self, la: Any, lb: Any, t: float) -> Any:
        return blend_latents(la, lb, t)


class FlowSubject:
    """A flow-matching transformer pipeline (SD3 architecture) on the core's sample/invert."""

    family = "flow"
    latent_space = True

    def __init__(self, pipe: Any, name: str, guidance: float, heldout: "Heldout | None" = None, judge: Any = None,
                 max_sequence_length: "int | None" = None, edit_words: "dict[str, Sequence[str]] | None" = None) -> None:
        from ..diffusers.flow_pipeline import flow_parts_of

        self.pipe, self.name, self.guidance = pipe, name, float(guidance)
        self.heldout, self.judge, self.text = heldout, judge, True
        self.max_sequence_length = max_sequence_length
        self.edit_words = edit_words or {}
        self.parts = flow_parts_of(pipe)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        from ..diffusers.flow_pipeline import encode_images

        with torch.no_grad():
            return encode_images(self.parts, x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        from ..diffusers.flow_pipeline import decode_latents

        with torch.no_grad():
            return decode_latents(self.parts, z)

    def _field(self, conditions: Any, shape: Sequence[int], steps: int, guidance: float) -> tuple[Any, Any]:
        from ..diffusers.flow_pipeline import velocity_for

        return velocity_for(self.pipe, conditions, tuple(shape), steps, guidance_scale=guidance,
                            max_sequence_length=self.max_sequence_length)

    def field_on(self, conditions: Any, shape: Sequence[int], steps: int, guidance: float, uniform: bool = False
                 ) -> tuple[Any, Any]:
        """(velocity field, grid) of ``steps`` steps: the model's own grid (its pipeline's), or with ``uniform``
        the sigmas shift(k / N), k = N..1 (:func:`linmultistep.analysis.flow_sampler_comparison.uniform_flow_sigmas`,
        the same shift and mu), with the same conditioning."""
        fld, grid = self._field(conditions, shape, steps, guidance)
        if not uniform:
            return fld, grid
        from linmultistep.analysis.flow_sampler_comparison import uniform_flow_sigmas

        from ..diffusers.flow_pipeline import TransformerVelocity, flow_grid_for
        from ..diffusers.flow_schedulers import flow_grid_from_config

        _, mu = flow_grid_for(self.parts, steps, (int(shape[-2]), int(shape[-1])))
        grid = flow_grid_from_config(self.parts.scheduler.config, steps, sigmas=uniform_flow_sigmas(steps), mu=mu)
        return TransformerVelocity(self.parts, grid, fld.conditioning), grid

    def _method(self, sampler: Sampler, guidance: float) -> Any:
        from ..diffusers.pipeline import method_in_mode

        return method_in_mode(sampler.method, sampler.mode, _mode_options(sampler, guidance))

    @torch.no_grad()
    def invert(self, x: torch.Tensor, conditions: Any, sampler: Sampler, steps: int, guidance: float,
               dtype: torch.dtype, stop: "int | None" = None) -> Any:
        import linmultistep as lms

        z = self.encode(x).to(dtype)
        fld, grid = self._field(conditions, z.shape, steps, guidance)
        method = self._method(sampler, guidance)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrecisionWarning)
            latent = lms.invert(fld, z, grid, method, mode=method.mode, stop=stop)
        # what sampling back needs, kept beside the latent (the core State carries no conditioning)
        return _FlowLatent(latent, conditions, steps, guidance, method, fld, grid)

    @torch.no_grad()
    def reconstruct(self, latent: "_FlowLatent") -> tuple[torch.Tensor, torch.Tensor]:
        import linmultistep as lms

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrecisionWarning)
            z0 = lms.sample(latent.field, latent.state, latent.grid, latent.method, mode=latent.method.mode)
        return self.decode(z0), z0

    def prompts(self, n: int, seed: int) -> tuple[list, dict[str, np.ndarray]]:
        from ..mnist_sd.evaluate import prompts_for

        return prompts_for(n, seed)

    def noise(self, n: int, seed: int) -> torch.Tensor:
        # the transformer's own latent size (SD3's sample_size is in latent pixels)
        channels = int(self.parts.transformer.config.in_channels)
        size = int(self.parts.transformer.config.sample_size)
        return torch.randn((n, channels, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    @torch.no_grad()
    def generate(self, conditions: list, noise: torch.Tensor, sampler: Sampler, steps: int, guidance: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        import linmultistep as lms

        fld, grid = self._field(conditions, noise.shape, steps, guidance)
        method = self._method(sampler, guidance)
        z0 = lms.sample(fld, noise.clone(), grid, method, mode=method.mode)
        return self.decode(z0), z0

    def edit_variant_note(self, variant: EditVariant) -> "str | None":
        if variant.direct_inversion or variant.cross_attention_steps is not None:
            return f"{variant.label} skipped: the transformer binding has no source branch or attention injection"
        return None

    @torch.no_grad()
    def edit(self, x: torch.Tensor, source: list, target: list, sampler: Sampler, steps: int, strength: float,
             guidance: float, variant: EditVariant) -> torch.Tensor:
        """Invert with the source captions (no guidance) to n_s = round(strength N), sample the target
        captions at ``guidance`` from that exact latent (flow_pipeline.edit's recipe, on the core)."""
        import linmultistep as lms

        method = self._method(sampler, guidance)
        z = self.encode(x).to(self.parts.dtype)
        src, grid = self._field(source, z.shape, steps, 1.0)
        n_s = max(method.k, int(round(float(strength) * grid.N)))
        latent = lms.invert(src, z, grid, method, mode=method.mode, stop=n_s)
        tgt, _ = self._field(target, z.shape, steps, guidance)
        return self.decode(lms.sample(tgt, latent, grid, method, mode=method.mode))

    def fresh(self, conditions: list, steps: int, guidance: float, seed: int) -> torch.Tensor:
        noise = self.noise(len(conditions), seed).to(self.parts.dtype)
        return self.generate(conditions, noise, Sampler("O-BELM", "obelm"), steps, guidance)[0]

    def unconditional(self) -> Any:
        return ""

    def blend(self, la: "_FlowLatent", lb: "_FlowLatent", t: float) -> "_FlowLatent":
        return la.with_window({i: _blend(la.window[i], lb.window[i], t) for i in la.window})


@dataclass
class _FlowLatent:
    state: Any
    conditions: Any
    steps: int
    guidance: float
    method: Any
    field: Any
    grid: Any

    @property
    def window(self) -> dict:
        return self.state.window

    def with_window(self, window: dict) -> "_FlowLatent":
        return dataclasses.replace(self, state=dataclasses.replace(self.state, window=window))
