"""Shared test configuration: hypothesis profiles and a GPU marker."""

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=40, deadline=None)
settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=400, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_configure(config):
    """.ci/check_wheel.sh runs the whole suite against an installed wheel: make sure that is what runs."""
    expect = os.environ.get("LINMULTISTEP_EXPECT_INSTALLED")
    if expect:
        import linmultistep
        import linmultistep.backends

        for mod in (linmultistep, linmultistep.backends):
            if not os.path.realpath(mod.__file__).startswith(os.path.realpath(expect)):
                raise pytest.UsageError(f"{mod.__name__} imported from {mod.__file__}, not the installed copy in {expect}")


def pytest_collection_modifyitems(config, items):
    _count_bad_inputs(items)
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


def _count_bad_inputs(items) -> None:
    """benchmarks/bad_input_counts.py: {kind: [test cases, of which hypothesis-driven]} of the bad-input suite."""
    out = os.environ.get("LINMULTISTEP_BAD_INPUT_COUNTS")
    if not out:
        return
    import json

    counts: dict = {}
    for item in items:
        mark = item.get_closest_marker("bad_input")
        if mark is None:
            continue
        cases = counts.setdefault(mark.args[0], [0, 0])
        cases[0] += 1
        cases[1] += bool(getattr(getattr(item, "obj", None), "is_hypothesis_test", False))
    with open(out, "w") as fh:
        json.dump(counts, fh, sort_keys=True)


# --- the diffusers binding's tests -------------------------------------------------------
@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(request):
    """Tiny models gain nothing from intra-op threads; with pytest -n 2 they would oversubscribe.
    Applies to the test_diffusers_* modules and to any module that sets ``ONE_TORCH_THREAD = True``."""
    if not (request.module.__name__.startswith("test_diffusers") or getattr(request.module, "ONE_TORCH_THREAD", False)):
        yield
        return
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def pipe():
    """A tiny StableDiffusionPipeline built from configs (no download), one per test module."""
    from linmultistep.backends.diffusers.testing import tiny_sd_pipeline

    return tiny_sd_pipeline()


@pytest.fixture(scope="module")
def digits_pipe():
    """The shipped digits pipeline (loaded from its folder, no download), progress bars off, one per test module."""
    from linmultistep.backends.digits import load_pipeline

    p = load_pipeline()
    p.set_progress_bar_config(disable=True)
    return p
