"""invert / reconstruct / edit on tiny SD3 and FLUX pipelines built from configs (random weights,
local tokenizers): Euler equals the pipelines' own sampling loop, exact round trips in float64 and
mode 'bits', Euler inversion inexact, wrong companions refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import linmultistep as lm  # noqa: E402
from linmultistep.backends.diffusers import flow_pipeline as fp  # noqa: E402
from linmultistep.backends.diffusers.flow_schedulers import FlowBELMScheduler  # noqa: E402
from linmultistep.backends.diffusers.flow_testing import tiny_flux_pipeline, tiny_sd3_pipeline  # noqa: E402
from linmultistep.backends.diffusers.testing import sample_images  # noqa: E402

EPS32 = float(torch.finfo(torch.float32).eps)
MSL = 16  # max_sequence_length: the tiny T5 side


@pytest.fixture(scope="module")
def sd3():
    torch.set_num_threads(1)
    return tiny_sd3_pipeline()


@pytest.fixture(scope="module")
def flux():
    torch.set_num_threads(1)
    return tiny_flux_pipeline()


# (pipeline fixture, our keywords, the pipeline's own keywords for the same guidance)
SETUPS = {
    "sd3-cfg": ("sd3", dict(guidance_scale=2.0), dict(guidance_scale=2.0)),
    "flux-embedded": ("flux", dict(guidance=2.5), dict(guidance_scale=2.5)),
    "flux-true-cfg": ("flux", dict(guidance=2.5, guidance_scale=2.0, negative_prompt="blurry"),
                      dict(guidance_scale=2.5, true_cfg_scale=2.0, negative_prompt="blurry")),
}


def _pipe(request, name):
    return request.getfixturevalue(name)


@pytest.mark.parametrize("setup", list(SETUPS))
def test_euler_equals_the_pipelines_own_loop(request, setup):
    name, ours_kw, theirs_kw = SETUPS[setup]
    pipe = _pipe(request, name)
    n = 6
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    v, grid = fp.velocity_for(pipe, "a cat", noise.shape, n, max_sequence_length=MSL, **ours_kw)
    ours = lm.sample(v, noise, grid, "ddim")
    latents = fp.pack_latents(noise) if name == "flux" else noise
    ref = pipe("a cat", num_inference_steps=n, height=16, width=16, latents=latents, output_type="latent",
               max_sequence_length=MSL, num_images_per_prompt=2, **theirs_kw).images
    if name == "flux":
        ref = fp.unpack_latents(ref, 8, 8)
    # float32 rounding of each step (a few ulps of |x|), carried through n network calls
    assert (ours - ref).abs().max() <= 64 * n * EPS32 * ref.abs().max()


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_obelm_scheduler_inside_the_pipeline_equals_the_core(request, name):
    pipe = _pipe(request, name)
    original = pipe.scheduler
    n = 6
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    v, grid = fp.velocity_for(pipe, "a dog", noise.shape, n, max_sequence_length=MSL)
    core = lm.sample(v, noise, grid, "obelm")
    try:
        pipe.scheduler = FlowBELMScheduler.from_config(original.config)
        latents = fp.pack_latents(noise) if name == "flux" else noise
        extra = dict(guidance_scale=fp.FLUX_DEFAULT_GUIDANCE) if name == "flux" else dict(guidance_scale=1.0)
        out = pipe("a dog", num_inference_steps=n, height=16, width=16, latents=latents, output_type="latent",
                   max_sequence_length=MSL, **extra).images
    finally:
        pipe.scheduler = original
    out = fp.unpack_latents(out, 8, 8) if name == "flux" else out
    assert (out - core).abs().max() <= 64 * n * EPS32 * core.abs().max()


@pytest.mark.parametrize("setup", list(SETUPS))
@pytest.mark.parametrize("mode", ["stable", "recurrence", "bits"])
def test_round_trip_float64_and_bits(request, setup, mode):
    name, kw, _ = SETUPS[setup]
    pipe = _pipe(request, name)
    images = sample_images(2, 16)
    z0 = fp.encode_images(fp.flow_parts_of(pipe), images).double()
    latent = fp.invert(pipe, images, ["a cat", "a red car"], num_steps=8, state_dtype=torch.float64, mode=mode,
                       max_sequence_length=MSL, **kw)
    assert latent.fingerprint.startswith("flow-") and latent.metadata["kind"] == name
    rec = fp.reconstruct(pipe, latent, output_type="pt")
    if mode == "bits":
        assert torch.equal(rec.latents, z0)  # float32 VAE latents sit on the fixed-point grid
    else:
        assert (rec.latents - z0).abs().max() <= 1e-10 * z0.abs().max()


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_bits_round_trip_in_float32_is_exact(request, name):
    pipe = _pipe(request, name)
    images = sample_images(2, 16, seed=3)
    z0 = fp.encode_images(fp.flow_parts_of(pipe), images)
    latent = fp.invert(pipe, images, "a cat", num_steps=10, mode="bits", max_sequence_length=MSL)
    rec = fp.reconstruct(pipe, latent, output_type="pt")
    assert rec.latents.dtype == torch.float32 and torch.equal(rec.latents, z0)


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_euler_inversion_is_clearly_inexact(request, name):
    pipe = _pipe(request, name)
    images = sample_images(2, 16)
    z0 = fp.encode_images(fp.flow_parts_of(pipe), images).double()
    latent = fp.invert(pipe, images, "a cat", num_steps=8, method="ddim", state_dtype=torch.float64,
                       max_sequence_length=MSL)
    rec = fp.reconstruct(pipe, latent, output_type="pt")
    assert (rec.latents - z0).abs().max() > 1e-3 * z0.abs().max()


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_edit_with_the_source_prompt_reproduces_and_another_prompt_edits(request, name):
    pipe = _pipe(request, name)
    images = sample_images(1, 16)
    z0 = fp.encode_images(fp.flow_parts_of(pipe), images).double()
    same = fp.edit(pipe, images, "a cat", "a cat", num_steps=8, state_dtype=torch.float64, max_sequence_length=MSL)
    assert (same.latents - z0).abs().max() <= 1e-10 * z0.abs().max()
    other = fp.edit(pipe, images, "a cat", "a dog", num_steps=8, strength=0.75, state_dtype=torch.float64,
                    max_sequence_length=MSL)
    assert (other.latents - z0).abs().max() > 1e-3 * z0.abs().max()
    back = fp.reconstruct(pipe, other.inversion, output_type="pt")  # the partial exact latent reconstructs
    assert (back.latents - z0).abs().max() <= 1e-10 * z0.abs().max()


def test_a_saved_flow_latent_loads_and_reconstructs_bit_for_bit(flux, tmp_path):
    from linmultistep.backends.diffusers.latents import load_latent, save_latent

    images = sample_images(1, 16, seed=5)
    latent = fp.invert(flux, images, "a cat", num_steps=6, mode="bits", max_sequence_length=MSL)
    loaded = load_latent(save_latent(latent, tmp_path / "cat.safetensors"))
    assert loaded.fingerprint == latent.fingerprint and loaded.metadata["mu"] == latent.metadata["mu"]
    z0 = fp.encode_images(fp.flow_parts_of(flux), images)
    assert torch.equal(fp.reconstruct(flux, loaded, output_type="pt").latents, z0)


def test_packing_equals_the_flux_pipelines_own():
    from diffusers import FluxPipeline

    z = torch.randn(2, 4, 8, 6)
    packed = FluxPipeline._pack_latents(z, 2, 4, 8, 6)
    assert torch.equal(fp.pack_latents(z), packed)
    assert torch.equal(fp.unpack_latents(packed, 8, 6), FluxPipeline._unpack_latents(packed, 16, 12, 2))
    assert torch.equal(fp._image_ids(8, 6, "cpu", torch.float32), FluxPipeline._prepare_latent_image_ids(2, 4, 3, "cpu",
                                                                                                       torch.float32))


@pytest.mark.bad_input("4 companions")
def test_a_gaussian_latent_is_refused_by_name(sd3):
    z = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    vp = lm.invert(lambda x, i: -0.1 * x, z, lm.Grid.from_sigmabar(np.linspace(0.0, 10.0, 9)), "obelm")
    with pytest.raises(lm.LatentMismatchError, match="'gaussian' grid .* cannot be continued on a 'flow' grid"):
        fp.reconstruct(sd3, vp)


@pytest.mark.bad_input("4 companions")
def test_a_latent_of_another_grid_or_model_is_refused(sd3, flux):
    images = sample_images(1, 16)
    latent = fp.invert(sd3, images, "a cat", num_steps=6, max_sequence_length=MSL)
    with pytest.raises(lm.LatentMismatchError, match="num_steps 6 vs 7"):
        fp.reconstruct(sd3, latent, num_steps=7)
    with pytest.raises(lm.LatentMismatchError):
        fp.reconstruct(flux, latent)  # FLUX's grid (sigmas, mu) differs from SD3's


@pytest.mark.bad_input("9 unclear errors")
def test_embedded_guidance_on_a_transformer_without_it_is_refused(sd3):
    with pytest.raises(ValueError, match="no guidance embedding"):
        fp.invert(sd3, sample_images(1, 16), "a cat", num_steps=4, guidance=3.5, max_sequence_length=MSL)


@pytest.mark.bad_input("9 unclear errors")
def test_a_unet_pipeline_is_pointed_to_the_unet_binding():
    from linmultistep.backends.diffusers.testing import tiny_sd_pipeline

    with pytest.raises(TypeError, match="has no transformer.*use linmultistep.backends.diffusers.invert"):
        fp.invert(tiny_sd_pipeline(), sample_images(1, 16), "a cat")
