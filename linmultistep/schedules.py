"""Discrete noise schedules of DDPM-style models, as diffusers defines them.

alphas_cumprod[t] = prod_{s<=t} (1 - beta_s); the forward process is
x_t = sqrt(alphas_cumprod[t]) x_0 + sqrt(1 - alphas_cumprod[t]) eps.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["betas_for", "alphas_cumprod_for", "rescale_zero_terminal_snr", "SCHEDULES"]

SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def betas_for(
    schedule: str,
    num_train_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
) -> np.ndarray:
    """Betas of a named schedule in float64.

    - "linear" (DDPM, Ho et al. 2020): linspace(beta_start, beta_end); DDPM used 1e-4..0.02.
    - "scaled_linear" (Stable Diffusion): linspace(sqrt(beta_start), sqrt(beta_end))**2.
    - "squaredcos_cap_v2" (cosine, Nichol & Dhariwal 2021): betas from
      alpha_bar(t) = cos((t + 0.008) / 1.008 * pi / 2)**2, capped at 0.999.
    """
    n = int(num_train_timesteps)
    if n < 2:
        raise ValueError(f"num_train_timesteps must be at least 2, got {num_train_timesteps}")
    if schedule == "linear":
        return np.linspace(beta_start, beta_end, n, dtype=np.float64)
    if schedule == "scaled_linear":
        return np.linspace(beta_start**0.5, beta_end**0.5, n, dtype=np.float64) ** 2
    if schedule in ("squaredcos_cap_v2", "cosine"):
        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array(
            [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)],
            dtype=np.float64,
        )
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES + ('cosine',)}")


def alphas_cumprod_for(schedule: str, num_train_timesteps: int = 1000, **kwargs: float) -> np.ndarray:
    """Cumulative products of (1 - beta) for a named schedule (see :func:`betas_for`)."""
    return np.cumprod(1.0 - betas_for(schedule, num_train_timesteps, **kwargs))


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Betas whose last alphas_cumprod is exactly 0 (zero terminal SNR), in float64.

    Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1
    (diffusers' ``rescale_betas_zero_snr``): with a_t = sqrt(alphas_cumprod[t]), the shifted and
    scaled a'_t = (a_t - a_{T-1}) a_0 / (a_0 - a_{T-1}) keeps a'_0 = a_0 and makes a'_{T-1} = 0;
    the betas are read back from alphas_cumprod' = a'^2 (beta_0 = 1 - a'_0^2, beta_t = 1 -
    alphas_cumprod'[t] / alphas_cumprod'[t-1]), so the last beta is 1.
    """
    b = np.asarray(betas, dtype=np.float64)
    a = np.sqrt(np.cumprod(1.0 - b))
    a0, aT = a[0], a[-1]
    if not a0 > aT:
        raise ValueError("rescale_zero_terminal_snr needs alphas_cumprod to decrease from the first to the last "
                         f"timestep, got sqrt(alphas_cumprod) {a0!r} .. {aT!r}")
    scaled = (a - aT) * (a0 / (a0 - aT))
    ac = scaled**2
    alphas = np.empty_like(ac)
    alphas[0] = ac[0]
    alphas[1:] = ac[1:] / ac[:-1]
    return 1.0 - alphas
