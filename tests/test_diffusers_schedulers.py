"""BELMScheduler / BELMInverseScheduler: config round trip, agreement with the core, exact continuation."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import linmultistep as lms  # noqa: E402
from diffusers import DDIMScheduler  # noqa: E402
from linmultistep import LatentMismatchError, MethodError  # noqa: E402
from linmultistep.backends.diffusers import BELMInverseScheduler, BELMScheduler, invert  # noqa: E402
from linmultistep.backends.diffusers.adapters import UNetEps, encode_prompts  # noqa: E402
from linmultistep.backends.diffusers.grid import grid_from_config  # noqa: E402
from bounds import round_trip_bound  # noqa: E402
from linmultistep.backends.diffusers.pipeline import encode_images, parts_of  # noqa: E402
from linmultistep.backends.diffusers.testing import ddim_config, same_entry, sample_images, tiny_sd_pipeline  # noqa: E402

MODES = [None, "recurrence", "stable", "bits"]  # None: the core's default ('stable' for O-BELM)


def public(cfg):
    return {k: v for k, v in dict(cfg).items() if not k.startswith("_")}


def test_config_round_trip(tmp_path, pipe):
    sched = BELMScheduler.from_config(pipe.scheduler.config, method="bdia", gamma=0.5)
    assert sched.config.method == "bdia" and sched.config.gamma == 0.5
    assert sched.config.timestep_spacing == "leading" and sched.config.steps_offset == 1
    sched.save_config(tmp_path)
    again = BELMScheduler.from_pretrained(tmp_path)
    assert public(again.config) == public(sched.config)
    with pytest.raises(MethodError, match="EDICT"):
        BELMScheduler(method="edict")
    bits = BELMScheduler.from_config(pipe.scheduler.config, mode="bits", mode_options={"eps_bound": 256})
    assert bits.mode == "bits(data_bound=64.0, eps_bound=256.0)"
    bits.save_config(tmp_path / "bits")
    assert BELMInverseScheduler.from_pretrained(tmp_path / "bits").mode == bits.mode
    assert BELMScheduler.from_config(pipe.scheduler.config).mode == "stable"  # the core's default for O-BELM
    assert BELMScheduler.from_config(pipe.scheduler.config, method="ddim").mode == "recurrence"
    with pytest.raises(MethodError, match="2-step"):
        BELMScheduler(method="ddim", mode="stable")
    with pytest.raises(MethodError, match="unknown mode"):
        BELMScheduler(mode="exact")


@pytest.mark.parametrize("method,spacing", [("obelm", "leading"), ("bdia", "trailing"), ("obelm", "linspace")])
def test_scheduler_in_a_standard_pipeline_equals_core_sampler(pipe, method, spacing):
    pipe = tiny_sd_pipeline(scheduler_config=ddim_config(spacing=spacing, steps_offset=0 if spacing != "leading" else 1))
    pipe.scheduler = BELMScheduler.from_config(pipe.scheduler.config, method=method)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    out = pipe("a cat", num_inference_steps=7, height=16, width=16, guidance_scale=3.0,
               latents=noise.clone(), output_type="latent").images
    grid = grid_from_config(pipe.scheduler, 7)
    ref = lms.sample(UNetEps(pipe.unet, grid, "epsilon", encode_prompts(pipe, "a cat", 1, 3.0)), noise.clone(), grid, method)
    # the pipeline combines the guidance halves with its own formula: equal to float rounding, a few
    # (<= 4) roundings of relative size eps_32 per step over 7 steps (a bound from the dtype)
    assert float((out - ref).norm() / ref.norm()) < 4 * 7 * torch.finfo(torch.float32).eps


@pytest.mark.parametrize("mode", MODES)
def test_scheduler_step_is_the_core_step_bit_for_bit(pipe, mode):
    sched = BELMScheduler.from_config(pipe.scheduler.config, mode=mode)
    sched.set_timesteps(6)
    grid = grid_from_config(sched, 6)
    cond = encode_prompts(pipe, "a dog", 1)
    f = UNetEps(pipe.unet, grid, "epsilon", cond)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    if mode == "bits":  # noise on the fixed-point grid, so that the pipeline's first input is the core's
        x = lms.sample(f, x, grid, "obelm", mode="bits", stop=5, return_state=True).window[6].x
    ref = lms.sample(f, x.clone(), grid, "obelm", mode=mode)
    index = {int(t): i for i, t in enumerate(grid.timesteps[1:], 1)}
    ddim = DDIMScheduler.from_config(pipe.scheduler.config)
    ddim.set_timesteps(6)
    for t in sched.timesteps:
        eps = f(x, index[int(t)])
        out = sched.step(eps, t, x)
        # pred_original_sample is diffusers' x0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), to float rounding
        want = ddim.step(eps, t, x).pred_original_sample
        assert float((out.pred_original_sample - want).abs().max()) <= 1e-5 * float(want.abs().max())
        x = out.prev_sample
    assert torch.equal(x, ref)
    with pytest.raises(ValueError, match="not on this scheduler's grid"):
        sched.step(x, 3, x)


@pytest.mark.parametrize("convention", ["ddim", "lagged"])
@pytest.mark.parametrize("mode", [None, "recurrence", "bits"])
def test_inverse_scheduler_equals_core_invert_and_pipeline_continues_exactly(pipe, mode, convention):
    pipe.scheduler = BELMScheduler.from_config(pipe.scheduler.config, mode=mode)
    inv = BELMInverseScheduler.from_config(pipe.scheduler.config, timestep_convention=convention)
    inv.set_timesteps(7)
    grid = grid_from_config(inv, 7)
    if convention == "lagged":  # the model at each exact step's own lower point
        assert [int(t) for t in inv.timesteps] == [int(grid.timesteps[1]), int(grid.timesteps[1])] + [int(t) for t in grid.timesteps[2:-1]]
    else:  # DDIMInverseScheduler's timesteps
        assert [int(t) for t in inv.timesteps] == [int(t) for t in grid.timesteps[1:]]
    z0 = inv.fixed_point_data(encode_images(parts_of(pipe), sample_images(1)))  # identity unless mode 'bits'
    if mode != "bits":
        assert torch.equal(z0, encode_images(parts_of(pipe), sample_images(1)))
    cond = encode_prompts(pipe, "a cat", 1)
    x = z0.clone()
    with torch.no_grad():
        for t in inv.timesteps:
            x = inv.step(pipe.unet(x, t, encoder_hidden_states=cond.cond).sample, t, x).prev_sample
    f = UNetEps(pipe.unet, grid, "epsilon", cond)
    if convention == "lagged":  # the core's own starter: a DDIM-inversion step from x_0
        core = lms.invert(f, z0, grid, "obelm", mode=mode)
    else:  # the core's exact inversion from the pair (x_0, x_1) = (x_0, x_0)
        obelm = lms.get_method("obelm")
        pair = lms.State({0: lms.Point(z0), 1: lms.Point(z0)}, obelm.spec, grid.fingerprint,
                         lms.resolve_mode(obelm, mode).mode)
        core = lms.invert(f, pair, grid, "obelm", mode=mode)
    assert inv.state.mode == core.mode == pipe.scheduler.mode
    assert set(inv.state.window) == set(core.window) == {6, 7}
    for i in core.window:
        assert same_entry(inv.state.window[i], core.window[i])
    # exact reconstruction inside the standard pipeline from the pair (x_N, x_{N-1})
    pipe.scheduler.load_state(inv.state)
    out = pipe("a cat", num_inference_steps=7, height=16, width=16, guidance_scale=1.0,
               latents=inv.state.x.clone(), output_type="latent").images
    assert float((out - z0).norm() / z0.norm()) <= round_trip_bound(torch.float32, grid_from_config(pipe.scheduler, 7))
    if mode == "bits":  # the pipeline's model outputs equal the core's here: the round trip is exact
        assert torch.equal(out, z0)
    # without the stored x_{N-1} the pipeline's first step is DDIM: not a reconstruction (in mode bits a fresh
    # run must fit data_bound = 64; convention 'ddim''s latent of this random tiny UNet exceeds it, see the docs)
    if mode != "bits" or convention == "lagged":
        plain = pipe("a cat", num_inference_steps=7, height=16, width=16, guidance_scale=1.0,
                     latents=inv.state.x.clone(), output_type="latent").images
        assert float((plain - z0).norm() / z0.norm()) > 1e-3
    pipe.scheduler.load_state(invert(pipe, sample_images(1), "a cat", num_steps=5, mode=mode))
    with pytest.raises(LatentMismatchError):
        pipe("a cat", num_inference_steps=7, height=16, width=16, latents=inv.state.x.clone(), output_type="latent")
    # a loaded latent with the right grid but without latents=state.x: fresh noise is refused, not sampled
    pipe.scheduler.load_state(inv.state)
    with pytest.raises(LatentMismatchError, match="pass latents=state.x"):
        pipe("a cat", num_inference_steps=7, height=16, width=16, guidance_scale=1.0, output_type="latent")


def test_add_noise_matches_forward_process(pipe):
    sched = BELMScheduler.from_config(pipe.scheduler.config)
    x0 = torch.randn(3, 4, 2, 2, dtype=torch.float64)
    noise = torch.randn(3, 4, 2, 2, dtype=torch.float64)
    t = torch.tensor([0, 500, 999])
    from linmultistep.backends.diffusers.grid import alphas_cumprod_from_config

    a = torch.from_numpy(alphas_cumprod_from_config(sched.config))[t].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(sched.add_noise(x0, noise, t), a.sqrt() * x0 + (1 - a).sqrt() * noise)
    assert torch.equal(sched.scale_model_input(x0, 10), x0)


@pytest.mark.parametrize("mode", [None, "recurrence"])
def test_inverse_scheduler_in_diffedit_pipeline_equals_core_invert(pipe, mode):
    """DiffEdit pairs each inverted latent with its position in the timesteps: the 'lagged'
    convention returns x_n at position n, as DDIMInverseScheduler does."""
    diffusers = pytest.importorskip("diffusers")
    if not hasattr(diffusers, "StableDiffusionDiffEditPipeline"):
        pytest.skip("this diffusers has no StableDiffusionDiffEditPipeline")
    inv = BELMInverseScheduler.from_config(pipe.scheduler.config, mode=mode, timestep_convention="lagged")
    de = diffusers.StableDiffusionDiffEditPipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
        scheduler=BELMScheduler.from_config(pipe.scheduler.config, mode=mode), inverse_scheduler=inv,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    de.set_progress_bar_config(disable=True)
    x = sample_images(1)
    out = de.invert(prompt="a cat", image=(x + 1) / 2, num_inference_steps=7, inpaint_strength=1.0,
                    guidance_scale=1.0, generator=torch.Generator().manual_seed(3)).latents
    # the same posterior sample DiffEdit drew, inverted by the core
    with torch.no_grad():
        img = de.image_processor.preprocess((x + 1) / 2)
        z0 = pipe.vae.encode(img).latent_dist.sample(torch.Generator().manual_seed(3)) * pipe.vae.config.scaling_factor
    grid = grid_from_config(inv, 7)
    core = lms.invert(UNetEps(pipe.unet, grid, "epsilon", encode_prompts(pipe, "a cat", 1)), z0.contiguous(), grid,
                      "obelm", mode=mode)
    assert torch.equal(out[0, 0], core.x[0])  # DiffEdit stacks its latents noise-most first
    assert same_entry(inv.state.window[6], core.window[6])


def test_inverse_scheduler_in_diffedit_with_ddims_timesteps_inverts_exactly(pipe):
    """The default convention in DiffEdit's own inversion loop, unchanged: its final latent is the
    exact latent's x_N, and the standard pipeline reconstructs DiffEdit's posterior sample from it."""
    diffusers = pytest.importorskip("diffusers")
    if not hasattr(diffusers, "StableDiffusionDiffEditPipeline"):
        pytest.skip("this diffusers has no StableDiffusionDiffEditPipeline")
    from diffusers import DDIMInverseScheduler

    inv = BELMInverseScheduler.from_config(pipe.scheduler.config, mode="recurrence")
    ref = DDIMInverseScheduler.from_config(pipe.scheduler.config)
    inv.set_timesteps(7)
    ref.set_timesteps(7)
    assert torch.equal(inv.timesteps, ref.timesteps)
    de = diffusers.StableDiffusionDiffEditPipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
        scheduler=BELMScheduler.from_config(pipe.scheduler.config, mode="recurrence"), inverse_scheduler=inv,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    de.set_progress_bar_config(disable=True)
    x = sample_images(1)
    out = de.invert(prompt="a cat", image=(x + 1) / 2, num_inference_steps=7, inpaint_strength=1.0,
                    guidance_scale=1.0, generator=torch.Generator().manual_seed(3)).latents
    with torch.no_grad():
        img = de.image_processor.preprocess((x + 1) / 2)
        z0 = pipe.vae.encode(img).latent_dist.sample(torch.Generator().manual_seed(3)) * pipe.vae.config.scaling_factor
    assert torch.equal(out[0, 0], inv.state.x[0])
    pipe.scheduler = BELMScheduler.from_config(pipe.scheduler.config, mode="recurrence")
    pipe.scheduler.load_state(inv.state)
    back = pipe("a cat", num_inference_steps=7, height=16, width=16, guidance_scale=1.0,
                latents=inv.state.x.clone(), output_type="latent").images
    assert float((back - z0).norm() / z0.norm()) <= round_trip_bound(torch.float32, grid_from_config(pipe.scheduler, 7))


def test_a_scheduler_keeps_grids_per_config_value_for_value():
    """set_timesteps reuses a grid only for the same config and steps: two trained_betas differing only in
    the middle of a long array (which an array's repr elides) give their own grids, equal to grid_from_config."""
    import numpy as np

    betas = np.linspace(1e-4, 0.02, 2000)
    other = betas.copy()
    other[1000] *= 1.5
    grids = []
    for b in (betas, other, betas.tolist(), other.tolist()):
        s = BELMScheduler(num_train_timesteps=2000, trained_betas=b)
        s.set_timesteps(20)
        want = grid_from_config(s.config, 20)
        assert np.array_equal(s.grid.alpha, want.alpha)
        assert np.array_equal(s.grid.timesteps, want.timesteps, equal_nan=True)  # (the clean point: NaN)
        grids.append(s.grid)
    assert not np.array_equal(grids[0].alpha, grids[1].alpha)
    a, b = BELMScheduler(beta_schedule="scaled_linear"), BELMScheduler(beta_schedule="scaled_linear")
    a.set_timesteps(12)
    b.set_timesteps(12)
    assert a.grid is b.grid  # the same plain config and steps: one grid
