"""diffusers binding: DDIM equivalence with diffusers, exact round trips, prediction types."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import linmultistep as lms  # noqa: E402
from linmultistep.backends.diffusers import invert, reconstruct  # noqa: E402
from linmultistep.backends.diffusers.adapters import UNetEps, encode_prompts, to_epsilon  # noqa: E402
from linmultistep.backends.diffusers.grid import grid_from_config  # noqa: E402
from bounds import round_trip_bound  # noqa: E402
from linmultistep.backends.diffusers.pipeline import decode_latents, encode_images, parts_of  # noqa: E402
from linmultistep.backends.diffusers.testing import (  # noqa: E402
    ddim_config, same_entry, sample_images, tiny_sd_pipeline, tiny_unet2d,
)


@pytest.fixture(scope="module")
def pipe64():
    return tiny_sd_pipeline(dtype=torch.float64)


def rel(a, b):
    return float((a - b).double().norm() / b.double().norm())


def diffusers_ddim_loop(pipe, scheduler, noise, cond, guidance):
    """A plain diffusers DDIMScheduler loop (the reference the DDIM path must equal)."""
    x = noise.clone()
    for t in scheduler.timesteps:
        if guidance != 1.0:
            e_u, e_c = pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([cond.uncond, cond.cond])).sample.chunk(2)
            e = e_u + guidance * (e_c - e_u)
        else:
            e = pipe.unet(x, t, encoder_hidden_states=cond.cond).sample
        x = scheduler.step(e, t, x).prev_sample
    return x


@pytest.mark.parametrize("spacing,offset,alpha_one", [("leading", 1, False), ("trailing", 0, True), ("leading", 0, True)])
@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_ddim_path_equals_diffusers_ddim_loop(pipe, spacing, offset, alpha_one, guidance):
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**ddim_config(spacing=spacing, steps_offset=offset, set_alpha_to_one=alpha_one))
    sched.set_timesteps(8)
    grid = grid_from_config(sched, 8)
    np.testing.assert_array_equal(grid.timesteps[1:][::-1], sched.timesteps.numpy())
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    cond = encode_prompts(pipe, ["a cat", "a red dog"], 2, guidance)
    with torch.no_grad():
        ref = diffusers_ddim_loop(pipe, sched, noise, cond, guidance)
    ours = lms.sample(UNetEps(pipe.unet, grid, "epsilon", cond), noise.clone(), grid, "ddim")
    # the same DDIM updates in another order of operations: a few (<= 4) roundings of relative size
    # eps_32 per step, over 8 steps; a bound from the dtype, not a magnitude measured on one CPU
    assert rel(ours, ref) < 4 * 8 * torch.finfo(torch.float32).eps


def test_linspace_grid_indexes_the_timestep_array():
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**ddim_config(spacing="linspace", steps_offset=0))
    sched.set_timesteps(7)
    grid = grid_from_config(sched, 7)
    # index 0 is then timestep 0 itself, so the grid has 6 steps; the rest is diffusers' array
    np.testing.assert_array_equal(grid.timesteps[::-1], sched.timesteps.numpy())
    ac = sched.alphas_cumprod.double().numpy()
    np.testing.assert_allclose(grid.alpha ** 2, ac[grid.timesteps.astype(int)], rtol=1e-6)


@pytest.mark.parametrize("method", ["obelm", "bdia", "edict"])
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_latent_round_trip_float32(pipe, method, guidance):
    x = sample_images(2)
    latent = invert(pipe, x, ["a cat", "a dog"], num_steps=10, method=method, guidance_scale=guidance)
    assert latent.metadata["prompt"] == ["a cat", "a dog"] and latent.metadata["guidance_scale"] == guidance
    images, z0 = reconstruct(pipe, latent, return_dict=False)
    z_true = encode_images(parts_of(pipe), x)
    assert z0.dtype == torch.float32
    assert rel(z0, z_true) <= round_trip_bound(torch.float32, grid_from_config(pipe.scheduler, 10))
    assert isinstance(images, torch.Tensor) and images.shape == x.shape


@pytest.mark.parametrize("method", ["obelm", "bdia", "edict"])
def test_latent_round_trip_float64(pipe64, method):
    x = sample_images(1).double()
    for guidance in (1.0, 5.0):
        latent = invert(pipe64, x, "a cat", num_steps=10, method=method, guidance_scale=guidance)
        _, z0 = reconstruct(pipe64, latent, return_dict=False)
        assert rel(z0, encode_images(parts_of(pipe64), x)) <= 1e-10


def test_float64_states_with_float32_network(pipe):
    x = sample_images(1)
    latent = invert(pipe, x, "a cat", num_steps=10, method="obelm", guidance_scale=3.0, state_dtype=torch.float64)
    assert latent.x.dtype == torch.float64
    _, z0 = reconstruct(pipe, latent, return_dict=False)
    assert rel(z0, encode_images(parts_of(pipe), x).double()) <= 1e-10


def test_pixel_round_trip_is_bounded_by_the_vae(pipe):
    x = sample_images(2)
    parts = parts_of(pipe)
    floor = float(((decode_latents(parts, encode_images(parts, x)) - x) ** 2).mean())
    ddim_err = None
    for method in ("obelm", "ddim"):
        latent = invert(pipe, x, "a cat", num_steps=10, method=method)
        err = float(((reconstruct(pipe, latent).images - x) ** 2).mean())
        if method == "obelm":
            assert err <= floor * (1 + 1e-4) + 1e-7
        else:
            ddim_err = err
    assert ddim_err > floor * (1 + 1e-3)  # DDIM inversion is not exact: the test can tell


def test_to_epsilon_closed_forms():
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64), torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    for ac in (0.999, 0.5, 0.01):
        a, s = ac ** 0.5, (1 - ac) ** 0.5
        x = a * x0 + s * eps
        v = a * eps - s * x0
        torch.testing.assert_close(to_epsilon(v, x, a, s, "v_prediction"), eps, rtol=0, atol=1e-12)
        torch.testing.assert_close(to_epsilon(x0, x, a, s, "sample"), eps, rtol=0, atol=1e-12)
        torch.testing.assert_close(to_epsilon(eps, x, a, s, "epsilon"), eps, rtol=0, atol=0)
    with pytest.raises(ValueError, match="prediction_type"):
        to_epsilon(eps, x, a, s, "flow")


def test_v_prediction_sd2_layout_inverts_exactly():
    pipe = tiny_sd_pipeline(prediction_type="v_prediction", text_width=24, seed=1, layout="sd2")
    assert pipe.text_encoder.config.hidden_size == 24 and pipe.unet.config.use_linear_projection
    x = sample_images(1)
    latent = invert(pipe, x, "a cat", num_steps=10, method="obelm", guidance_scale=2.0)
    assert latent.metadata["prediction_type"] == "v_prediction"
    _, z0 = reconstruct(pipe, latent, return_dict=False)
    assert rel(z0, encode_images(parts_of(pipe), x)) <= round_trip_bound(torch.float32, grid_from_config(pipe.scheduler, 10))


@pytest.mark.parametrize("prediction_type", ["sample", "epsilon", "v_prediction"])
def test_unconditional_unet2d_pair_inverts_exactly(prediction_type):
    from diffusers import DDPMScheduler

    unet = tiny_unet2d(dtype=torch.float64)
    sched = DDPMScheduler(prediction_type=prediction_type)
    x = sample_images(2, size=8).double()
    latent = invert((unet, sched), x, num_steps=8, method="obelm")
    out = reconstruct((unet, sched), latent).images
    assert rel(out, x) <= 1e-10
    with pytest.raises(ValueError, match="unconditional"):
        invert((unet, sched), x, "a prompt", num_steps=8)


def test_sampling_reaches_the_same_point_with_prompt_embeddings(pipe):
    x = sample_images(1)
    cond = encode_prompts(pipe, "a cat", 1, 3.0)
    a = invert(pipe, x, "a cat", num_steps=6, guidance_scale=3.0)
    b = invert(pipe, x, None, num_steps=6, guidance_scale=3.0, prompt_embeds=cond.cond, negative_prompt_embeds=cond.uncond)
    assert same_entry(a.window[6], b.window[6])
    with pytest.raises(ValueError, match="no prompt"):
        reconstruct(pipe, b)
    _, z0 = reconstruct(pipe, b, prompt_embeds=cond.cond, negative_prompt_embeds=cond.uncond, return_dict=False)
    assert rel(z0, encode_images(parts_of(pipe), x)) <= round_trip_bound(torch.float32, grid_from_config(pipe.scheduler, 6))


def test_importing_the_binding_package_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, linmultistep, linmultistep.backends.diffusers as d; "
            "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules; "
            "assert callable(d.invert) and 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.gpu
def test_round_trip_on_the_gpu_uses_the_pipeline_device():
    import os

    from linmultistep.backends.torch import use_deterministic

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    use_deterministic(True)
    try:
        pipe = tiny_sd_pipeline().to("cuda")
        x = sample_images(2)
        latent = invert(pipe, x, "a cat", num_steps=10, method="obelm", guidance_scale=3.0)
        assert latent.x.device.type == "cuda"
        images, z0 = reconstruct(pipe, latent, return_dict=False)
        assert images.device.type == "cuda"
        assert rel(z0, encode_images(parts_of(pipe), x)) <= round_trip_bound(torch.float32, grid_from_config(pipe.scheduler, 10))
    finally:
        use_deterministic(False)
