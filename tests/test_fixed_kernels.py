"""The compiled kernel of mode 'bits' computes bit for bit what the composed backend operations compute.

The composition (quantize / int_lincomb / dequantize of each backend, tested on its own in
test_precision_bits.py) is the reference; the kernel must agree with it on every input inside the
bounds, so that a latent made with it reconstructs exactly without it and vice versa.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import linmultistep as L
from linmultistep import fixedkernels
from linmultistep.backends.torch import TorchBackend, deterministic
from linmultistep.errors import FixedPointRangeError
from linmultistep.numpy_backend import NumpyBackend

numba = pytest.importorskip("numba")  # the kernel is optional (linmultistep[fast])

AC = L.alphas_cumprod_for("scaled_linear")
BACKENDS = [(NumpyBackend(), np.asarray), (TorchBackend(), torch.from_numpy)]


def _bits(a) -> bytes:
    return np.ascontiguousarray(a.numpy() if isinstance(a, torch.Tensor) else a).tobytes()


@st.composite
def shears(draw):
    """Inputs of one step with every intermediate inside int64: f and a with |f a| < 2^61 (exact ties
    k + 1/2 and zeros of both signs included), V, X, b with |V' b| < 2^61, the sign and the view's scale."""
    n = draw(st.integers(1, 40))
    factor = draw(st.sampled_from([1.0, 0.37, 2.0**40, 0.71 * 2.0**20, 2.0**-20]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    lim = min(2.0**60 / factor, 3e38 if dtype == np.float32 else 1e300)
    tie = st.integers(-(2**20), 2**20).map(lambda k: (k + 0.5) / factor)
    vals = draw(st.lists(st.one_of(st.floats(-lim, lim, allow_nan=False), tie, st.sampled_from([0.0, -0.0])),
                         min_size=n, max_size=n))
    f = np.asarray(vals, dtype=np.float64).astype(dtype)
    f = np.where(np.abs(f.astype(np.float64) * factor) < 2.0**60, f, 0).astype(dtype)
    ints = st.lists(st.integers(-(2**60), 2**60), min_size=n, max_size=n)
    V = draw(st.one_of(st.none(), ints))
    X = np.asarray(draw(ints), dtype=np.int64)
    shift = draw(st.sampled_from([1.0, 0.5, 0.731, 2.0**-10, 1.3 * 2.0**-30]))
    like = draw(st.sampled_from([np.float32, np.float64]))
    return (f, factor, None if V is None else np.asarray(V, dtype=np.int64), X, shift, draw(st.sampled_from([1, -1])),
            draw(st.floats(1e-30, 1.0)), like)


@given(shears(), st.booleans(), st.booleans(), st.sampled_from([(), (1,), (3,)]))
def test_the_kernel_equals_the_composition(case, keep, digest, rows):
    f, factor, V, X, shift, sign, scale, like = case
    shape = rows + (f.size,)  # one batch row per leading index: the checksums are per row
    for be, arr in BACKENDS:
        def args():
            tile = (lambda a: np.tile(a, rows + (1,)) if rows else a)
            return (arr(tile(f)), factor, np.inf, None if V is None else arr(tile(V)), arr(tile(X)), shift, sign, scale,
                    arr(np.zeros(1, like)), keep, digest)

        got = be.shear(*args())
        assert got.over == 0  # counted by the kernel (the composition gives None)
        with fixedkernels.disabled():
            want = be.shear(*args())
        assert want.over is None
        for name in ("V", "X", "x", "dV", "digest"):
            g, w = getattr(got, name), getattr(want, name)
            assert (g is None) == (w is None) == {"dV": not keep, "digest": not digest}.get(name, False), name
            if g is not None:
                assert tuple(g.shape) == tuple(w.shape) and g.dtype == w.dtype and _bits(g) == _bits(w), name
        assert tuple(got.x.shape) == shape


def test_out_of_bound_and_nan_outputs_are_counted_and_never_converted():
    f = np.array([1.0, np.nan, -70.0, 64.0, np.inf, -np.inf], np.float32)
    X = np.zeros(6, np.int64)
    for be, arr in BACKENDS:
        V, X2, x, dV, over, _ = be.shear(arr(f), 2.0**40, 64.0, None, arr(X), 1.0, 1, 1.0, arr(np.zeros(1, np.float32)),
                                         True, False)
        assert over == 4  # nan, -70, +inf, -inf; 64 itself is inside
        assert V.tolist() == [2**40, 0, 0, 2**46, 0, 0] and dV.tolist() == V.tolist() == X2.tolist()


@pytest.mark.parametrize("kernels_when_inverting", [True, False])
def test_latents_cross_the_kernel_and_the_composed_paths_bit_exactly(kernels_when_inverting):
    """A latent inverted with the kernels reconstructs without them (another machine without numba),
    and the other way round; both paths produce the same latent bit for bit."""
    grid = L.Grid.from_alphas_cumprod(AC, 25)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 6, generator=g, dtype=torch.float64)

    def net(x, i):
        return torch.tanh(x @ w.to(x.dtype) * (1 + 0.01 * i))

    x0 = torch.randn(3, 6, generator=g)

    def invert():
        return L.invert(net, x0, grid, "obelm", mode="bits")

    with_k = invert()
    with fixedkernels.disabled():
        without = invert()
    for k, v in with_k.named_arrays().items():
        assert torch.equal(v, without.named_arrays()[k]), k
    assert with_k.metadata["bits_digests"] == without.metadata["bits_digests"]
    latent = with_k if kernels_when_inverting else without
    if kernels_when_inverting:
        with fixedkernels.disabled():
            out = L.sample(net, latent, grid, "obelm")
    else:
        out = L.sample(net, latent, grid, "obelm")
    assert torch.equal(out, x0)


@pytest.mark.bad_input("7 numerical range")
@pytest.mark.parametrize("kernels", [True, False])
def test_a_network_beyond_eps_bound_is_refused_alike_on_both_paths(kernels):
    grid = L.Grid.from_alphas_cumprod(AC, 20)
    with (fixedkernels.disabled() if not kernels else contextlib.nullcontext()), pytest.raises(
            FixedPointRangeError, match=r"\|eps\| = 1000 at grid index \d+ .*eps_bound = 64"):
        L.sample(lambda x, i: torch.full_like(x, 1e3) if i < 15 else x * 0, torch.ones(2, 4), grid, "obelm",
                 mode="bits")
    # a NaN is the network's fault, not the bound's: named as such, like in every other mode
    with (fixedkernels.disabled() if not kernels else contextlib.nullcontext()), pytest.raises(
            L.NonFiniteError, match=r"returned NaN or infinity at grid index 14 "):
        L.sample(lambda x, i: torch.full_like(x, float("nan")) if i < 15 else x * 0, torch.ones(2, 4), grid, "obelm",
                 mode="bits")


def test_other_arrays_take_the_composition_with_the_same_results():
    """float16/bfloat16 views, strided arrays: no kernel (``over`` None), the composition's numbers."""
    be = TorchBackend()
    X = torch.arange(-8, 8, dtype=torch.int64) * 2**30
    V = torch.arange(16, dtype=torch.int64) * 3**20
    f = torch.linspace(-3, 3, 16)
    for like in (torch.zeros(1, dtype=torch.float16), torch.zeros(1, dtype=torch.bfloat16)):
        got = be.shear(f, 2.0**20, 64.0, V, X, 0.3, 1, 2.0**-40, like, True, True)
        want = fixedkernels.compose_shear(be, f, 2.0**20, V, X, 0.3, 1, 2.0**-40, like, True, True)
        assert got.over is None and got.x.dtype == like.dtype
        assert all(torch.equal(a, b) for a, b in zip(got, want) if a is not None)
    strided = torch.randn(4, 8)[:, ::2]
    assert not strided.is_contiguous()
    X4 = torch.zeros(4, 4, dtype=torch.int64)
    got = be.shear(strided, 2.0**20, 64.0, None, X4, 1.0, 1, 1.0, torch.zeros(1), False, False)
    assert got.over is None and torch.equal(got.V, be.quantize(strided, 2.0**20))
    half = torch.randn(16, dtype=torch.float16)
    assert be.shear(half, 2.0**20, 64.0, None, X, 1.0, 1, 1.0, torch.zeros(1), False, False).over is None


