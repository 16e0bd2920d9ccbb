"""The core :class:`~linmultistep.Grid` a diffusers scheduler samples on.

A DDIM-like scheduler config (``num_train_timesteps``, ``beta_schedule``, ``beta_start``,
``beta_end``, ``trained_betas``, ``timestep_spacing``, ``steps_offset``, ``set_alpha_to_one``)
fixes alphas_cumprod and the inference timesteps; :meth:`Grid.from_alphas_cumprod` turns them
into alpha_i = sqrt(alphas_cumprod[t_i]), sigma_i = sqrt(1 - alphas_cumprod[t_i]) with grid
index 0 = data end. alphas_cumprod is recomputed in float64 from the config (diffusers keeps a
float32 copy), so coefficients are accurate whatever the model dtype.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from linmultistep import Grid, GridError, betas_for

__all__ = ["alphas_cumprod_from_config", "grid_from_config", "scheduler_config"]

#: defaults of diffusers' DDIMScheduler for keys a config may lack (e.g. DDPM or PNDM configs)
DDIM_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "rescale_betas_zero_snr": False,
}


def scheduler_config(scheduler_or_config: Any) -> dict[str, Any]:
    """A plain dict with the DDIM-relevant keys of a scheduler, its config, or a mapping."""
    cfg = getattr(scheduler_or_config, "config", scheduler_or_config)
    if not isinstance(cfg, Mapping):
        raise TypeError(f"expected a diffusers scheduler or its config, got {type(scheduler_or_config).__name__}")
    out = dict(DDIM_DEFAULTS)
    out.update({k: cfg[k] for k in DDIM_DEFAULTS if k in cfg and cfg[k] is not None})
    return out


def alphas_cumprod_from_config(config: Mapping[str, Any]) -> np.ndarray:
    """prod_{s<=t} (1 - beta_s) in float64, from ``trained_betas`` or the named ``beta_schedule``."""
    cfg = scheduler_config(config)
    if cfg["rescale_betas_zero_snr"]:
        raise GridError(
            "rescale_betas_zero_snr=True puts the last timestep at alpha = 0 (infinite sigma/alpha); "
            "the probability-flow ODE in (sigmabar, xbar) is undefined there"
        )
    if cfg["trained_betas"] is not None:
        betas = np.asarray(cfg["trained_betas"], dtype=np.float64)
    else:
        betas = betas_for(
            cfg["beta_schedule"], int(cfg["num_train_timesteps"]),
            beta_start=float(cfg["beta_start"]), beta_end=float(cfg["beta_end"]),
        )
    return np.cumprod(1.0 - betas)


def grid_from_config(scheduler_or_config: Any, num_steps: int) -> Grid:
    """The grid of ``num_steps`` inference steps of a DDIM-like scheduler config.

    Index i >= 1 holds the i-th smallest scheduled timestep (indexed from diffusers' own timestep
    array rule, never t - T//N); index 0 is the clean point when ``set_alpha_to_one``.
    """
    cfg = scheduler_config(scheduler_or_config)
    return Grid.from_alphas_cumprod(
        alphas_cumprod_from_config(cfg),
        num_steps,  # validated by the core: 10.7 or "10" is refused, not truncated
        spacing=str(cfg["timestep_spacing"]),
        steps_offset=int(cfg["steps_offset"]),
        final_alpha_one=bool(cfg["set_alpha_to_one"]),
    )
