"""k-diffusion-style functions for flow models (backends/kdiffusion_flow.py): the ODE against the exact
flow, the same steps as the plain k-diffusion functions and as Euler written out, exact round trips,
wrong companions refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import linmultistep as lm
from linmultistep.analysis.flow_problems import flow_problem, v_fn_for
from linmultistep.backends import kdiffusion as kd
from linmultistep.backends import kdiffusion_flow as kf

PROB = flow_problem("mixture")


def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(PROB.velocity(x.numpy(), float(t[0]))).to(x.dtype)


DENOISER = kf.FlowDenoiser(velocity)


def _noise(n=16, dtype=torch.float64, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 2))).to(dtype)


def test_obelm_equals_the_core_on_the_flow_grid_and_approaches_the_exact_flow():
    sigmas = kf.flow_sigmas_kd(40, shift=3.0)
    x = _noise()
    got = kf.sample_obelm(DENOISER, x, sigmas)
    grid = lm.flow_grid(sigmas.flip(0).numpy())
    core = lm.sample(v_fn_for(PROB, grid), x.numpy(), grid, "obelm")
    assert np.abs(got.numpy() - core).max() <= 1e-12 * np.abs(core).max()
    exact = PROB.flow(x.numpy(), 1.0, 0.0)
    euler = kf.sample_euler(DENOISER, x, sigmas).numpy()
    assert np.sqrt(np.mean((core - exact) ** 2)) < np.sqrt(np.mean((euler - exact) ** 2)) / 3


def test_euler_is_written_out_euler_and_the_plain_kdiffusion_functions_agree():
    sigmas = kf.flow_sigmas_kd(12, shift=2.0)
    x = _noise()
    y = x.clone()
    for i in range(12):  # k-diffusion's sample_euler for a denoiser: d = (x - D) / sigma
        s, s_next = sigmas[i], sigmas[i + 1]
        y = y + (s_next - s) * (y - DENOISER(y, s.expand(y.shape[0]))) / s
    assert (kf.sample_euler(DENOISER, x, sigmas) - y).abs().max() <= 1e-13
    for method, name in (("obelm", "sample_obelm"), ("bdia", "sample_bdia")):
        # the VE grid integrates the same ODE in the same variables as blend 0, (x, sigma)
        a = kf.sample_lms(DENOISER, x, sigmas, method=method, blend=0.0)
        b = getattr(kd, name)(DENOISER, x, sigmas)
        assert (a - b).abs().max() <= 1e-12 * a.abs().max()
        # the default coordinates take other 2-step steps (their coefficients are not coordinate-invariant)
        assert (getattr(kf, name)(DENOISER, x, sigmas) - b).abs().max() > 1e-6 * a.abs().max()


@pytest.mark.parametrize("name,mode", [("obelm", "stable"), ("obelm", "recurrence"), ("bdia", None), ("edict", None)])
def test_round_trips_are_exact(name, mode):
    sigmas = kf.flow_sigmas_kd(20, shift=3.0)
    x0 = torch.from_numpy(PROB.sample(np.random.default_rng(1), 16))
    state = getattr(kf, f"invert_{name}")(DENOISER, x0, sigmas, mode=mode)
    assert state.fingerprint.startswith("flow-")
    back = getattr(kf, f"sample_{name}")(DENOISER, state, sigmas)
    assert (back - x0).abs().max() <= 1e-10 * x0.abs().max()


def test_bits_round_trip_in_float32_is_exact_and_euler_is_not():
    sigmas = kf.flow_sigmas_kd(20, shift=3.0)
    x0 = torch.from_numpy(PROB.sample(np.random.default_rng(2), 16)).float()
    back = kf.sample_obelm(DENOISER, kf.invert_obelm(DENOISER, x0, sigmas, mode="bits"), sigmas)
    assert torch.equal(back, x0)
    x64 = x0.double()
    euler = kf.sample_euler(DENOISER, kf.invert_ddim(DENOISER, x64, sigmas), sigmas)
    assert (euler - x64).abs().max() > 1e-3 * x64.abs().max()


def test_callbacks_follow_kdiffusion():
    sigmas = kf.flow_sigmas_kd(6)
    seen = []
    kf.sample_obelm(DENOISER, _noise(), sigmas, callback=seen.append)
    assert [d["i"] for d in seen] == list(range(6)) and all(d["sigma"] == sigmas[d["i"]] for d in seen)
    assert all(set(d) == {"x", "i", "sigma", "sigma_hat", "denoised"} for d in seen)


@pytest.mark.bad_input("4 companions")
def test_a_gaussian_state_is_refused_by_name():
    sigmas = kf.flow_sigmas_kd(8)
    state = kd.invert_obelm(DENOISER, _noise(), sigmas)  # the plain functions: a 'gaussian' (VE) grid
    with pytest.raises(lm.LatentMismatchError, match="'gaussian' grid .* cannot be continued on a 'flow' grid"):
        kf.sample_obelm(DENOISER, state, sigmas)


@pytest.mark.bad_input("9 unclear errors")
def test_sigmas_above_one_are_refused():
    with pytest.raises(lm.GridError, match=r"sigmas\[0\] = 14.6 > 1: a flow's sigmas lie in \[0, 1\]"):
        kf.sample_obelm(DENOISER, _noise(), torch.tensor([14.6, 1.0, 0.0], dtype=torch.float64))
