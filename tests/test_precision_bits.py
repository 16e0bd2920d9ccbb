"""Mode 'bits': round trips exact to the last bit, range bounds, determinism checks."""

from dataclasses import replace

import numpy as np

from linmultistep.modes import in_mode
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import linmultistep as L
from linmultistep.backends.numpy import NumpyBackend
from linmultistep.backends.torch import TorchBackend
from linmultistep.errors import FixedPointRangeError, NondeterministicNetworkError
from linmultistep.fixedpoint import (
    DEFAULT_DATA_BOUND,
    DEFAULT_EPS_BOUND,
    FixedEntry,
    FixedPointBelm,
    fixed_point_scales,
)
from linmultistep.forms import two_step_tables
from linmultistep.integrator import StepContext

AC = L.alphas_cumprod_for("scaled_linear")


@st.composite
def grids(draw, n_max=40):
    """Either a diffusers-style grid on the SD schedule or a random variance-preserving one."""
    n = draw(st.integers(2, n_max))
    if draw(st.booleans()):
        spacing = draw(st.sampled_from(["linspace", "leading", "trailing"]))
        # 'linspace' without the clean point drops one step (timestep 0 becomes index 0)
        try:
            return L.Grid.from_alphas_cumprod(AC, n + 1, spacing, final_alpha_one=draw(st.booleans()))
        except L.GridError:  # 'trailing' with some n schedules timestep -1 (as diffusers would)
            assume(False)
    steps = draw(st.lists(st.floats(0.02, 1.0), min_size=n, max_size=n))
    return L.Grid.from_sigmabar(np.concatenate([[0.0], 0.01 + np.cumsum(steps)]))


class TorchMLP:
    """A random time-conditioned MLP, evaluated in the dtype of its input."""

    def __init__(self, seed: int, dim: int, hidden: int = 16):
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.randn(dim, hidden, generator=g, dtype=torch.float64) / dim**0.5
        self.w2 = torch.randn(hidden, dim, generator=g, dtype=torch.float64) / hidden**0.5
        self.b = torch.randn(hidden, generator=g, dtype=torch.float64)

    def __call__(self, x, i):
        d = x.dtype
        return torch.tanh(x @ self.w1.to(d) + (np.sin(0.37 * i) * self.b).to(d)) @ self.w2.to(d)


class NumpyMLP(TorchMLP):
    def __call__(self, x, i):
        w1, w2, b = (t.numpy().astype(x.dtype) for t in (self.w1, self.w2, self.b))
        return np.tanh(x @ w1 + np.asarray(np.sin(0.37 * i), x.dtype) * b) @ w2


def fixed_image(x0, grid, method):
    """What the fixed-point grid makes of x0 (exactly x0 where x0 has no bits below 2^-Sx)."""
    be = L.get_backend(x0)
    t = two_step_tables(method, StepContext(grid.h, grid.alpha, None, be))
    Sx = fixed_point_scales(t, DEFAULT_DATA_BOUND, DEFAULT_EPS_BOUND).Sx
    return be.dequantize(be.quantize(x0, 2.0**Sx / t.s[0]), t.s[0] * 2.0**-Sx, x0)


def assert_exact_round_trip(out, x0, grid, method):
    """Bit-identical to the fixed-point image of x0, which is x0 itself except for float32
    elements below about 2^(24-Sx) (rounded to the grid, by at most 2^-(Sx+1))."""
    be = L.get_backend(x0)
    expect = fixed_image(x0, grid, method)
    assert out.dtype == x0.dtype and be.equal(out, expect)
    big = abs(x0) > 2.0**-12
    assert be.equal(out[big], x0[big])
    assert float(abs(out[~big] - x0[~big]).max()) <= 2.0**-30 if (~big).any() else True


METHODS = [L.obelm(), L.bdia(1.0), L.bdia(0.9)]


@given(st.data())
def test_bit_exact_round_trip_numpy(data):
    grid = data.draw(grids())
    method = data.draw(st.sampled_from(METHODS))
    dtype = data.draw(st.sampled_from([np.float16, np.float32]))
    shape = data.draw(st.sampled_from([(4,), (2, 4), (3, 1, 4)]))
    seed = data.draw(st.integers(0, 2**16))
    net = NumpyMLP(seed, shape[-1])
    x0 = (np.random.default_rng(seed).standard_normal(shape) * data.draw(st.sampled_from([0.1, 1.0, 3.0]))).astype(dtype)
    keep = x0.copy()
    latent = L.invert(net, x0, grid, method, mode="bits")
    assert np.array_equal(x0, keep)
    assert latent.mode == "bits" and latent.x.dtype == dtype
    out = L.sample(net, latent, grid, method)  # mode follows the latent
    assert_exact_round_trip(out, x0, grid, method)
    if dtype == np.float16:  # every float16 value is on the fixed-point grid
        assert out.tobytes() == x0.tobytes()


