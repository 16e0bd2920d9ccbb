"""Gradients through samplers: reversible == checkpoint == unrolled autograd, gradcheck, refusals."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import linmultistep as lms  # noqa: E402
from linmultistep.modes import in_mode  # noqa: E402
from linmultistep import MethodError, NondeterministicNetworkError  # noqa: E402
from linmultistep.backends import gradients as G  # noqa: E402

EXACT = [("obelm", "recurrence"), ("obelm", "stable"), ("obelm", "bits"), ("bdia", "recurrence"),
         ("bdia", "stable"), ("bdia", "bits"), ("edict", "recurrence")]


from strategies import sd_grid  # noqa: E402


class MLP:
    """A random time-conditioned MLP with a guidance-like scalar w (all parameters differentiable)."""

    def __init__(self, grid: lms.Grid, dim: int = 6, dtype=torch.float64, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.grid = grid
        self.W1 = (torch.randn(dim, 16, generator=g, dtype=dtype) / 2).requires_grad_()
        self.W2 = (torch.randn(16, dim, generator=g, dtype=dtype) / 4).requires_grad_()
        self.w = torch.tensor(2.0, dtype=dtype, requires_grad=True)

    @property
    def params(self):
        return [self.W1, self.W2, self.w]

    def __call__(self, x, i):
        t = float(self.grid.timestep(i)) / 1000
        return torch.tanh((x @ self.W1) * (1 + t)) @ self.W2 + self.w * 0.1 * torch.sin(x)


def grads(eps, start, grid, method, gradient, mode, wrt):
    out = G.sample(eps, start, grid, method, gradient=gradient, mode=mode, params=eps.params)
    loss = (out ** 2).sum() + out.sum()
    return out.detach(), torch.autograd.grad(loss, wrt)


def rel(a, b):
    return max(float((p - q).norm() / q.norm()) for p, q in zip(a, b))


@pytest.mark.parametrize("method,mode", EXACT)
def test_three_strategies_agree_float64(method, mode):
    grid = sd_grid(12)
    eps = MLP(grid)
    x = torch.randn(3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    wrt = [x, *eps.params]
    out_a, ref = grads(eps, x, grid, method, "autograd", mode, wrt)
    for gradient in ("checkpoint", "reversible"):
        out, g = grads(eps, x, grid, method, gradient, mode, wrt)
        assert rel(g, ref) <= 1e-10, gradient
        assert float((out - out_a).abs().max()) <= (1e-11 if mode.startswith("bits") else 1e-13)


@pytest.mark.parametrize("method,mode", [("obelm", "stable"), ("obelm", "bits"), ("bdia", "bits"), ("edict", "recurrence")])
def test_three_strategies_agree_float32(method, mode):
    grid = sd_grid(20)
    eps = MLP(grid, dtype=torch.float32)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(2)).requires_grad_()
    wrt = [x, *eps.params]
    _, ref = grads(eps, x, grid, method, "autograd", mode, wrt)
    for gradient in ("checkpoint", "reversible"):
        assert rel(grads(eps, x, grid, method, gradient, mode, wrt)[1], ref) <= 1e-4


@pytest.mark.parametrize("method", ["obelm", "edict"])
def test_gradient_through_a_latent_window(method):
    """Gradients w.r.t. an inverted latent: the pair (x_N, x_{N-1}), or EDICT's (x_N, y_N)."""
    grid = sd_grid(10)
    eps = MLP(grid)
    x0 = torch.randn(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        latent = lms.invert(eps, x0, grid, method, mode="recurrence")
    if method == "edict":
        xs = [t.clone().requires_grad_() for t in latent.window[grid.N]]
        window = {grid.N: tuple(xs)}
    else:
        xs = [latent.window[i].x.clone().requires_grad_() for i in (grid.N, grid.N - 1)]
        window = {grid.N: xs[0], grid.N - 1: xs[1]}
    res = {}
    for gradient in G.GRADIENTS:
        out = G.sample(eps, window, grid, method, gradient=gradient, mode="recurrence", params=eps.params)
        assert float((out.detach() - x0).abs().max()) < 1e-12  # the window reconstructs its data
        res[gradient] = torch.autograd.grad((out ** 3).sum(), xs + eps.params)
    assert rel(res["reversible"], res["autograd"]) <= 1e-10
    assert rel(res["checkpoint"], res["autograd"]) <= 1e-10


def test_gradcheck_reversible():
    grid = sd_grid(4)
    eps = MLP(grid, dim=3)
    x = torch.randn(2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4), requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, W1, w: G.sample(eps, x, grid, "obelm", gradient="reversible",
                                                               mode="stable", params=[W1, w]),
                                     (x, eps.W1, eps.w), eps=1e-6, atol=1e-7)


