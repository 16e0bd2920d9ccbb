"""A diffusers UNet as a k-diffusion denoiser ``model(x, sigma, **extra_args) -> D(x; sigma)``.

k-diffusion's convention (Karras et al. 2022, sec. 2): x = x0 + sigma * eps with
sigma = sqrt((1 - alphabar_t) / alphabar_t); a discrete-time DDPM network takes the variance
preserving input x_VP = x / sqrt(sigma^2 + 1) and a timestep t. As k-diffusion's
``DiscreteEpsDDPMDenoiser`` / ``DiscreteVDDPMDenoiser`` (``k_diffusion/external.py``):

    c_in = 1 / sqrt(sigma^2 + 1),   t = sigma_to_t(sigma)
    eps-prediction:     D = x - sigma * eps(x c_in, t)
    v-prediction:       D = x / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) * v(x c_in, t)   (sigma_data = 1)
    x0 ('sample'):      D = x0(x c_in, t)

``sigma_to_t`` interpolates linearly in log sigma between the two training timesteps around sigma
(k-diffusion's), or takes the nearest one with ``quantize=True`` (the default here: a UNet has seen
integer timesteps only, and the sigmas of a diffusers grid are exactly training sigmas, so the
denoiser then evaluates the network at exactly the timesteps the binding's own
[`UNetEps`][linmultistep.backends.diffusers.adapters.UNetEps] uses).

    den = UNetDenoiser.from_pipeline(pipe)
    sigmas = den.get_sigmas(20)
    x0 = linmultistep.backends.kdiffusion.sample_obelm(den, noise * sigmas[0], sigmas,
                                                       extra_args={"class_labels": labels})
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["UNetDenoiser"]

PREDICTIONS = ("epsilon", "v_prediction", "sample")


class UNetDenoiser(torch.nn.Module):
    """``UNetDenoiser(unet, alphas_cumprod, prediction_type)(x, sigma, **extra)``: the denoised D(x; sigma).

    ``alphas_cumprod``: the training schedule alphabar_t, t = 0..T-1 (a diffusers scheduler's
    ``alphas_cumprod``). Extra keywords go to the UNet: ``class_labels`` (class-conditional
    ``UNet2DModel``), ``encoder_hidden_states`` (text ``UNet2DConditionModel``), ...
    """

    def __init__(self, unet: Any, alphas_cumprod: Any, prediction_type: str = "epsilon", quantize: bool = True) -> None:
        super().__init__()
        if prediction_type not in PREDICTIONS:
            raise ValueError(f"prediction_type must be one of {PREDICTIONS}, got {prediction_type!r}")
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64).reshape(-1)
        if ac.numel() < 2 or not bool(((ac > 0) & (ac < 1)).all()):
            raise ValueError("alphas_cumprod must hold at least 2 values in (0, 1)")
        self.inner = unet
        self.prediction_type = prediction_type
        self.quantize = bool(quantize)
        sigmas = ((1 - ac) / ac).sqrt()
        self.register_buffer("sigmas", sigmas, persistent=False)
        self.register_buffer("log_sigmas", sigmas.log(), persistent=False)

    @classmethod
    def from_pipeline(cls, pipe: Any, quantize: bool = True) -> "UNetDenoiser":
        """The denoiser of a pipeline's UNet, with its scheduler's schedule and prediction type."""
        scheduler = pipe.scheduler
        return cls(pipe.unet, scheduler.alphas_cumprod, scheduler.config.prediction_type, quantize)

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def sigma_to_t(self, sigma: torch.Tensor, quantize: bool | None = None) -> torch.Tensor:
        """The (fractional) training timestep of each sigma: linear in log sigma between neighbours
        (k-diffusion's ``DiscreteSchedule.sigma_to_t``), the nearest with ``quantize``."""
        quantize = self.quantize if quantize is None else quantize
        log_sigma = sigma.to(torch.float64).log()
        dists = log_sigma - self.log_sigmas[:, None]
        if quantize:
            return dists.abs().argmin(dim=0).view(sigma.shape)
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        return ((1 - w) * low_idx + w * high_idx).view(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """sigma at a (fractional) timestep: log sigma interpolated linearly."""
        t = t.to(torch.float64)
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]).exp()

    def get_sigmas(self, n: int) -> torch.Tensor:
        """n sigmas from sigma_max down, evenly spaced in timestep, then 0 (k-diffusion's ``get_sigmas``)."""
        t_max = len(self.sigmas) - 1
        t = torch.linspace(t_max, 0, n, dtype=torch.float64)
        return torch.cat([self.t_to_sigma(t), t.new_zeros(1)])

    def forward(self, x: torch.Tensor, sigma: Any, **extra: Any) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        s = sigma.view(-1, *([1] * (x.ndim - 1)))
        c_in = 1.0 / (s * s + 1.0).sqrt()
        p = next(self.inner.parameters())
        t = self.sigma_to_t(sigma)
        t = t.to(p.device) if self.quantize else t.to(device=p.device, dtype=p.dtype)
        x_in = (x.to(torch.float64) * c_in).to(device=p.device, dtype=p.dtype)
        out = self.inner(x_in, t, return_dict=False, **extra)[0]
        if out.shape[1] == 2 * x.shape[1]:  # learned-variance models: the mean part comes first
            out = out[:, : x.shape[1]]
        out = out.to(device=x.device, dtype=torch.float64)
        xd = x.to(torch.float64)
        if self.prediction_type == "epsilon":
            denoised = xd - s * out
        elif self.prediction_type == "v_prediction":
            denoised = xd * c_in * c_in - s * c_in * out
        else:
            denoised = out
        return denoised.to(x.dtype)