@given(st.data())
def test_bit_exact_round_trip_torch(data):
    grid = data.draw(grids())
    method = data.draw(st.sampled_from(METHODS))
    dtype = data.draw(st.sampled_from([torch.float16, torch.bfloat16, torch.float32]))
    shape = data.draw(st.sampled_from([(4,), (2, 4), (2, 3, 4)]))
    seed = data.draw(st.integers(0, 2**16))
    net = TorchMLP(seed, shape[-1])
    x0 = (torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2).to(dtype)
    seen_inv = {}
    latent = L.invert(net, x0, grid, method, mode="bits", callback=lambda s: seen_inv.__setitem__(s.index, s.entry))
    seen_smp = {}
    out = L.sample(net, latent, grid, method, mode="bits", callback=lambda s: seen_smp.__setitem__(s.index, s.entry))
    # every point of the trajectory is met again bit for bit
    for i in set(seen_inv) & set(seen_smp):
        assert torch.equal(seen_inv[i].X, seen_smp[i].X) and torch.equal(seen_inv[i].x, seen_smp[i].x)
    assert_exact_round_trip(out, x0, grid, method)
    if dtype != torch.float32:  # float16/bfloat16 values of this size are always on the fixed-point grid
        assert torch.equal(out, x0)


@given(st.data())
def test_quantised_trajectory_stays_within_1e6_of_the_floating_one(data):
    grid = data.draw(grids(n_max=60))
    method = data.draw(st.sampled_from(METHODS[:2]))
    seed = data.draw(st.integers(0, 2**16))
    net = NumpyMLP(seed, 5)
    xN = np.random.default_rng(seed).standard_normal((3, 5))
    ref, got = {}, {}
    L.sample(net, xN, grid, method, mode="recurrence", callback=lambda s: ref.__setitem__(s.index, s.entry))
    L.sample(net, xN, grid, method, mode="bits", callback=lambda s: got.__setitem__(s.index, s.entry.x))
    for i in ref:
        assert np.abs(got[i] - ref[i]).max() <= 1e-6 * np.abs(ref[i]).max(), i


def test_partial_inversions_compose_bit_exactly():
    grid = L.Grid.from_alphas_cumprod(AC, 30)
    net = NumpyMLP(3, 4)
    x0 = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    whole = L.invert(net, x0, grid, "obelm", mode="bits")
    part = L.invert(net, x0, grid, "obelm", mode="bits", stop=11)
    rest = L.invert(net, part, grid, "obelm")
    assert whole.named_arrays().keys() == rest.named_arrays().keys()
    for k, v in whole.named_arrays().items():
        assert np.array_equal(v, rest.named_arrays()[k]), k
    mid = L.sample(net, whole, grid, "obelm", stop=7, return_state=True)
    assert L.sample(net, mid, grid, "obelm").tobytes() == x0.tobytes()
    assert all(v is not None for v in whole.named_arrays().values())


@pytest.mark.bad_input("7 numerical range")
# --- range ---------------------------------------------------------------------------------
def test_data_and_network_beyond_their_bounds_are_refused():
    grid = L.Grid.from_alphas_cumprod(AC, 20)
    net = NumpyMLP(0, 4)
    with pytest.raises(FixedPointRangeError, match="data_bound"):
        L.invert(net, np.full((4,), 100.0, np.float32), grid, "obelm", mode="bits")
    with pytest.raises(FixedPointRangeError, match=r"\|eps\| = 1000 .* eps_bound"):
        L.invert(lambda x, i: net(x, i) * 0 + 1e3, np.ones(4, np.float32), grid, "obelm", mode="bits")
    # larger bounds work, and are part of the mode the latent records
    m = in_mode(L.obelm(), "bits", data_bound=256.0)
    lat = L.invert(net, np.full((4,), 100.0, np.float32), grid, m)
    assert lat.mode == "bits(data_bound=256.0, eps_bound=64.0)"
    with pytest.raises(L.LatentMismatchError, match="bits"):
        L.sample(net, lat, grid, "obelm", mode="bits")
    assert L.sample(net, lat, grid, "obelm").tobytes() == np.full((4,), 100.0, np.float32).tobytes()
    assert in_mode(L.obelm(), lat.mode).mode == lat.mode


