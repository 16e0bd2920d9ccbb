"""linmultistep.backends.kdiffusion: k-diffusion-style samplers and exact inverters."""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import linmultistep as lm  # noqa: E402
from linmultistep.backends import kdiffusion as K  # noqa: E402
from bounds import ROUNDINGS, unit_roundoff  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"x", "i", "sigma", "sigma_hat", "denoised"}


def _bcast(sigma, x):
    """sigma of shape (batch,) against x (as a k-diffusion denoiser does)."""
    assert sigma.shape == (x.shape[0],), f"k-diffusion passes sigma of shape (batch,), got {tuple(sigma.shape)}"
    assert bool((sigma > 0).all()), "the samplers must never evaluate the denoiser at sigma = 0"
    return sigma.reshape(-1, *([1] * (x.ndim - 1)))


def eps_net(u, sigma):
    """A fixed nonlinear noise predictor on VP inputs u (works on any shape)."""
    s = _bcast(sigma, u)
    return torch.tanh(0.8 * u + 0.4 * u.roll(1, -1) - 0.3 * u.flip(0) + 0.1 * s)


def denoiser(x, sigma):
    """k-diffusion's wrapping of an eps network: D(x; sigma) = x - sigma eps(x / sqrt(1 + sigma^2), sigma)."""
    s = _bcast(sigma, x)
    return x - s * eps_net(x / (s * s + 1).sqrt(), sigma)


def schedule(n, sigma_max, ratio, rho, zero_end):
    """Karras et al. sigmas; without the trailing 0 when zero_end is false."""
    sig = K.karras_sigmas(n, sigma_max * ratio, sigma_max, rho)
    return sig if zero_end else sig[:-1]


# --- (1) DDIM is Euler in sigma -----------------------------------------------------------------------
def test_ddim_equals_diffusers_euler_discrete_scheduler():
    diffusers = pytest.importorskip("diffusers")
    g = torch.Generator().manual_seed(0)
    W = torch.randn(16, 16, generator=g, dtype=torch.float64) / 4

    def net(u, sigma):
        return torch.tanh(u @ W.to(u.dtype) + 0.1 * _bcast(sigma, u))

    def den(x, sigma):
        s = _bcast(sigma, x)
        return x - s * net(x / (s * s + 1).sqrt(), sigma)

    sched = diffusers.EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                             use_karras_sigmas=False, timestep_spacing="linspace")
    sched.set_timesteps(25)
    sigmas = sched.sigmas
    noise = torch.randn(3, 16, generator=g)
    x = noise * sigmas[0]
    for t in sched.timesteps:  # diffusers' Euler loop: eps model on the scaled input
        u = sched.scale_model_input(x, t)
        x = sched.step(net(u, sched.sigmas[sched.step_index].expand(x.shape[0])), t, x).prev_sample
    scale = float(x.abs().max())
    ours32 = K.sample_ddim(den, noise * sigmas[0], sigmas)
    ours64 = K.sample_ddim(den, (noise * sigmas[0]).double(), sigmas)
    assert ours32.dtype == torch.float32 and ours64.dtype == torch.float64
    # diffusers' float32 loop against ours: each of the len(sigmas) - 1 steps rounds a few terms of the state's
    # size in float32, in another order (tests/bounds.py: ROUNDINGS per step), in either comparison
    bound = ROUNDINGS * (len(sigmas) - 1) * unit_roundoff(torch.float32) * scale
    assert float((ours32 - x).abs().max()) <= bound
    assert float((ours64 - x.double()).abs().max()) <= bound
    # the comparison discriminates: a second-order method lands elsewhere
    assert float((K.sample_obelm(den, (noise * sigmas[0]).double(), sigmas) - x.double()).abs().max()) > 1e-3 * scale


def test_ddim_step_is_euler_in_float64():
    """Each DDIM step is x_{i+1} = x_i + (sigma_{i+1} - sigma_i)(x_i - D_i)/sigma_i (callback values)."""
    sig = K.karras_sigmas(7, 0.05, 20.0)
    seen = []
    out = K.sample_ddim(denoiser, torch.randn(2, 3, dtype=torch.float64) * 20, sig, callback=seen.append)
    xs = [d["x"] for d in seen] + [out]
    for i, d in enumerate(seen):
        torch.testing.assert_close(d["denoised"], denoiser(d["x"], d["x"].new_full((2,), float(sig[i]))),
                                   rtol=0, atol=1e-13)
        euler = d["x"] + (sig[i + 1] - sig[i]) * (d["x"] - d["denoised"]) / sig[i]
        torch.testing.assert_close(xs[i + 1], euler, rtol=1e-13, atol=1e-12)


