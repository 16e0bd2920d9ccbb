"""k-diffusion-style samplers and exact inverters for flow-matching models.

k-diffusion-style code (and ComfyUI's CONST model sampling) runs a flow model as a *denoiser*:
sigmas in [0, 1], descending to 0, x = (1 - sigma) x0 + sigma eps, and
D(x; sigma) = x - sigma v(x, sigma), so the sampler's ODE dx/dsigma = (x - D(x; sigma)) / sigma is
the flow's own dx/dt = v (t = sigma). :class:`FlowDenoiser` makes that denoiser from a velocity
network.

The functions here are those of :mod:`linmultistep.backends.kdiffusion` (same signatures:
``sample_obelm(model, x, sigmas, extra_args=None, callback=None, disable=None)``, ``invert_obelm``,
...), run on :func:`linmultistep.paths.flow_grid` of the sigmas: field (x - D) / sigma = v, path 'flow'
in the latent's fingerprint, in the projective coordinates of ``sample_lms`` / ``invert_lms``'s ``blend``
(default :data:`linmultistep.paths.FLOW_BLEND`, where O-BELM samples well on shifted schedules; 0 = the
flow's own (x, sigma)). Why a module of its own: the plain k-diffusion functions take any denoiser, so
they accept a flow denoiser as well and integrate the same ODE (their grid is the VE one, sigmabar =
sigma, whose xbar is k-diffusion's x: the same steps as blend 0 here, and Euler's for every blend,
checked in tests/test_flow_kdiffusion.py), but their latents are tagged
'gaussian', their stored states are x / sqrt(1 + sigma^2), and they do not refuse sigmas above 1.
Here a flow latent is refused by a gaussian grid and vice versa, and the states are x itself.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch

import linmultistep as lm
from linmultistep import GridError, Method, State, StepInfo
from linmultistep.paths import FLOW_BLEND, check_latent_path, flow_grid, flow_sigmas

from .kdiffusion import Callback, Denoiser, check_sigmas

__all__ = [
    "FlowDenoiser", "flow_sigmas_kd", "grid_from_flow_sigmas", "VelocityField", "sample_lms", "invert_lms",
    "sample_ddim", "sample_euler", "sample_obelm", "sample_bdia", "sample_edict", "sample_belm",
    "invert_ddim", "invert_obelm", "invert_bdia", "invert_edict", "invert_belm",
]


class FlowDenoiser:
    """A velocity network ``velocity(x, t, **extra_args)`` (t of shape (batch,)) as the k-diffusion
    denoiser D(x; sigma) = x - sigma v(x, sigma) of x = (1 - sigma) x0 + sigma eps."""

    def __init__(self, velocity: Callable[..., torch.Tensor]) -> None:
        self.velocity = velocity

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args: Any) -> torch.Tensor:
        s = sigma.reshape((-1,) + (1,) * (x.ndim - 1)).to(x.dtype)
        return x - s * self.velocity(x, sigma, **extra_args)


def flow_sigmas_kd(n: int, shift: float = 1.0, mu: "float | None" = None, dtype: torch.dtype = torch.float64,
                   **kw: Any) -> torch.Tensor:
    """n + 1 descending sigmas ending in 0 (k-diffusion order): the schedule of
    :func:`linmultistep.paths.flow_sigmas` (diffusers' flow schedule with ``shift`` / ``mu``), in float64."""
    return torch.tensor(flow_sigmas(n, shift=shift, mu=mu, **kw)[::-1].copy(), dtype=dtype)


def _checked(sigmas: Any, blend: float = FLOW_BLEND) -> tuple[np.ndarray, lm.Grid]:
    values = check_sigmas(sigmas)  # 1-D, finite, >= 0, strictly descending: k-diffusion's own checks
    if values[0] > 1.0:
        raise GridError(f"sigmas[0] = {float(values[0])!r} > 1: a flow's sigmas lie in [0, 1] "
                        "(x = (1 - sigma) x0 + sigma eps); use linmultistep.backends.kdiffusion for EDM-style sigmas")
    return values, flow_grid(values[::-1].copy(), blend=blend)


def grid_from_flow_sigmas(sigmas: Any, blend: float = FLOW_BLEND) -> lm.Grid:
    """The flow grid of k-diffusion-ordered sigmas: index 0 = sigmas[-1] (data end), N = sigmas[0], in the
    coordinates of ``blend`` (:func:`linmultistep.paths.flow_grid`; 0 = (x, sigma))."""
    return _checked(sigmas, blend)[1]


class VelocityField:
    """The denoiser as the core's field on a flow grid: v(x, i) = (x - D(x; sigma_i)) / sigma_i.
    ``last_denoised`` is the most recent D (for k-diffusion callbacks)."""

    def __init__(self, model: Denoiser, sigmas: np.ndarray, extra_args: "Mapping[str, Any] | None" = None) -> None:
        self.model = model
        self.sigma = np.ascontiguousarray(sigmas[::-1])  # grid order
        self.extra_args = dict(extra_args or {})
        self.last_denoised: "torch.Tensor | None" = None

    def __call__(self, x: torch.Tensor, i: int) -> torch.Tensor:
        sigma = float(self.sigma[i])
        if sigma <= 0.0:
            raise GridError(f"the denoiser cannot give a velocity at sigma = 0 (grid index {i})")
        denoised = self.model(x, x.new_full((x.shape[0],), sigma), **self.extra_args)
        self.last_denoised = denoised
        return (x - denoised) / sigma


def _progress(disable: "bool | None") -> "bool | dict":
    return False if disable is True else {"disable": disable}


def _check_x(x: Any, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch tensor (or the State an invert_* returned), got {type(x).__name__}")
    if x.ndim < 1:
        raise ValueError(f"{what} needs a batch dimension first, got a 0-d tensor")


def _hook(callback: "Callback | None", field: VelocityField, sigmas: Any, values: np.ndarray, grid: lm.Grid,
          first: "torch.Tensor | None", sampling: bool) -> "Callable[[StepInfo], None] | None":
    """k-diffusion's callback({'x', 'i', 'sigma', 'sigma_hat', 'denoised'}) from the core's per-step one."""
    if callback is None:
        return None
    current = {"x": first}

    def at(j: int) -> torch.Tensor:
        return sigmas[j] if isinstance(sigmas, torch.Tensor) else torch.tensor(values[j], dtype=torch.float64)

    def on_step(info: StepInfo) -> None:
        if sampling:
            i = grid.N - (info.index + 1)
            callback({"x": current["x"], "i": i, "sigma": at(i), "sigma_hat": at(i), "denoised": field.last_denoised})
            current["x"] = info.entry.x
        else:
            s = at(grid.N - info.index)
            callback({"x": info.entry.x, "i": info.step - 1, "sigma": s, "sigma_hat": s,
                      "denoised": field.last_denoised})

    return on_step


def sample_lms(model: Denoiser, x: "torch.Tensor | State", sigmas: Any, extra_args: "Mapping[str, Any] | None" = None,
               callback: "Callback | None" = None, disable: "bool | None" = None, method: "str | Method" = "obelm",
               mode: "str | None" = None, blend: float = FLOW_BLEND) -> torch.Tensor:
    """Sample a flow model from ``x`` at sigmas[0] (noise, or the State an ``invert_*`` returned) down to
    sigmas[-1] with any linmultistep method (k-diffusion API, flow sigmas in [0, 1]); ``blend``: the
    coordinates (:func:`linmultistep.paths.flow_grid`; 0 = (x, sigma), the plain ``backends.kdiffusion``
    functions' steps)."""
    values, grid = _checked(sigmas, blend)
    m = lm.get_method(method)
    field = VelocityField(model, values, extra_args)
    if isinstance(x, State):
        check_latent_path(x, grid)
        first = x.window[x.lo].x
    else:
        _check_x(x, "the starting noise x")
        first = x
    hook = _hook(callback, field, sigmas, values, grid, first, True)
    return lm.sample(field, x, grid, m, mode=mode, callback=hook, progress=_progress(disable))


def invert_lms(model: Denoiser, x0: torch.Tensor, sigmas: Any, extra_args: "Mapping[str, Any] | None" = None,
               callback: "Callback | None" = None, disable: "bool | None" = None, method: "str | Method" = "obelm",
               mode: "str | None" = None, blend: float = FLOW_BLEND) -> State:
    """Invert data ``x0`` (at sigmas[-1], usually 0) to sigmas[0]; exact for the BELMs and EDICT. The State
    (path 'flow') goes back to ``sample_*`` with the same sigmas, method and ``blend`` for the exact round trip."""
    values, grid = _checked(sigmas, blend)
    _check_x(x0, "the data x0")
    field = VelocityField(model, values, extra_args)
    hook = _hook(callback, field, sigmas, values, grid, None, False)
    return lm.invert(field, x0, grid, lm.get_method(method), mode=mode, callback=hook, progress=_progress(disable))


def sample_ddim(model, x, sigmas, extra_args=None, callback=None, disable=None, mode=None) -> torch.Tensor:
    """Euler in sigma, x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v_i: k-diffusion's ``sample_euler`` for a
    flow denoiser, diffusers' FlowMatchEulerDiscreteScheduler (the core's DDIM on a flow grid)."""
    return sample_lms(model, x, sigmas, extra_args, callback, disable, method="ddim", mode=mode)


sample_euler = sample_ddim


def sample_obelm(model, x, sigmas, extra_args=None, callback=None, disable=None, mode=None) -> torch.Tensor:
    """O-BELM (BELM paper Prop. 4), order 2 in sigma for a flow (docs/flow.md)."""
    return sample_lms(model, x, sigmas, extra_args, callback, disable, method="obelm", mode=mode)


def sample_bdia(model, x, sigmas, extra_args=None, callback=None, disable=None, gamma: float = 1.0,
                mode=None) -> torch.Tensor:
    """BDIA(gamma) as a 2-step BELM."""
    return sample_lms(model, x, sigmas, extra_args, callback, disable, method=lm.bdia(gamma), mode=mode)


def sample_edict(model, x, sigmas, extra_args=None, callback=None, disable=None, p: float = 0.93,
                 mode=None) -> torch.Tensor:
    """EDICT: coupled Euler steps mixed with weight p (two network calls per step)."""
    return sample_lms(model, x, sigmas, extra_args, callback, disable, method=lm.edict(p), mode=mode)


def sample_belm(model, x, sigmas, extra_args=None, callback=None, disable=None, k: int = 2, rule=None,
                mode=None) -> torch.Tensor:
    """A k-step BELM (the LTE-optimal rule for k, or any bidirectional explicit ``rule``)."""
    return sample_lms(model, x, sigmas, extra_args, callback, disable, method=lm.belm(rule, k=k), mode=mode)


def invert_ddim(model, x0, sigmas, extra_args=None, callback=None, disable=None, mode=None) -> State:
    """Euler inversion, approximate (for comparison)."""
    return invert_lms(model, x0, sigmas, extra_args, callback, disable, method="ddim", mode=mode)


def invert_obelm(model, x0, sigmas, extra_args=None, callback=None, disable=None, mode=None) -> State:
    """Exact O-BELM inversion: the State holds (x_N, x_{N-1})."""
    return invert_lms(model, x0, sigmas, extra_args, callback, disable, method="obelm", mode=mode)


def invert_bdia(model, x0, sigmas, extra_args=None, callback=None, disable=None, gamma: float = 1.0,
                mode=None) -> State:
    """Exact BDIA(gamma) inversion."""
    return invert_lms(model, x0, sigmas, extra_args, callback, disable, method=lm.bdia(gamma), mode=mode)


def invert_edict(model, x0, sigmas, extra_args=None, callback=None, disable=None, p: float = 0.93,
                 mode=None) -> State:
    """Exact EDICT inversion: the State holds the coupled pair (x_N, y_N)."""
    return invert_lms(model, x0, sigmas, extra_args, callback, disable, method=lm.edict(p), mode=mode)


def invert_belm(model, x0, sigmas, extra_args=None, callback=None, disable=None, k: int = 2, rule=None,
                mode=None) -> State:
    """Exact k-step BELM inversion."""
    return invert_lms(model, x0, sigmas, extra_args, callback, disable, method=lm.belm(rule, k=k), mode=mode)