def test_bdia_growth_supported_as_far_as_int64_allows_then_refused():
    """BDIA(gamma) needs about N log2(1/gamma) extra bits; find the largest N that fits and
    check that it round-trips exactly while N + 10 is refused with a message saying why."""
    gamma = 0.5
    method = L.bdia(gamma)
    fits = []
    for n in range(2, 60):
        grid = L.Grid.from_alphas_cumprod(AC, n)
        try:
            L.invert(lambda x, i: x * 0, np.zeros(2, np.float32), grid, method, mode="bits", stop=1)
            fits.append(n)
        except FixedPointRangeError as exc:
            assert "N log2(1/a_2)" in str(exc)
    assert fits == list(range(2, fits[-1] + 1)) and 5 <= fits[-1] < 50
    n = fits[-1]
    grid = L.Grid.from_alphas_cumprod(AC, n)
    net = NumpyMLP(1, 4)
    x0 = np.random.default_rng(1).standard_normal(4).astype(np.float16)
    assert L.sample(net, L.invert(net, x0, grid, method, mode="bits"), grid, method).tobytes() == x0.tobytes()
    with pytest.raises(FixedPointRangeError, match="int64"):
        L.invert(net, x0, L.Grid.from_alphas_cumprod(AC, n + 10), method, mode="bits")
    # the same grid in the recurrence loses digits: the growth is the method's, not the form's
    assert in_mode(L.bdia(1.0), "bits") is not None


@pytest.mark.bad_input("5 exactness")
# --- determinism -------------------------------------------------------------------------------
def test_a_nondeterministic_network_is_reported_by_inversion():
    grid = L.Grid.from_alphas_cumprod(AC, 10)
    rng = np.random.default_rng(0)
    net = NumpyMLP(0, 4)
    noisy = lambda x, i: net(x, i) + rng.standard_normal(x.shape).astype(x.dtype) * 1e-6  # noqa: E731
    with pytest.raises(NondeterministicNetworkError, match="different outputs for the same input"):
        L.invert(noisy, np.ones(4, np.float32), grid, "obelm", mode="bits")


@pytest.mark.bad_input("5 exactness")
def test_a_network_that_changed_since_inversion_is_reported_by_sampling():
    """Simulates another batch composition or device: outputs shift by one ulp after inversion."""
    grid = L.Grid.from_alphas_cumprod(AC, 10)
    net = TorchMLP(0, 4)
    state = {"drift": False}

    def eps(x, i):
        out = net(x, i)
        return torch.nextafter(out, torch.full_like(out, 10.0)) if state["drift"] else out

    x0 = torch.randn(2, 4, dtype=torch.float32)
    latent = L.invert(eps, x0, grid, "obelm", mode="bits")
    assert torch.equal(L.sample(eps, latent, grid, "obelm"), x0)
    state["drift"] = True
    with pytest.raises(NondeterministicNetworkError, match=f"grid index {grid.N - 1}.*differs from the one the inversion saw"):
        L.sample(eps, latent, grid, "obelm")


@pytest.mark.bad_input("5 exactness")
def test_torch_runs_deterministically_and_restores_the_setting():
    assert not torch.are_deterministic_algorithms_enabled()
    seen = []
    net = TorchMLP(0, 4)

    def eps(x, i):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return net(x, i)

    grid = L.Grid.from_alphas_cumprod(AC, 5)
    L.invert(eps, torch.ones(4), grid, "obelm", mode="bits")
    assert seen and all(seen) and not torch.are_deterministic_algorithms_enabled()
    seen.clear()
    L.invert(eps, torch.ones(4), grid, "obelm", mode="stable")
    assert seen and not any(seen)


@pytest.mark.bad_input("4 companions")
# --- modes, refusals and the backend operations -------------------------------------------------
def test_latent_of_another_mode_is_refused():
    grid = L.Grid.from_alphas_cumprod(AC, 8)
    net = NumpyMLP(0, 4)
    x0 = np.ones(4, np.float32)
    latents = {mode: L.invert(net, x0, grid, "obelm", mode=mode) for mode in ("recurrence", "stable", "bits")}
    for have, lat in latents.items():
        assert lat.mode == have
        for want in latents:
            if want != have:
                with pytest.raises(L.LatentMismatchError, match=f"mode {have!r}, not {want!r}"):
                    L.sample(net, lat, grid, "obelm", mode=want)
    assert isinstance(latents["bits"].window[grid.N - 1], FixedEntry)
    with pytest.raises(L.LatentMismatchError):
        L.sample(net, replace(latents["bits"], mode="stable"), grid, "obelm", mode="bits")


