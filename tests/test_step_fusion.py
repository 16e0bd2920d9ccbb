"""Mode 'stable''s fused step gives the bits of the array operations it replaces, and a sampling step
reads nothing back from the device except at the deferred checks' reads.

The reference for the bits is the composition of the backends' own ``lincomb`` (the arithmetic the
step was written in before it was fused: :func:`linmultistep.stable.stable_shear` without a fused
backend method), run on the same inputs; for the host reads, a count of every Python-side read of
tensor values (``item``, ``bool``, ``float``, ``tolist``, ``torch.equal``) and, where a GPU exists,
torch's own count of synchronisations.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import linmultistep as lms  # noqa: E402
from linmultistep import fixedkernels  # noqa: E402
from linmultistep.backends.torch import TorchBackend  # noqa: E402
from linmultistep.numpy_backend import NumpyBackend  # noqa: E402

CONFIG = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
              set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")


class ComposedTorch(TorchBackend):
    """The torch backend without its fused steps (out of place and in place): stable.stable_shear composes
    lincomb, as before fusing."""

    stable_shear = None
    stable_shear_ = None


class ComposedNumpy(NumpyBackend):
    stable_shear = None
    stable_shear_ = None


from strategies import sd_grid, smooth_field as field  # noqa: E402


def _same_bits(a, b) -> bool:
    a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


# 1x4x8x8 runs the torch operations, 2x4x96x96 float32 (288 KiB) and float64 the compiled pass (>= 256 KiB)
SHAPES = [(1, 4, 8, 8), (2, 4, 96, 96), (67,)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("lib", ["torch", "numpy"])
def test_fused_stable_step_gives_the_bits_of_the_composition(lib, shape, dtype, monkeypatch):
    """Sampling, inversion (open entries completed by the fused step) and reconstruction in mode 'stable'
    with the fused step equal the composed lincomb operations bit for bit, every part of every entry."""
    from linmultistep import shearkernels
    from linmultistep.backends import torch as T

    ran = []
    kernel = shearkernels.kernel_stable_shear
    monkeypatch.setattr(shearkernels, "kernel_stable_shear", lambda *a, **k: ran.append(1) or kernel(*a, **k))
    grid = sd_grid(12)
    x0 = np.random.default_rng(len(shape)).standard_normal(shape).astype(dtype)
    if lib == "torch":
        x0 = torch.from_numpy(x0)
        eps, fused, composed = field(torch), TorchBackend(), ComposedTorch()
    else:
        eps, fused, composed = field(np), NumpyBackend(), ComposedNumpy()
    assert _same_bits(lms.sample(eps, x0, grid, "obelm", backend=fused),
                      lms.sample(eps, x0, grid, "obelm", backend=composed))
    la = lms.invert(eps, x0, grid, "obelm", backend=fused)
    lb = lms.invert(eps, x0, grid, "obelm", backend=composed)
    part_a = lms.invert(eps, x0, grid, "obelm", backend=fused, stop=5)
    part_b = lms.invert(eps, x0, grid, "obelm", backend=composed, stop=5)
    for sa, sb in ((la, lb), (part_a, part_b)):
        assert sorted(sa.window) == sorted(sb.window)
        for i in sa.window:
            for pa, pb in zip(sa.window[i], sb.window[i]):
                assert (pa is None and pb is None) or _same_bits(pa, pb), f"grid index {i}"
    assert _same_bits(lms.sample(eps, la, grid, backend=fused), lms.sample(eps, lb, grid, backend=composed))
    big = int(np.prod(shape)) * np.dtype(dtype).itemsize >= T._SHEAR_KERNEL_BYTES
    if lib == "torch" and big and T._shear_agrees(getattr(torch, dtype)):
        assert ran, "the compiled pass ran"  # so the comparison above is the kernel's against the ops'
    elif lib == "numpy" or not big:
        assert not ran


def test_the_compiled_step_is_used_only_where_it_reproduces_torch():
    """Where the compiled pass runs (numba present), it was checked against torch's own operations on values
    where one and two roundings differ; the check itself must fail for the other rounding."""
    from linmultistep import shearkernels
    from linmultistep.backends import torch as T

    if not fixedkernels.available():
        pytest.skip("numba (linmultistep[fast]) not installed")

    def two_roundings(eps, c, v, xbar, w, s):  # what a CPU without FMA kernels computes
        c32, w32, s32 = (torch.tensor(z, dtype=eps.dtype) for z in (c, w, s))
        nv = eps * c32 if v is None else (eps * c32) - v
        nx = xbar + nv * w32
        return nv, nx, nx * s32

    for dtype in (torch.float32, torch.float64):
        npdt = T._NUMPY_DTYPES[dtype]
        assert shearkernels.agrees(two_roundings, torch.from_numpy, lambda t: t.numpy(), npdt, fused=False)
        assert not shearkernels.agrees(two_roundings, torch.from_numpy, lambda t: t.numpy(), npdt, fused=True)
        fma = T._shear_agrees(dtype)  # this machine's torch: one rounding per sum (or the kernel is not used)
        if fma:
            assert shearkernels.agrees(T._compose_stable_shear, torch.from_numpy, lambda t: t.numpy(), npdt,
                                       fused=True)


# --- host reads -------------------------------------------------------------------------------------------
class HostReads:
    """Counts every Python-side read of tensor values (each one a synchronisation on a GPU)."""

    def __init__(self, monkeypatch) -> None:
        self.count = 0
        for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
            orig = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counted(orig))
        monkeypatch.setattr(torch, "equal", self._counted(torch.equal))

    def _counted(self, orig):
        def counted(*args, **kwargs):
            self.count += 1
            return orig(*args, **kwargs)

        return counted


def _scheduler_reads_per_step(monkeypatch, device: str) -> "tuple[list[int], list[bool]]":
    """Host reads made by each BELMScheduler.step of a pipeline-style loop, and whether each step was one
    at which the deferred checks are read."""
    from linmultistep.backends.diffusers import BELMScheduler

    s = BELMScheduler(**CONFIG)
    s.set_timesteps(20, device=device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 16, 16, generator=g).to(device)
    e = (0.1 * torch.randn(1, 4, 16, 16, generator=g)).to(device)
    reads = HostReads(monkeypatch)
    per_step, due = [], []
    for t in s.timesteps:  # elements of the timesteps tensor, as pipelines pass them
        before = reads.count
        x = s.step(e, t, x).prev_sample
        per_step.append(reads.count - before)
        run = s.run
        due.append(run.ctx.due(run.count) or run.done)
    monkeypatch.undo()
    return per_step, due


def test_a_scheduler_step_reads_nothing_back_between_the_checks(monkeypatch):
    """BELMScheduler.step in mode 'stable' reads no tensor value on the host (the timestep included: it is
    found by its place in ``timesteps``) except at the steps where the deferred finite checks are read."""
    per_step, due = _scheduler_reads_per_step(monkeypatch, "cpu")
    assert any(not d for d in due)
    assert [n for n, d in zip(per_step, due) if not d] == [0] * sum(not d for d in due)


def test_a_sampling_run_reads_only_at_the_checks(monkeypatch):
    """lms.sample in mode 'stable': host reads only at the deferred checks' reads and at the end (the exact
    check of the final window), never per step."""
    grid = sd_grid(40)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    e = 0.1 * torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    reads_at: list[int] = []
    counter = HostReads(monkeypatch)

    def cb(info):
        reads_at.append(counter.count)

    lms.sample(lambda y, i: e, x, grid, "obelm", callback=cb)
    total = counter.count
    monkeypatch.undo()
    per_step = np.diff([0] + reads_at)
    every = TorchBackend().check_interval(x)
    # at most one read per check (the probes are read in one go), none on the steps between
    assert all(n <= 1 for n in per_step)
    assert sum(per_step) <= len(per_step) // every + 1
    assert total - reads_at[-1] <= 2 * 3 + 2  # the end: the final window's parts, each checked exactly


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to count synchronisations")
def test_gpu_steps_do_not_synchronise_between_the_checks(monkeypatch):
    """On a GPU, torch's own synchronisation count (set_sync_debug_mode) is zero for every step at which
    the deferred checks are not read, and the steps made no host reads either."""
    syncs = []
    torch.cuda.set_sync_debug_mode("warn")
    try:
        from linmultistep.backends.diffusers import BELMScheduler

        s = BELMScheduler(**CONFIG)
        s.set_timesteps(20, device="cuda")
        x = torch.randn(1, 4, 16, 16, device="cuda")
        e = 0.1 * torch.randn(1, 4, 16, 16, device="cuda")
        for t in s.timesteps:
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                x = s.step(e, t, x).prev_sample
            n = sum("synchroniz" in str(m.message) for m in w)
            syncs.append((n, s.run.ctx.due(s.run.count) or s.run.done))
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert [n for n, due in syncs if not due] == [0] * sum(not due for _, due in syncs)
