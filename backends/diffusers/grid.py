"""The core :class:`~linmultistep.Grid` a diffusers scheduler samples on.

A DDIM-like scheduler config (``num_train_timesteps``, ``beta_schedule``, ``beta_start``,
``beta_end``, ``trained_betas``, ``rescale_betas_zero_snr``, ``timestep_spacing``,
``steps_offset``, ``set_alpha_to_one``) fixes alphas_cumprod and the inference timesteps; the
grid holds alpha_i = sqrt(alphas_cumprod[t_i]), sigma_i = sqrt(1 - alphas_cumprod[t_i]) with grid
index 0 = data end, exactly as :meth:`Grid.from_alphas_cumprod` builds it (same arrays, same
fingerprint). The betas are diffusers' formulas (``linear``, ``scaled_linear``,
``squaredcos_cap_v2``, trained betas, the zero-terminal-SNR rescaling) evaluated in float64
(diffusers keeps a float32 copy, which agrees to float32 rounding), so coefficients are accurate
whatever the model dtype. Only the scheduled timesteps must carry a noise level: a schedule that
is invalid elsewhere (betas above 1 at timesteps the grid never visits) is accepted.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from linmultistep import Grid, GridError, betas_for, scheduled_timesteps
from linmultistep.schedules import rescale_zero_terminal_snr

__all__ = ["alphas_cumprod_from_config", "betas_from_config", "grid_from_config", "grid_points", "scheduler_config",
           "BETA_SCHEDULES"]

#: the beta schedules diffusers' DDIMScheduler knows
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")

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


def betas_from_config(config: Mapping[str, Any]) -> np.ndarray:
    """beta_t in float64: ``trained_betas`` or the named ``beta_schedule`` (diffusers' formulas,
    :func:`linmultistep.betas_for`), then the zero-terminal-SNR rescaling if
    ``rescale_betas_zero_snr`` (:func:`linmultistep.schedules.rescale_zero_terminal_snr`)."""
    cfg = scheduler_config(config)
    if cfg["trained_betas"] is not None:
        betas = np.asarray(cfg["trained_betas"], dtype=np.float64)
        if betas.ndim != 1 or betas.shape[0] < 2:
            raise ValueError(f"trained_betas must be a list of at least 2 betas, got shape {betas.shape}")
    else:
        if cfg["beta_schedule"] not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule {cfg['beta_schedule']!r} is not one diffusers' DDIMScheduler knows; "
                             f"expected one of {BETA_SCHEDULES} (or trained_betas)")
        betas = betas_for(
            cfg["beta_schedule"], int(cfg["num_train_timesteps"]),
            beta_start=float(cfg["beta_start"]), beta_end=float(cfg["beta_end"]),
        )
    if cfg["rescale_betas_zero_snr"]:
        betas = rescale_zero_terminal_snr(betas)
    return betas


def alphas_cumprod_from_config(config: Mapping[str, Any]) -> np.ndarray:
    """prod_{s<=t} (1 - beta_s) in float64 (:func:`betas_from_config`)."""
    return np.cumprod(1.0 - betas_from_config(config))


def grid_points(scheduler_or_config: Any, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(timesteps, alphas_cumprod) of grid indices 0..N, unchecked, as :meth:`Grid.from_alphas_cumprod`
    picks them: index 0 is the clean point (timestep NaN, alphas_cumprod 1) when ``set_alpha_to_one``,
    else timestep 0 (the smallest scheduled timestep itself when that is 0, so no step has zero length)."""
    cfg = scheduler_config(scheduler_or_config)
    ac = alphas_cumprod_from_config(cfg)
    ts = scheduled_timesteps(ac.shape[0], num_steps, spacing=str(cfg["timestep_spacing"]),
                             steps_offset=cfg["steps_offset"])
    if ts[0] < 0 or ts[-1] >= ac.shape[0]:
        raise GridError(f"scheduled timesteps {ts[0]}..{ts[-1]} fall outside the schedule's 0..{ac.shape[0] - 1}"
                        f" (steps_offset={cfg['steps_offset']}?)")
    dup = np.diff(ts) == 0
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise GridError(f"duplicate timestep {ts[i]} at grid indices {i + 1} and {i + 2}: {num_steps} "
                        f"'{cfg['timestep_spacing']}' steps of a {ac.shape[0]}-step schedule repeat timesteps")
    if ts.shape[0] == 1 and ts[0] == 0 and not cfg["set_alpha_to_one"]:
        raise GridError(f"num_steps={num_steps} schedules only timestep 0, which with set_alpha_to_one=False is the data "
                        "end itself: no step is left (diffusers' DDIMScheduler takes one step of zero length there); "
                        "use at least 2 steps")
    if bool(cfg["set_alpha_to_one"]):
        return np.concatenate([[np.nan], ts.astype(np.float64)]), np.concatenate([[1.0], ac[ts]])
    if ts[0] > 0:
        return np.concatenate([[0.0], ts.astype(np.float64)]), np.concatenate([[ac[0]], ac[ts]])
    return ts.astype(np.float64), ac[ts]


def grid_from_config(scheduler_or_config: Any, num_steps: int) -> Grid:
    """The grid of ``num_steps`` inference steps of a DDIM-like scheduler config.

    Index i >= 1 holds the i-th smallest scheduled timestep (indexed from diffusers' own timestep
    array rule, never t - T//N); index 0 is the clean point when ``set_alpha_to_one``. A scheduled
    timestep without a noise level is refused, naming its cause: alphas_cumprod <= 0 (betas above 1,
    e.g. ``beta_end`` > 1) or exactly 0 (``rescale_betas_zero_snr`` at the last timestep, which only
    'trailing' and 'linspace' spacings schedule).
    """
    cfg = scheduler_config(scheduler_or_config)
    ts, acs = grid_points(cfg, num_steps)  # validated by the core: 10.7 or "10" is refused, not truncated
    bad = ~(np.isfinite(acs) & (acs > 0) & (acs <= 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        t = int(ts[i])
        if acs[i] == 0 and cfg["rescale_betas_zero_snr"]:
            raise GridError(
                f"rescale_betas_zero_snr=True makes alphas_cumprod[{t}] = 0 (zero SNR: pure noise, alpha = 0) and "
                f"timestep {t} is on this {cfg['timestep_spacing']!r} grid: the core's coordinates xbar = x / alpha "
                "and sigmabar = sigma / alpha are infinite there. Use 'leading' spacing (its timesteps stay below "
                "the last one) or, in a scheduler, method='ddim' (diffusers' own DDIM step)")
        betas = betas_from_config(cfg)
        above = np.flatnonzero(betas >= 1)
        cause = (f"betas reach 1 or more from timestep {int(above[0])} on (beta_start={cfg['beta_start']}, "
                 f"beta_end={cfg['beta_end']}, {cfg['beta_schedule']!r}), so 1 - beta <= 0 and no noise level exists "
                 "there" if above.size else "the schedule has no noise level there")
        raise GridError(f"alphas_cumprod[{t}] = {acs[i]:.3g} at scheduled timestep {t} (grid index {i}) is not in "
                        f"(0, 1]: {cause}; diffusers' DDIMScheduler returns NaN or infinity at such timesteps")
    return Grid(np.sqrt(acs), np.sqrt(1.0 - acs), ts)
