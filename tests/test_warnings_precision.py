"""The precision guard of float round trips (issue 19): strong classifier-free guidance on the shipped digits
model drives the latent far beyond the data, and a float32 round trip in mode 'stable' then loses its digits.
The guard (linmultistep.guards.RoundingMeter) says so, with the expected error and the remedy, and stays
silent for ordinary guidance.

The threshold is the guard's own (TOLERATED_SHARE of the data's scale, with the dtype's unit roundoff in its
estimate); the measured errors are compared with that share only, each side with a wide margin (silent runs:
errors of 1e-5 where 1e-2 would warn; warned runs: 1e-1 and more).
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import linmultistep as lms  # noqa: E402
from linmultistep.backends.diffusers import invert, reconstruct  # noqa: E402
from linmultistep.backends.digits import load_heldout  # noqa: E402
from linmultistep.guards import TOLERATED_SHARE  # noqa: E402

ONE_TORCH_THREAD = True  # conftest: one torch thread for this module, restored after
STEPS = 20
ROWS = 4


@pytest.fixture(scope="module")
def digits(digits_pipe):
    images, labels = load_heldout()
    return digits_pipe, images[:ROWS], labels[:ROWS].tolist()


def _error(back, x) -> float:
    return float((back.double() - x.double()).abs().max())


@pytest.mark.parametrize("guidance", [20.0, 1e6])
def test_strong_guidance_in_float32_warns_with_the_expected_error_and_the_remedy(digits, guidance):
    pipe, x, labels = digits
    with pytest.warns(lms.PrecisionWarning, match=r"reconstructing this latent in float32 is expected to be off by "
                      r"up to about .*mode 'bits'.*float64 states") as inverted:
        latent = invert(pipe, x, labels, num_steps=STEPS, guidance_scale=guidance)
    assert latent.mode == "stable"
    with pytest.warns(lms.PrecisionWarning, match=r"this reconstruction in float32 is expected") as sampled:
        back = reconstruct(pipe, latent).latents
    # issue 22: the warnings name this file's lines, not the library's
    assert {w.filename for w in inverted.list + sampled.list} == {__file__}
    # the warning was right: this round trip is off by more than the tolerated share of the data
    assert _error(back, x) > TOLERATED_SHARE * float(x.abs().max())


@pytest.mark.parametrize("guidance", [1.0, 2.0, 3.0])
def test_ordinary_guidance_round_trips_silently(digits, guidance):
    pipe, x, labels = digits
    with warnings.catch_warnings():
        warnings.simplefilter("error", lms.PrecisionWarning)
        latent = invert(pipe, x, labels, num_steps=STEPS, guidance_scale=guidance)
        back = reconstruct(pipe, latent).latents
    assert _error(back, x) < TOLERATED_SHARE * float(x.abs().max())


@pytest.mark.parametrize("remedy", [{"state_dtype": torch.float64}, {"mode": "bits"}], ids=["float64", "bits"])
def test_the_remedies_the_warning_names_are_silent_and_accurate(digits, remedy):
    pipe, x, labels = digits
    with warnings.catch_warnings():
        warnings.simplefilter("error", lms.PrecisionWarning)
        latent = invert(pipe, x, labels, num_steps=STEPS, guidance_scale=20.0, **remedy)
        back = reconstruct(pipe, latent).latents
    if remedy.get("mode") == "bits":
        assert torch.equal(back, x)  # exact to the last bit
    else:
        assert _error(back, x) < TOLERATED_SHARE * float(x.abs().max())


def test_the_expected_error_scales_with_the_unit_roundoff():
    """The guard's estimate is u * G * sqrt(sum r_i^2) from the states' sizes: the same states in float64 give
    the float32 estimate times 2^-29 (the ratio of the unit roundoffs), independent of any rounding here."""
    import numpy as np

    from linmultistep.context import StepContext
    from linmultistep.guards import RoundingMeter
    from linmultistep.numpy_backend import NumpyBackend

    grid = lms.Grid.from_alphas_cumprod(lms.alphas_cumprod_for("linear"), 6)
    sizes = [1.0, 2.0, 50.0, 400.0, 3000.0, 9000.0, 20000.0]  # a state that grows toward the noise end
    got = {}
    for dtype in (np.float32, np.float64):
        ctx = StepContext(grid.h, grid.alpha, lambda x, i: x, NumpyBackend())
        meter = RoundingMeter(ctx, np.zeros(1, dtype), "backward", k=2)
        for n, s in enumerate(sizes):
            meter.add(n, np.array([s], dtype))
        got[dtype] = meter.expected_error()
    E32, data, growth = got[np.float32]
    kept = sizes[:-1]  # the latent's top point is never recomputed by the reconstruction
    expected = 2.0**-24 * (max(kept) / 1.0) * np.sqrt(sum((a + 2 * b) ** 2 for a, b in zip(kept, kept[1:])))
    assert data == 1.0 and growth == max(kept)
    assert E32 == pytest.approx(expected, rel=1e-12)
    assert got[np.float64][0] == pytest.approx(E32 * 2.0**-29, rel=1e-12)