def test_methods_without_a_bits_mode_say_why():
    with pytest.raises(L.MethodError, match="EDICT.*1/p"):
        in_mode(L.edict(0.93), "bits")
    with pytest.raises(L.MethodError, match="2-step BELMs"):
        in_mode(L.ddim(), "bits")
    with pytest.raises(L.MethodError, match="unknown option"):
        in_mode(L.obelm(), "bits(scale=3)")
    with pytest.raises(L.MethodError, match="positive"):
        in_mode(L.obelm(), "bits", eps_bound=-1.0)
    assert isinstance(in_mode(L.obelm(), "bits"), FixedPointBelm)


@pytest.mark.parametrize("be,arr", [(NumpyBackend(), np.asarray), (TorchBackend(), torch.as_tensor)])
def test_backend_fixed_point_operations_are_exact(be, arr):
    big = arr(np.array([2**60 + 1, -(2**60) - 3, 7], dtype=np.int64))
    assert be.int_lincomb([1, -1, 1], [big, big, big]).tolist() == [2**60 + 1, -(2**60) - 3, 7]
    assert be.int_lincomb([-1, 1], [big, arr(np.array([1, 1, 1], dtype=np.int64))]).tolist() == [-(2**60), 2**60 + 4, -6]
    q = be.quantize(arr(np.array([0.5, 1.5, -2.5, 1e-3], dtype=np.float32)), 1.0)
    assert q.tolist() == [0, 2, -2, 0]  # ties to even
    x = arr(np.array([1.25, -3.0], dtype=np.float16))
    back = be.dequantize(be.quantize(x, 2.0**40), 2.0**-40, x)
    assert back.dtype == x.dtype and be.equal(back, x)
    assert be.max_abs(arr(np.array([-3.0, 2.0]))) == 3.0


def test_latents_of_every_mode_survive_named_arrays():
    """State.from_named_arrays inverts named_arrays (what a file format stores), in every mode."""
    grid = L.Grid.from_alphas_cumprod(AC, 12)
    net = NumpyMLP(2, 4)
    x0 = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)
    for method, mode in [(L.obelm(), "recurrence"), (L.obelm(), "stable"), (L.obelm(), "bits"), (L.edict(), "recurrence")]:
        lat = L.invert(net, x0, grid, method, mode=mode)
        named = {k: v.copy() for k, v in lat.named_arrays().items()}
        back = L.State.from_named_arrays(named, lat.method, lat.fingerprint, lat.mode, lat.nfe)
        out = L.sample(net, back, grid, method)
        assert np.array_equal(out, L.sample(net, lat, grid, method)), mode
        if mode == "bits":
            assert out.tobytes() == x0.tobytes()
    with pytest.raises(ValueError, match="do not belong to mode 'stable'"):
        L.State.from_named_arrays({"X[3]": x0}, lat.method, lat.fingerprint, "stable")


@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=64), st.integers(1, 4))
def test_checksums_agree_across_backends_and_detect_one_changed_element(values, rows):
    from linmultistep.numpy_backend import NumpyBackend

    a = np.array(values * rows, dtype=np.int64).reshape(rows, -1)
    t = torch.from_numpy(a.copy())
    ours = TorchBackend().checksum(t)
    assert [int(v) for v in ours] == [int(v) for v in NumpyBackend().checksum(a)]
    with np.errstate(over="ignore"):
        from linmultistep.numpy_backend import checksum_weights

        by_hand = [int((r * checksum_weights(a.shape[1])).sum()) for r in a]  # wrapping int64 arithmetic
    assert [int(v) for v in ours] == by_hand
    t[0, 0] += 1
    assert int(TorchBackend().checksum(t)[0]) != int(ours[0])


@pytest.mark.gpu
def test_checksums_on_cuda_equal_the_cpu_ones():
    """The CUDA path sums products (no int64 matrix-vector product there); the values must be the CPU's."""
    q = torch.randint(-(2**62), 2**62, (4, 3, 16, 16), dtype=torch.int64)
    assert torch.equal(TorchBackend().checksum(q.cuda()).cpu(), TorchBackend().checksum(q))