# --- (2) exact round trips --------------------------------------------------------------------------
shapes = st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple)
schedules = st.tuples(st.floats(0.5, 80.0), st.floats(1e-3, 0.5), st.floats(1.0, 10.0), st.booleans())


@pytest.mark.parametrize("name, params", [("obelm", {}), ("bdia", {}), ("bdia", {"gamma": 0.9}), ("edict", {}),
                                          ("obelm", {"mode": "recurrence"})])
@settings(max_examples=12, deadline=None)
@given(shape=shapes, sched=schedules, n=st.integers(2, 14), seed=st.integers(0, 2**16))
def test_exact_round_trip(name, params, shape, sched, n, seed):
    sig = schedule(n, *sched)
    if len(sig) < 3:
        return
    x0 = torch.from_numpy(np.random.default_rng(seed).standard_normal(shape))
    latent = getattr(K, "invert_" + name)(denoiser, x0, sig, **params)
    assert isinstance(latent, lm.State) and latent.hi == len(sig) - 1
    back = getattr(K, "sample_" + name)(denoiser, latent, sig, **params)
    assert back.shape == x0.shape and back.dtype == x0.dtype
    # the plain recurrence divides by a_{i,2} at every inverse step (rounding grows with the step ratios,
    # docs/precision.md): held to the noise-end scale; the default forms to 1e-12 absolute
    tol = 2e-13 * (1 + float(sig[0])) if params.get("mode") == "recurrence" else 1e-12
    assert float((back - x0).abs().max()) < tol


@settings(max_examples=12, deadline=None)
@given(shape=shapes, sched=schedules, n=st.integers(3, 4), seed=st.integers(0, 2**16))
def test_exact_round_trip_belm_k3(shape, sched, n, seed):
    """The 3-step BELM is exact in exact arithmetic but not zero-stable (parasitic root near -9.9 in
    both directions, docs/analysis.md): rounding grows ~100x per step of a round trip, so the check
    is on short grids, relative to the noise-end scale."""
    sig = schedule(n + (not sched[3]), *sched)  # n steps with or without the trailing 0
    x0 = torch.from_numpy(np.random.default_rng(seed).standard_normal(shape))
    latent = K.invert_belm(denoiser, x0, sig, k=3)
    assert sorted(latent.window) == [n - 2, n - 1, n]  # the last k points
    back = K.sample_belm(denoiser, latent, sig, k=3)
    assert float((back - x0).abs().max()) < 3e-12 * (1 + float(sig[0]))


def test_ddim_inversion_is_approximate_and_edict_state_is_coupled():
    sig = K.karras_sigmas(10, 0.02, 20.0)
    x0 = torch.randn(2, 4, dtype=torch.float64)
    assert float((K.sample_ddim(denoiser, K.invert_ddim(denoiser, x0, sig), sig) - x0).abs().max()) > 1e-6
    latent = K.invert_edict(denoiser, x0, sig)
    assert sorted(latent.window) == [10] and set(latent.window[10]._fields) == {"x", "y"}


def test_bits_mode_round_trip_is_bitwise_in_float32_at_sigma_80():
    """The run stays in VP coordinates (|x| ~ 1 at sigma = 80): mode 'bits' fits its default range."""
    sig = K.karras_sigmas(10, 0.002, 80.0, dtype=torch.float32)
    x0 = torch.randn(2, 1, 4, 4)
    latent = K.invert_obelm(denoiser, x0, sig, mode="bits")
    assert latent.mode.startswith("bits")
    assert torch.equal(K.sample_obelm(denoiser, latent, sig), x0)


def test_state_is_in_vp_coordinates_and_sigmas_need_not_end_at_zero():
    sig = torch.tensor([5.0, 2.0, 1.0, 0.5], dtype=torch.float64)  # data end at sigma = 0.5
    x0 = torch.randn(3, 2, dtype=torch.float64)
    latent = K.invert_obelm(denoiser, x0, sig, mode="recurrence")
    seen = []
    K.invert_obelm(denoiser, x0, sig, mode="recurrence", callback=seen.append)
    alpha_n = 1 / (1 + 5.0**2) ** 0.5
    torch.testing.assert_close(latent.x, seen[-1]["x"] * alpha_n, rtol=1e-15, atol=0)
    assert float((K.sample_obelm(denoiser, latent, sig) - x0).abs().max()) < 1e-13


