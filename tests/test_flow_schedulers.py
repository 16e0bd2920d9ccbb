"""FlowBELMScheduler against diffusers' own FlowMatchEulerDiscreteScheduler (Euler = the core's DDIM on a
flow grid, step for step to float rounding), the float64 schedule formulas against diffusers' values,
exact inversion through the inverse scheduler, and bad configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import FlowMatchEulerDiscreteScheduler  # noqa: E402

import linmultistep as lm  # noqa: E402
from linmultistep.backends.diffusers.flow_schedulers import (FlowBELMInverseScheduler, FlowBELMScheduler,  # noqa: E402
                                                             flow_grid_from_config)
from linmultistep.paths import dynamic_shift_mu, flow_sigmas  # noqa: E402

EPS32 = float(torch.finfo(torch.float32).eps)
N = 12
# (config, set_timesteps keywords): SD3's shift, FLUX's dynamic shifting with its sigmas and mu,
# dynamic shifting alone, a linear time shift, a terminal shift, custom sigmas with SD3's shift
CASES = [
    (dict(shift=3.0), {}),
    (dict(use_dynamic_shifting=True), dict(mu=dynamic_shift_mu(1024), sigmas=np.linspace(1.0, 1.0 / N, N))),
    (dict(use_dynamic_shifting=True), dict(mu=0.8)),
    (dict(use_dynamic_shifting=True, time_shift_type="linear"), dict(mu=2.0)),
    (dict(shift=3.0, shift_terminal=0.05), {}),
    (dict(shift=3.0), dict(sigmas=np.linspace(1.0, 1.0 / N, N) ** 1.5)),
]
IDS = ["shift3", "flux", "dynamic", "linear", "terminal", "custom-sigmas"]


def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    w = torch.randn(16, 16, generator=torch.Generator().manual_seed(0)).to(x.dtype) / 4
    return torch.tanh(x @ w + float(t) / 1000.0) - 0.3 * x


@pytest.mark.parametrize("blend", [None, 0.0], ids=["default-coordinates", "x-t"])
@pytest.mark.parametrize("cfg,kw", CASES, ids=IDS)
def test_euler_equals_diffusers_step_for_step(cfg, kw, blend):
    ref = FlowMatchEulerDiscreteScheduler(**cfg)
    ours = FlowBELMScheduler.from_config(ref.config, method="ddim", **({} if blend is None else {"blend": blend}))
    ours.set_timesteps(N, **kw)
    assert (ours.grid.field_mix is None) == (blend == 0.0)
    ref.set_timesteps(N, **kw)
    ours.set_timesteps(N, **kw)
    assert torch.equal(ours.timesteps, ref.timesteps) and torch.equal(ours.sigmas, ref.sigmas)
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    for t in ref.timesteps:  # both get the same sample and model output at every step
        v = velocity(x, t)
        a = ref.step(v, t, x).prev_sample
        sigma, sigma_next = ref.sigmas[ref.step_index - 1], ref.sigmas[ref.step_index]
        b = ours.step(v, t, x).prev_sample
        # diffusers: one rounding of dt * v and one of the sum. Ours, in the grid's coordinates
        # (linmultistep.paths): F = p x + q v, then x' = r x + e F with r = c'/c, e = c' (T' - T); each
        # float32 product and sum rounds once (the float64 coefficients' errors are 1e-16: negligible)
        bound = 2 * EPS32 * (x.abs() + ((sigma_next - sigma) * v).abs())
        g, i = ours.grid, ours._grid_index(t)
        p, q = (float(g.field_mix[0][i]), float(g.field_mix[1][i])) if g.field_mix is not None else (0.0, 1.0)
        r, e = g.alpha[i - 1] / g.alpha[i], g.alpha[i - 1] * g.h[i]
        F = p * x + q * v
        bound += 2 * EPS32 * ((r * x).abs() + (e * F).abs() + abs(e) * ((p * x).abs() + (q * v).abs()))
        assert torch.all((a - b).abs() <= bound)
        x = a
    # a whole run of each scheduler on its own trajectory: rounding only, over N steps (the blended
    # coordinates' factors |r| + |e p| <= 2 + 1 / (1 - b) bound each step's rounding relative to |x|)
    ref.set_timesteps(N, **kw)
    ours.set_timesteps(N, **kw)
    xa = xb = torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    for t in ref.timesteps:
        xa = ref.step(velocity(xa, t), t, xa).prev_sample
        xb = ours.step(velocity(xb, t), t, xb).prev_sample
    g = ours.grid
    amp = max(abs(g.alpha[i - 1] / g.alpha[i]) + abs(g.alpha[i - 1] * g.h[i] * g.field_mix[0][i])
              for i in range(1, g.N + 1)) if g.field_mix is not None else 1.0
    assert (xa - xb).abs().max() <= 8 * N * amp * EPS32 * xa.abs().max()


@pytest.mark.parametrize("cfg,kw", CASES[:4], ids=IDS[:4])
def test_the_float64_schedule_formulas_give_diffusers_values(cfg, kw):
    grid = flow_grid_from_config(cfg, N, **kw)
    mine = flow_sigmas(N, shift=cfg.get("shift", 1.0), mu=kw.get("mu"), sigmas=kw.get("sigmas"),
                       time_shift_type=cfg.get("time_shift_type", "exponential"))
    # diffusers rounds to float32 (custom sigmas even before shifting): a few float32 ulps
    assert np.abs(mine - grid.sigma).max() <= 4 * EPS32
    assert grid.path == "flow" and np.isnan(grid.timesteps[0])
    assert np.allclose(grid.timesteps[1:], 1000 * grid.sigma[1:], rtol=2 * EPS32)


@pytest.mark.parametrize("mode", ["stable", "recurrence", "bits"])
@pytest.mark.parametrize("cfg,kw", CASES[:2], ids=IDS[:2])
def test_inverse_scheduler_then_load_state_is_exact(cfg, kw, mode):
    inv = FlowBELMInverseScheduler.from_config(cfg, mode=mode)
    fwd = FlowBELMScheduler.from_config(cfg, mode=mode)
    inv.set_timesteps(N, **kw)
    fwd.set_timesteps(N, **kw)
    x0 = torch.randn(4, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x0 = inv.fixed_point_data(x0)  # mode 'bits': data on the fixed-point grid (else x0 itself)
    z = x0
    for t in inv.timesteps:
        z = inv.step(velocity(z, t), t, z).prev_sample
    latent = inv.state
    assert latent.fingerprint == fwd.grid.fingerprint and latent.fingerprint.startswith("flow-")
    # the core's own inversion gives the same latent
    core = lm.invert(lambda x, i: velocity(x, torch.tensor(inv.grid.timesteps[i])), x0, inv.grid,
                     "obelm", mode=mode)
    assert torch.equal(core.x, latent.x)
    fwd.load_state(latent)
    y = latent.x
    for t in fwd.timesteps:
        y = fwd.step(velocity(y, t), t, y).prev_sample
    if mode == "bits":
        assert torch.equal(y, x0)
    else:
        assert (y - x0).abs().max() <= 1e-10 * x0.abs().max()


def test_euler_inversion_through_the_schedulers_is_inexact():
    inv = FlowBELMInverseScheduler.from_config(dict(shift=3.0), method="ddim")
    fwd = FlowBELMScheduler.from_config(dict(shift=3.0), method="ddim")
    inv.set_timesteps(N)
    fwd.set_timesteps(N)
    x0 = torch.randn(4, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    z = x0
    for t in inv.timesteps:
        z = inv.step(velocity(z, t), t, z).prev_sample
    for t in fwd.timesteps:
        z = fwd.step(velocity(z, t), t, z).prev_sample
    assert (z - x0).abs().max() > 1e-3 * x0.abs().max()


@pytest.mark.bad_input("9 unclear errors")
@pytest.mark.parametrize("cfg,kw,match", [
    (dict(shift=0.0), {}, "shift must be > 0"),
    (dict(shift=-2.0), {}, "shift must be > 0"),
    (dict(stochastic_sampling=True), {}, "stochastic_sampling=True is not supported"),
    (dict(use_dynamic_shifting=True), {}, "give mu"),
    (dict(shift=1.0), dict(sigmas=[1.0, 0.5, 0.7, 0.2]), "not a usable flow schedule.*increase strictly"),
])
def test_bad_flow_configs_are_refused(cfg, kw, match):
    with pytest.raises(lm.GridError, match=match):
        FlowBELMScheduler.from_config(cfg).set_timesteps(kw.get("sigmas") and len(kw["sigmas"]) or N, **kw)
