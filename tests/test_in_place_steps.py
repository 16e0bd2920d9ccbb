"""Mode 'stable' updates the state in place between the steps of a run nobody else watches (issue 23):
the same bits as a run that makes new arrays at every step, and never a write to an array the caller
gave or was given.

Independent truth: the same run with a callback (the steps' entries are then seen outside the run, so
every step makes new arrays), compared bit for bit; byte snapshots of every array the caller passed in
or received, taken before and compared after.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import linmultistep as lms  # noqa: E402
from linmultistep.backends.torch import TorchBackend  # noqa: E402
from linmultistep.numpy_backend import NumpyBackend  # noqa: E402
from linmultistep.stepping import finish, start, step  # noqa: E402
from strategies import sd_grid, smooth_field as field  # noqa: E402


class Counting:
    """Counts the in-place steps a backend makes."""

    in_place = 0

    def stable_shear_(self, *args):
        self.in_place += 1
        return super().stable_shear_(*args)


class CountingTorch(Counting, TorchBackend):
    pass


class CountingNumpy(Counting, NumpyBackend):
    pass


def as_numpy(a):
    return a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def same_bits(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a, b = as_numpy(a), as_numpy(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def same_windows(sa: lms.State, sb: lms.State) -> bool:
    return sorted(sa.window) == sorted(sb.window) and all(
        same_bits(pa, pb) for i in sa.window for pa, pb in zip(sa.window[i], sb.window[i]))


def snapshot(*arrays) -> list[bytes]:
    return [as_numpy(a).tobytes() for a in arrays if a is not None]


def watched(info) -> None:
    """A callback: the steps' entries are seen outside the run, so no step may update them in place."""


def setup(lib: str, dtype: str, shape=(2, 3, 5)):
    x = np.random.default_rng(7).standard_normal(shape).astype(dtype)
    if lib == "torch":
        return torch.from_numpy(x), field(torch), CountingTorch
    return x, field(np), CountingNumpy


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("lib", ["torch", "numpy"])
@pytest.mark.parametrize("method", ["obelm", "bdia"])
def test_in_place_runs_give_the_bits_of_runs_that_make_new_arrays(lib, dtype, method):
    """Sampling, inversion, a partial inversion, its continuation and the reconstruction of a latent: the
    run without a callback updates in place (counted) and gives, bit for bit, every part of every entry of
    the run that is watched by a callback."""
    x, eps, Backend = setup(lib, dtype)
    grid = sd_grid(12)
    quiet, loud = Backend(), Backend()

    def both(fn, *args, **kw):
        return fn(*args, backend=quiet, **kw), fn(*args, backend=loud, callback=watched, **kw)

    a, b = both(lms.sample, eps, x, grid, method, return_state=True)
    assert same_windows(a, b)
    la, lb = both(lms.invert, eps, x, grid, method)
    assert same_windows(la, lb)
    pa, pb = both(lms.invert, eps, x, grid, method, stop=6)
    assert same_windows(pa, pb)
    ca, cb = both(lms.invert, eps, pa, grid, method)
    assert same_windows(ca, cb) and same_windows(ca, la)
    ra, rb = both(lms.sample, eps, la, grid, return_state=True)
    assert same_windows(ra, rb)
    assert quiet.in_place > 0 and loud.in_place == 0


@pytest.mark.parametrize("lib", ["torch", "numpy"])
def test_a_run_never_writes_an_array_the_caller_gave_or_received(lib):
    """The noise, the data, a latent being reconstructed or continued, and the network's outputs keep
    their bytes: in-place updates touch only arrays the run itself made."""
    x, eps, Backend = setup(lib, "float32")
    grid = sd_grid(10)
    outputs = []

    def network(y, i):  # keeps what it returns, as a caching network would
        out = eps(y, i)
        outputs.append((out, as_numpy(out).tobytes()))
        return out

    noise_bytes = snapshot(x)
    lms.sample(network, x, grid, "obelm", backend=Backend())
    latent = lms.invert(network, x, grid, "obelm", backend=Backend())
    partial = lms.invert(network, x, grid, "obelm", backend=Backend(), stop=4)
    kept = {id(s): snapshot(*[p for e in s.window.values() for p in e]) for s in (latent, partial)}
    backend = Backend()
    lms.sample(network, latent, grid, backend=backend)
    lms.invert(network, partial, grid, backend=backend)
    assert backend.in_place > 0
    assert snapshot(x) == noise_bytes
    for s in (latent, partial):
        assert snapshot(*[p for e in s.window.values() for p in e]) == kept[id(s)]
    assert all(as_numpy(out).tobytes() == before for out, before in outputs)


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_entries_handed_out_by_steps_stay_what_they_were(direction):
    """Entries a callback or a direct caller of step() received keep their values after the later steps
    (those runs never update in place)."""
    x, eps, Backend = setup("torch", "float64")
    grid = sd_grid(10)
    seen = []
    run_fn = lms.sample if direction == "forward" else lms.invert
    run_fn(eps, x, grid, "obelm", backend=Backend(), callback=lambda info: seen.append(
        (info.entry, snapshot(*info.entry))))
    run = start(eps, grid, "obelm", x, direction)
    while not run.done:
        info = step(run)
        seen.append((info.entry, snapshot(*info.entry)))
    finish(run)
    assert len(seen) == 2 * grid.N
    assert all(snapshot(*entry) == before for entry, before in seen)


def test_a_scheduler_returns_the_points_own_prediction_of_the_data():
    """BELMScheduler.step updates its run in place; the pred_original_sample it returns at timestep t_i
    is still x0 = xbar_i - sigmabar_i eps_i of point i's own state (taken from a watched run), bit for bit."""
    from linmultistep.backends.diffusers import BELMScheduler

    s = BELMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      set_alpha_to_one=False, steps_offset=1)
    s.set_timesteps(10)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eps = field(torch)
    states = {}
    lms.sample(eps, x, s.grid, "obelm", callback=lambda info: states.__setitem__(info.index, info.entry))
    states[s.grid.N] = (x, x / float(s.grid.alpha[s.grid.N]), None)
    y, preds = x, {}
    for t in s.timesteps:
        i = s.grid.N - len(preds)
        out = s.step(eps(y, i), t, y)
        y, preds[i] = out.prev_sample, out.pred_original_sample
    assert s.run.done
    for i, pred in preds.items():
        if i in (s.grid.N, 0):
            continue  # the top point's xbar is the scheduler's own division; 0 is the zero-length step
        want = torch.add(states[i][1], eps(states[i][0], i), alpha=-float(s.grid.sigmabar[i]))
        assert same_bits(pred, want), f"grid index {i}"