# --- (3) accuracy against a closed form -----------------------------------------------------------------
def test_gaussian_data_converges_obelm_faster_than_ddim():
    """Data N(0, s^2 I): D(x; sigma) = s^2/(s^2 + sigma^2) x and the ODE solution is
    x(sigma) = x(sigma_max) sqrt((s^2 + sigma^2)/(s^2 + sigma_max^2))."""
    s, smax = 0.5, 80.0

    def gauss(x, sigma):
        return (s * s / (s * s + _bcast(sigma, x) ** 2)) * x

    xN = torch.from_numpy(np.random.default_rng(0).standard_normal((6, 3))) * smax
    exact = xN * s / (s * s + smax * smax) ** 0.5
    ns = (16, 32, 64, 128)
    err = {m: [float((getattr(K, "sample_" + m)(gauss, xN, K.karras_sigmas(n, 0.002, smax)) - exact).abs().max())
               for n in ns] for m in ("ddim", "obelm")}
    order = {m: np.log2(np.array(e[:-1]) / np.array(e[1:])) for m, e in err.items()}
    assert all(np.diff(err["ddim"]) < 0) and all(np.diff(err["obelm"]) < 0)
    assert 0.8 < order["ddim"][-1] < 1.2  # Euler: first order
    assert order["obelm"][-1] > 1.8  # O-BELM: second order
    assert all(o < d for o, d in zip(err["obelm"], err["ddim"]))
    assert err["ddim"][-1] / err["obelm"][-1] > 10


# --- (4) callback and progress bar ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ddim", "obelm", "bdia", "edict", "belm", "adams_bashforth"])
def test_callback_gets_kdiffusion_keys_once_per_step(name):
    sig = K.karras_sigmas(6, 0.1, 10.0, dtype=torch.float32)
    x = torch.randn(2, 3) * 10
    seen = []
    out = getattr(K, "sample_" + name)(denoiser, x, sig, callback=seen.append)
    assert [d["i"] for d in seen] == list(range(6))
    assert all(set(d) == KEYS for d in seen)
    assert torch.equal(seen[0]["x"], x)
    for d in seen:
        assert d["sigma"] == sig[d["i"]] and d["sigma_hat"] == d["sigma"]
        assert d["x"].shape == x.shape and d["denoised"].shape == x.shape
    assert not torch.equal(seen[-1]["x"], out)


def test_callback_from_a_state_starts_after_the_stored_window_and_inversion_reports_each_step():
    sig = K.karras_sigmas(6, 0.1, 10.0)
    x0 = torch.randn(2, 3, dtype=torch.float64)
    inv = []
    latent = K.invert_obelm(denoiser, x0, sig, callback=inv.append)
    assert [d["i"] for d in inv] == list(range(6)) and all(set(d) == KEYS for d in inv)
    assert [float(d["sigma"]) for d in inv] == [float(v) for v in sig.flip(0)[1:]]
    fwd = []
    K.sample_obelm(denoiser, latent, sig, callback=fwd.append)
    assert [d["i"] for d in fwd] == list(range(1, 6))  # step 0 (sigmas[0] -> sigmas[1]) is in the latent
    torch.testing.assert_close(fwd[0]["x"], inv[-2]["x"], rtol=1e-13, atol=1e-13)


def test_extra_args_reach_the_model():
    got = []

    def model(x, sigma, cond=None):
        got.append(cond)
        return denoiser(x, sigma)

    K.sample_obelm(model, torch.randn(1, 2) * 5, K.karras_sigmas(3, 0.1, 5.0, dtype=torch.float32),
                   extra_args={"cond": "c"})
    assert got == ["c"] * 3


def test_disable_hides_the_progress_bar(capsys):
    sig = K.karras_sigmas(4, 0.1, 5.0)
    K.sample_obelm(denoiser, torch.randn(1, 2, dtype=torch.float64), sig, disable=True)
    K.invert_obelm(denoiser, torch.randn(1, 2, dtype=torch.float64), sig, disable=True)
    assert capsys.readouterr().err == ""
    K.sample_obelm(denoiser, torch.randn(1, 2, dtype=torch.float64), sig, disable=False)
    assert "sampling (obelm" in capsys.readouterr().err


