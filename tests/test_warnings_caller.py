"""Warnings name the caller's line (issue 22): the first frame outside linmultistep and the libraries that only
pass a call through to it (linmultistep.caller), from every entry point: the core's sample / invert, the
diffusers binding's invert, a scheduler's step in a hand-written loop."""

from __future__ import annotations

import sys
import types
import warnings

import numpy as np
import pytest

import linmultistep as lm
from linmultistep import guards
from linmultistep.caller import outside_stacklevel, warn_at_caller


@pytest.fixture(autouse=True)
def _fresh_warning_memory(monkeypatch):
    monkeypatch.setattr(guards, "_STARTS_WARNED", set())


def _module(name: str, source: str) -> types.ModuleType:
    """A module named ``name`` (e.g. inside the library's namespace) made from ``source``."""
    mod = types.ModuleType(name)
    exec(compile(source, f"<{name}>", "exec"), mod.__dict__)
    return mod


def test_the_helper_skips_every_frame_of_the_library_and_of_pass_through_libraries():
    inner = _module("linmultistep.fake_inner", "import warnings\nfrom linmultistep.caller import outside_stacklevel\n"
                    "def warn():\n    warnings.warn('deep', UserWarning, stacklevel=outside_stacklevel())\n")
    passing = _module("diffusers.fake_pipeline", "def call(f):\n    return f()\n")
    outer = _module("linmultistep.fake_outer", "def entry(passing, inner):\n    return passing.call(inner.warn)\n")
    with pytest.warns(UserWarning, match="deep") as rec:
        outer.entry(passing, inner); line = sys._getframe().f_lineno  # noqa: E702
    assert rec[0].filename == __file__ and rec[0].lineno == line


def test_warn_at_caller_and_a_call_from_outside_name_the_caller():
    with pytest.warns(UserWarning, match="here") as rec:
        warn_at_caller("here"); line = sys._getframe().f_lineno  # noqa: E702
    assert (rec[0].filename, rec[0].lineno) == (__file__, line)
    assert outside_stacklevel() == 1  # called from outside: the warning call itself


def test_a_warning_from_sample_names_the_test_line():
    grid = lm.Grid.from_alphas_cumprod(lm.alphas_cumprod_for("linear"), 50, "leading", steps_offset=1)
    with pytest.warns(lm.PrecisionWarning) as rec:
        lm.sample(lambda x, i: 0.1 * x, np.ones((2, 3)), grid, "bdia"); line = sys._getframe().f_lineno  # noqa: E702
    assert (rec[0].filename, rec[0].lineno) == (__file__, line)


def test_a_warning_from_invert_names_the_test_line():
    grid = lm.Grid.from_alphas_cumprod(lm.alphas_cumprod_for("linear"), 20)
    with pytest.warns(lm.PrecisionWarning, match=r"p\^-N") as rec:
        lm.invert(lambda x, i: 0.1 * x, np.ones((2, 3), np.float32), grid, lm.edict(0.3)); line = sys._getframe().f_lineno  # noqa: E501,E702
    assert (rec[0].filename, rec[0].lineno) == (__file__, line)


torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")


ONE_TORCH_THREAD = True  # conftest._one_torch_thread: one intra-op thread for this module


def test_a_warning_from_the_diffusers_invert_names_the_test_line(pipe):
    from linmultistep.backends.diffusers import invert

    images = torch.zeros(1, 3, 16, 16)
    with pytest.warns(lm.PrecisionWarning, match=r"edict\(p=0.3\).*p\^-N") as rec:
        invert(pipe, images, "a cat", num_steps=12, method=lm.edict(0.3), progress=False); line = sys._getframe().f_lineno  # noqa: E501,E702
    ours = [w for w in rec if issubclass(w.category, lm.PrecisionWarning)]
    assert (ours[0].filename, ours[0].lineno) == (__file__, line)


def test_a_warning_from_a_scheduler_step_names_the_test_line(pipe):
    from linmultistep.backends.diffusers import BELMScheduler, UNetEps, encode_prompts, grid_from_config

    sched = BELMScheduler.from_config(pipe.scheduler.config, method="bdia", gamma=1.0)
    sched.set_timesteps(6)
    grid = grid_from_config(sched, 6)
    f = UNetEps(pipe.unet, grid, "epsilon", encode_prompts(pipe, "a dog", 1))
    index = {int(t): i for i, t in enumerate(grid.timesteps[1:], 1)}
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    lines = []
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for t in sched.timesteps:
            out = sched.step(f(x, index[int(t)]), t, x); lines.append(sys._getframe().f_lineno)  # noqa: E702
            x = out.prev_sample
    ours = [w for w in rec if issubclass(w.category, lm.PrecisionWarning)]
    assert ours and all((w.filename, w.lineno) == (__file__, lines[0]) for w in ours)