def test_deterministic_mode_keeps_filling_memory_for_everyone_else():
    """The kernels' outputs skip torch's deterministic fill (every element is written at once); the
    setting is restored for the rest of the block."""
    with deterministic():
        out = TorchBackend().shear(torch.ones(8), 1.0, 64.0, None, torch.zeros(8, dtype=torch.int64), 1.0, 1, 1.0,
                                   torch.zeros(1), False, False)
        assert out.over == 0 and out.X.tolist() == [1] * 8
        assert torch.utils.deterministic.fill_uninitialized_memory is True
        assert torch.empty(4, dtype=torch.int64).tolist() == [2**63 - 1] * 4  # torch still fills


def test_the_environment_switch_turns_the_kernels_off():
    code = "from linmultistep import fixedkernels; print(fixedkernels.available())"
    env = dict(os.environ, LINMULTISTEP_KERNELS="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert fixedkernels.available()
    with fixedkernels.disabled():
        assert not fixedkernels.available()
    assert fixedkernels.available()


def test_a_kernel_that_cannot_compile_leaves_the_composition_with_a_warning(monkeypatch):
    from numba.core.errors import TypingError

    def broken(*args):
        raise TypingError("no implementation for this machine")

    monkeypatch.setattr(fixedkernels, "_KERNEL", broken)
    f, X = np.ones(4, np.float32), np.zeros(4, np.int64)
    with pytest.warns(fixedkernels.KernelWarning, match="TypingError: no implementation"):
        got = NumpyBackend().shear(f, 2.0, 64.0, None, X, 1.0, 1, 1.0, np.zeros(1, np.float32), False, False)
    assert got.over is None and got.V.tolist() == [2] * 4 and not fixedkernels.available()


@pytest.mark.gpu
def test_the_composition_on_cuda_equals_the_kernel_on_the_cpu():
    """CUDA tensors take the composition; given the same network output it must give the CPU kernel's
    integers and views, so that a step's arithmetic does not depend on the device."""
    g = torch.Generator().manual_seed(0)
    f = torch.randn(4, 3, 16, 16, generator=g) * 3
    V = torch.randint(-(2**50), 2**50, f.shape, generator=g)
    X = torch.randint(-(2**55), 2**55, f.shape, generator=g)
    args = (2.0**44 * 0.913, 64.0)
    cpu = TorchBackend().shear(f, *args, V, X, 0.37, -1, 2.0**-45, torch.zeros(1), True, True)
    gpu = TorchBackend().shear(f.cuda(), *args, V.cuda(), X.cuda(), 0.37, -1, 2.0**-45, torch.zeros(1, device="cuda"),
                               True, True)
    assert cpu.over == 0 and gpu.over is None
    for name in ("V", "X", "x", "dV", "digest"):
        assert torch.equal(getattr(cpu, name), getattr(gpu, name).cpu()), name