def test_model_is_never_called_at_sigma_zero():
    sig = K.karras_sigmas(5, 0.1, 5.0)
    seen = []

    def model(x, sigma):
        seen.append(float(sigma[0]))
        return denoiser(x, sigma)  # asserts sigma > 0 itself

    x0 = torch.randn(1, 2, dtype=torch.float64)
    for name in ("ddim", "obelm", "bdia", "edict", "belm"):
        getattr(K, "sample_" + name)(model, K.invert_lms(model, x0, sig, method=name), sig)
    assert min(seen) > 0 and set(seen) <= {float(v) for v in sig[:-1]}


# --- (5) clear errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("sigmas, match", [
    (torch.ones(2, 3), "1-D"),
    (torch.tensor([1.0]), "at least 2 entries"),
    (torch.tensor([0.0, 1.0, 2.0]), r"strictly descending .*ascending: pass sigmas.flip\(0\)"),
    (torch.tensor([2.0, 1.0, 1.0, 0.0]), r"strictly descending.*sigmas\[2\] = 1.0 >= sigmas\[1\] = 1.0"),
    (torch.tensor([2.0, 1.0, -0.5]), r"sigmas\[2\] = -0.5 is negative"),
    (torch.tensor([2.0, float("nan"), 0.0]), r"sigmas\[1\] = nan is not finite"),
    (torch.tensor([float("inf"), 1.0, 0.0]), r"sigmas\[0\] = inf is not finite"),
])
def test_bad_sigmas_are_refused(sigmas, match):
    x = torch.randn(1, 2)
    with pytest.raises(lm.GridError, match=match):
        K.sample_obelm(denoiser, x, sigmas)
    with pytest.raises(lm.GridError, match=match):
        K.invert_edict(denoiser, x, sigmas)


def test_mismatched_state_is_refused():
    sig = K.karras_sigmas(6, 0.1, 10.0)
    x0 = torch.randn(2, 3, dtype=torch.float64)
    latent = K.invert_obelm(denoiser, x0, sig)
    with pytest.raises(lm.LatentMismatchError, match="inverted with other sigmas"):
        K.sample_obelm(denoiser, latent, K.karras_sigmas(7, 0.1, 10.0))
    with pytest.raises(lm.LatentMismatchError, match="inverted with other sigmas"):
        K.sample_obelm(denoiser, latent, sig.float())  # float32 values are other sigmas
    with pytest.raises(lm.LatentMismatchError, match=r"inverted with obelm, not bdia\(gamma=1.0\)"):
        K.sample_bdia(denoiser, latent, sig)
    with pytest.raises(lm.LatentMismatchError, match="inverted with obelm, not ddim"):
        K.sample_ddim(denoiser, latent, sig)
    with pytest.raises(lm.LatentMismatchError, match=r"not 'recurrence'"):  # the core's own check reaches the user
        K.sample_obelm(denoiser, latent, sig, mode="recurrence")


def test_other_bad_inputs():
    sig = K.karras_sigmas(2, 0.1, 10.0)
    with pytest.raises(lm.GridError, match="needs at least 3 steps"):
        K.sample_belm(denoiser, torch.randn(1, 2), sig, k=3)
    with pytest.raises(TypeError, match="must be a torch tensor"):
        K.sample_obelm(denoiser, np.zeros((1, 2)), sig)
    with pytest.raises(ValueError, match="batch dimension"):
        K.invert_obelm(denoiser, torch.tensor(1.0), sig)


@pytest.mark.bad_input("3 arithmetic")
@pytest.mark.parametrize("fn", ["sample_obelm", "invert_obelm"])
def test_a_denoiser_output_of_another_shape_is_refused_not_broadcast(fn):
    """(1, 8) for a (3, 8) batch would broadcast the first row's denoised x over every row."""
    sig = K.karras_sigmas(4, 0.1, 10.0, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"denoiser returned \(1, 8\) for x of shape \(3, 8\) at sigma = "):
        getattr(K, fn)(lambda x, sigma: denoiser(x, sigma)[:1], torch.randn(3, 8, dtype=torch.float64), sig)
    with pytest.raises(ValueError, match=r"denoiser returned list for x of shape \(3, 8\)"):
        getattr(K, fn)(lambda x, sigma: denoiser(x, sigma).tolist(), torch.randn(3, 8, dtype=torch.float64), sig)


# --- the docs page runs -----------------------------------------------------------------------------
def test_docs_page_python_blocks_run():
    text = (ROOT / "docs" / "kdiffusion.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for block in blocks:
            exec(compile(block, "docs/kdiffusion.md", "exec"), namespace)