def test_reversible_memory_keeps_no_trajectory():
    """The reversible run keeps the end window only; checkpoint keeps every state."""
    grid = sd_grid(30)
    eps = MLP(grid)
    x = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    kept = {}
    for gradient in ("checkpoint", "reversible"):
        out = G.sample(eps, x, grid, "obelm", gradient=gradient, mode="stable", params=eps.params)
        kept[gradient] = out.grad_fn.run  # the autograd node holds the run until backward
        out.sum().backward()
    assert kept["reversible"].kept == {} and len(kept["reversible"].end_state.window) == 2
    assert len(kept["checkpoint"].kept) == grid.N + 1


def test_non_invertible_and_bad_requests_are_refused():
    grid = sd_grid(5)
    eps = MLP(grid)
    x = torch.randn(2, 6, dtype=torch.float64)
    with pytest.raises(MethodError, match="cannot be inverted exactly.*checkpoint"):
        G.sample(eps, x, grid, "ddim", gradient="reversible")
    with pytest.raises(ValueError, match="gradient must be one of"):
        G.sample(eps, x, grid, "obelm", gradient="adjoint")
    with pytest.raises(MethodError, match="recurrence form"):
        G.sample(eps, x, grid, in_mode(lms.obelm(), "stable"))
    with pytest.raises(ValueError, match="ending at the noise end N = 5, got \\[2, 3\\]"):
        G.sample(eps, {3: x, 2: x}, grid, "obelm")
    with pytest.raises(TypeError, match="floating-point"):
        G.sample(eps, x.long(), grid, "obelm")
    with pytest.raises(TypeError, match="params\\[0\\]"):
        G.sample(eps, x, grid, "obelm", params=[1.0])


@pytest.mark.parametrize("mode", ["bits", "stable"])
def test_non_deterministic_network_is_reported(mode):
    """A network whose outputs drift between the forward run and the rebuild is not silently differentiated."""
    grid = sd_grid(10)
    eps = MLP(grid)
    calls = {"n": 0}
    noise = torch.Generator().manual_seed(9)

    def drifting(x, i):
        calls["n"] += 1
        out = eps(x, i)
        if calls["n"] > grid.N:  # every call after the forward run
            out = out + (1e-3 if mode == "stable" else 1e-9) * torch.randn(out.shape, generator=noise, dtype=out.dtype)
        return out

    drifting.params = eps.params
    x = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    out = G.sample(drifting, x, grid, "obelm", gradient="reversible", mode=mode, params=eps.params)
    with pytest.raises(NondeterministicNetworkError):
        out.sum().backward()


