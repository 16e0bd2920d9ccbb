"""Bad arguments to the diffusers binding (invert / reconstruct / edit / generate / schedulers) get an
error naming the argument, before any network call; never a silent truncation or a wrong latent."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from linmultistep import GridError, LatentMismatchError, MethodError  # noqa: E402
from linmultistep.backends.diffusers import BELMScheduler, edit, invert, reconstruct  # noqa: E402
from linmultistep.backends.diffusers.generation import generate  # noqa: E402
from linmultistep.backends.diffusers.testing import sample_images  # noqa: E402

X = sample_images(1)


class CountingUNet:
    """Counts the UNet's forward calls: a refused call must make none."""

    def __init__(self, pipe):
        self.pipe, self.calls = pipe, 0

    def __enter__(self):
        def hook(*_):
            self.calls += 1

        self.handle = self.pipe.unet.register_forward_pre_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


INVERT_CASES = [
    ({"prompt": 5}, TypeError, "prompt must be a string or a list of strings"),
    ({"prompt": ["a cat", 3]}, TypeError, "prompt must be a string or a list of strings"),
    ({"prompt": ["a", "b", "c"]}, ValueError, "3 entries for a batch of 1"),
    ({"negative_prompt": 7, "guidance_scale": 3.0}, TypeError, "negative_prompt must be a string"),
    ({"generator": 42}, TypeError, r"torch.Generator \(e.g. torch.Generator\(\).manual_seed\(42\)\)"),
    ({"generator": "seed"}, TypeError, "generator must be a torch.Generator"),
    ({"state_dtype": torch.int64}, TypeError, "state_dtype must be a real floating-point"),
    ({"state_dtype": torch.bool}, TypeError, "state_dtype must be a real floating-point"),
    ({"state_dtype": torch.complex64}, TypeError, "state_dtype must be a real floating-point"),
    ({"state_dtype": "float64"}, TypeError, "state_dtype must be a real floating-point"),
    ({"guidance_scale": math.nan}, ValueError, "guidance_scale must be a finite number"),
    ({"guidance_scale": math.inf}, ValueError, "guidance_scale must be a finite number"),
    ({"guidance_scale": "7.5"}, ValueError, "guidance_scale must be a finite number"),
    ({"num_steps": 10.7}, GridError, "num_steps must be an integer, got 10.7"),
    ({"num_steps": "10"}, GridError, "num_steps must be an integer, got '10'"),
    ({"num_steps": 0}, GridError, "at least 1"),
    ({"num_steps": 10**9}, GridError, "1000000000 is more than"),
    ({"stop": 2.5}, GridError, "stop must be an integer grid index"),
    ({"stop": 99}, GridError, "stop"),
    ({"mode": "exact"}, ValueError, "mode"),
    ({"mode_options": 256}, TypeError, "mode_options must be a dict"),
    ({"mode": "bits", "mode_options": {"eps_bund": 9}}, MethodError, "eps_bund"),  # parsed once, by the core
    ({"method": "obelmm"}, ValueError, "obelmm"),
    ({"progress": "yes"}, TypeError, "progress must be None, a bool or a dict"),
    ({"resize": "crop"}, ValueError, "resize must be one of"),
]


@pytest.mark.bad_input("9 unclear errors")
@pytest.mark.parametrize("kwargs,exc,match", INVERT_CASES, ids=[str(k)[:40] for k, _, _ in INVERT_CASES])
def test_bad_invert_arguments_are_named_before_any_network_call(pipe, kwargs, exc, match):
    kwargs = {"prompt": "a cat", "num_steps": 4, **kwargs}
    with CountingUNet(pipe) as unet, pytest.raises(exc, match=match):
        invert(pipe, X, **kwargs)
    assert unet.calls == 0


