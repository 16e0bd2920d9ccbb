"""Latents saved by an earlier release still load and reconstruct exactly.

The files under tests/fixtures/latents/ were written by tests/fixtures/make_latents.py with the code
of main at cca0b67 (before the core's redesign): one per method and mode, float32 and float64. Each
holds the reconstruction that release computed from the file; the current code must compute the same
bits (same method, mode and arithmetic), and mode 'bits' must still give the data back exactly.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("safetensors")

import linmultistep as lms  # noqa: E402
from linmultistep.backends.diffusers.latents import load_latent  # noqa: E402

HERE = Path(__file__).resolve().parent / "fixtures"


def _maker():
    spec = importlib.util.spec_from_file_location("make_latents", HERE / "make_latents.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_latents", mod)
    spec.loader.exec_module(mod)
    return mod


MAKER = _maker()


@pytest.mark.parametrize("case", sorted(MAKER.CASES))
def test_saved_latent_reconstructs_as_it_did(case: str) -> None:
    name, params, mode, dtype = MAKER.CASES[case]
    latent = MAKER.to_numpy(load_latent(HERE / "latents" / f"{case}.safetensors"))
    saved = np.load(HERE / "latents" / f"{case}.npz")
    assert latent.method == lms.get_method(name, **params).spec
    if mode is not None:
        assert latent.mode == mode
    back = lms.sample(MAKER.toy_eps(dtype), latent, MAKER.grid())
    assert back.dtype == np.dtype(dtype)
    # the same arithmetic as the release that wrote the file: the same bits
    np.testing.assert_array_equal(back, saved["reconstruction"])


@pytest.mark.parametrize("case", [c for c, (_, _, mode, _) in MAKER.CASES.items() if mode and mode.startswith("bits")])
def test_saved_bits_latent_gives_the_data_on_its_fixed_point_grid(case: str) -> None:
    """Mode 'bits': a fresh inversion of the same data with today's code writes the same latent, and the
    saved one reconstructs the data as held on the fixed-point grid (to the rounding of that grid)."""
    name, params, mode, dtype = MAKER.CASES[case]
    latent = MAKER.to_numpy(load_latent(HERE / "latents" / f"{case}.safetensors"))
    x0 = np.load(HERE / "latents" / f"{case}.npz")["x0"]
    fresh = lms.invert(MAKER.toy_eps(dtype), x0, MAKER.grid(), lms.get_method(name, **params), mode=mode)
    assert fresh.mode == latent.mode and sorted(fresh.window) == sorted(latent.window)
    for i, e in latent.window.items():
        for part, (a, b) in zip(e._fields, zip(e, fresh.window[i])):
            if a is None:
                continue
            np.testing.assert_array_equal(a, b, err_msg=f"part {part}[{i}]")
    assert dict(fresh.metadata) == {k: v for k, v in dict(latent.metadata).items() if k in fresh.metadata}