# --- diffusers networks ------------------------------------------------------------------------
def test_tiny_stable_diffusion_with_guidance_prompt_embedding_gradients():
    pytest.importorskip("diffusers")
    from linmultistep.backends.diffusers.adapters import Conditioning, UNetEps, encode_prompts
    from linmultistep.backends.diffusers.grid import grid_from_config
    from linmultistep.backends.diffusers.testing import tiny_sd_pipeline

    torch.set_num_threads(1)
    pipe = tiny_sd_pipeline(dtype=torch.float64)
    grid = grid_from_config(pipe.scheduler, 6)
    c = encode_prompts(pipe, "a cat", 1, 3.0)
    cond = c.cond.clone().requires_grad_()
    w = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    net = UNetEps(pipe.unet, grid, "epsilon", Conditioning(cond, c.uncond, w))

    def eps(x, i):
        return net.eps_with_grad(x, i)

    x = torch.randn(1, 4, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    weight = pipe.unet.conv_out.weight
    res = {}
    for gradient in G.GRADIENTS:
        out = G.sample(eps, x, grid, "obelm", gradient=gradient, mode="stable", params=[cond, w, weight])
        res[gradient] = torch.autograd.grad((out ** 2).mean(), [x, cond, w, weight])
    assert rel(res["reversible"], res["autograd"]) <= 1e-10
    assert rel(res["checkpoint"], res["autograd"]) <= 1e-10


def test_digits_model_class_guidance_gradients_bits_mode():
    pytest.importorskip("diffusers")
    from linmultistep.backends.diffusers.adapters import UNetEps, encode_classes
    from linmultistep.backends.diffusers.grid import grid_from_config
    from linmultistep.backends.digits import load_pipeline

    torch.set_num_threads(1)
    pipe = load_pipeline()
    grid = grid_from_config(pipe.scheduler, 10)
    c = encode_classes(pipe.unet, [3, 8], 2, 2.0)
    w = torch.tensor(2.0, requires_grad=True)
    net = UNetEps(pipe.unet, grid, "epsilon", type(c)(c.cond, c.uncond, w))
    emb = pipe.unet.class_embedding.weight

    def eps(x, i):
        return net.eps_with_grad(x, i)

    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)).requires_grad_()
    res = {}
    for gradient in G.GRADIENTS:
        out = G.sample(eps, x, grid, "obelm", gradient=gradient, mode="bits", params=[w, emb])
        res[gradient] = torch.autograd.grad(out.sum(), [x, w, emb])
    assert rel(res["reversible"], res["autograd"]) <= 1e-4
    assert rel(res["checkpoint"], res["autograd"]) <= 1e-4


@pytest.mark.bad_input("7 numerical range")
@pytest.mark.parametrize("gradient", G.GRADIENTS)
def test_a_network_returning_nan_is_named_by_every_strategy(gradient):
    grid = sd_grid(6)
    net = MLP(grid)
    x = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    with pytest.raises(lms.NonFiniteError, match=r"vector field returned NaN or infinity at grid index \d+"):
        G.sample(lambda y, i: net(y, i) * float("nan"), x, grid, "obelm", gradient=gradient, params=net.params)


@pytest.mark.parametrize("gradient", G.GRADIENTS)
def test_a_frozen_tensor_in_params_gets_no_gradient_as_in_autograd(gradient):
    """A tensor with requires_grad=False among params is valid input: the others get their gradients, the
    same as autograd's (the reference), and the frozen one none."""
    grid = sd_grid(6)
    net = MLP(grid)
    net.W2.requires_grad_(False)
    x = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    out = G.sample(net, x, grid, "obelm", gradient=gradient, params=net.params)
    got = torch.autograd.grad((out ** 2).sum(), [x, net.W1, net.w])
    ref_out = G.sample(net, x, grid, "obelm", gradient="autograd", params=net.params)
    want = torch.autograd.grad((ref_out ** 2).sum(), [x, net.W1, net.w])
    assert rel(got, want) < 1e-9
    assert net.W2.grad is None


@pytest.mark.parametrize("mode", ["recurrence", "stable", "bits"])
def test_reversible_reuses_the_rebuilds_network_evaluation(mode):
    """The reversible strategy evaluates the network with a graph as often as checkpointing does (once per
    step: the rebuild's evaluation is the step's; mode 'bits' at most once more), and its gradient is
    autograd's to 1e-10 in float64, with a frozen tensor among params."""
    grid = sd_grid(10)
    net = MLP(grid)
    net.W2.requires_grad_(False)
    counts = {}
    got = {}
    for gradient in ("checkpoint", "reversible", "autograd"):
        calls = {"graph": 0, "plain": 0}

        def eps(x, i, calls=calls):
            calls["graph" if torch.is_grad_enabled() and x.requires_grad else "plain"] += 1
            return net(x, i)

        eps.params = net.params
        x = torch.randn(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
        got[gradient] = grads(eps, x, grid, "obelm", gradient, mode, [x, net.W1, net.w])[1]
        counts[gradient] = calls
    assert counts["checkpoint"]["graph"] == grid.N
    assert grid.N <= counts["reversible"]["graph"] <= grid.N + (1 if mode == "bits" else 0)
    assert counts["reversible"]["plain"] == counts["checkpoint"]["plain"] == grid.N  # the forward run
    assert rel(got["reversible"], got["autograd"]) < 1e-10
    assert net.W2.grad is None