EDIT_CASES = [
    ({"self_attention_steps": math.nan}, ValueError, "self_attention_steps must be a finite number"),
    ({"self_attention_steps": -0.1}, ValueError, r"self_attention_steps must be a fraction of the steps in \[0, 1\]"),
    ({"self_attention_steps": 1.5}, ValueError, r"in \[0, 1\]"),
    ({"strength": 0.0}, ValueError, r"strength must be in \(0, 1\]"),
    ({"strength": math.nan}, ValueError, "strength must be a finite number"),
    ({"freeze_last": 1.5}, TypeError, "freeze_last must be an integer"),
    ({"freeze_last": 4}, ValueError, r"freeze_last must be in \[0, 4\)"),
    ({"source_guidance_scale": math.inf}, ValueError, "source_guidance_scale must be a finite number"),
    ({"generator": 0}, TypeError, "generator must be a torch.Generator"),
    ({"state_dtype": torch.int32}, TypeError, "state_dtype"),
    ({"output_type": "np"}, ValueError, "output_type must be 'pil' or 'pt'"),
]


@pytest.mark.bad_input("8 coercions")
@pytest.mark.parametrize("kwargs,exc,match", EDIT_CASES, ids=[str(k)[:40] for k, _, _ in EDIT_CASES])
def test_bad_edit_arguments_are_named(pipe, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        edit(pipe, X, "a cat", "a dog", num_steps=4, **kwargs)


@pytest.mark.bad_input("9 unclear errors")
def test_bad_reconstruct_and_generate_arguments_are_named(pipe):
    latent = invert(pipe, X, "a cat", num_steps=4)
    cases = [
        (lambda: reconstruct(pipe, "latent.safetensors"), TypeError, "latent must be the State returned by invert"),
        (lambda: reconstruct(pipe, latent.window), TypeError, "latent must be the State"),
        (lambda: reconstruct(pipe, latent, num_steps=4.5), GridError, "num_steps must be an integer"),
        (lambda: reconstruct(pipe, latent, guidance_scale=math.nan), ValueError, "guidance_scale must be a finite"),
        (lambda: reconstruct(pipe, latent, output_type="latent"), ValueError, "output_type"),
        (lambda: reconstruct(pipe, latent, mode="bits"), LatentMismatchError, "mode"),
        (lambda: generate(pipe, "a cat", num_steps=4, generator=1), TypeError, "generator must be a torch.Generator"),
        (lambda: generate(pipe, "a cat", num_steps=4, batch=0), ValueError, "batch must be a positive integer"),
        (lambda: generate(pipe, "a cat", num_steps=4, noise=torch.zeros(4, 4)), ValueError, r"noise must be a \(B, C, h, w\)"),
        (lambda: generate(pipe, 5, num_steps=4), TypeError, "prompt must be a string"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()
    # nothing the user gave was changed by the refusals
    assert torch.equal(reconstruct(pipe, latent).images, reconstruct(pipe, latent).images)


@pytest.mark.bad_input("2 resources")
@pytest.mark.parametrize("n", [10**9, 4001, -1, 0])
def test_scheduler_step_counts_are_bounded(pipe, n):
    sched = BELMScheduler.from_config(pipe.scheduler.config)
    with pytest.raises(GridError, match="num_steps"):
        sched.set_timesteps(n)


@pytest.mark.bad_input("9 unclear errors")
def test_scheduler_refuses_fresh_noise_after_load_state(pipe):
    latent = invert(pipe, X, "a cat", num_steps=4, mode="recurrence")
    sched = BELMScheduler.from_config(pipe.scheduler.config, mode="recurrence")
    sched.set_timesteps(4)
    sched.load_state(latent)
    t = sched.timesteps[0]
    fresh = torch.randn_like(latent.x)
    with pytest.raises(LatentMismatchError, match="latent"):
        sched.step(torch.zeros_like(fresh), t, fresh)


@pytest.mark.bad_input("8 coercions")
@pytest.mark.parametrize("timestep", [10.5, "10", None, float("nan")])
def test_scheduler_refuses_timesteps_that_are_not_on_its_grid(pipe, timestep):
    sched = BELMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(4)
    x = torch.zeros(1, 4, 8, 8)
    with pytest.raises(ValueError, match="timestep"):
        sched.step(x, timestep, x)


@pytest.mark.bad_input("8 coercions")
def test_numpy_and_integer_numbers_are_numbers(pipe):
    import numpy as np

    a = invert(pipe, X, "a cat", num_steps=3, guidance_scale=np.float32(2.0), progress=False)
    b = invert(pipe, X, "a cat", num_steps=3, guidance_scale=2, progress=False)
    assert a.metadata["guidance_scale"] == b.metadata["guidance_scale"] == 2.0
    assert torch.equal(a.x, b.x)
