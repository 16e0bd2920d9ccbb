"""Modes 'recurrence' / 'stable' / 'bits' through the diffusers pipeline API, latent files and schedulers."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import linmultistep as lms  # noqa: E402
from linmultistep import FixedPointRangeError, LatentMismatchError  # noqa: E402
from linmultistep.backends.diffusers import BELMScheduler, edit, invert, load_latent, reconstruct, save_latent  # noqa: E402
from linmultistep.backends.diffusers.adapters import UNetEps, encode_prompts  # noqa: E402
from linmultistep.backends.diffusers.grid import grid_from_config  # noqa: E402
from bounds import round_trip_bound  # noqa: E402
from linmultistep.backends.diffusers.pipeline import encode_images, parts_of  # noqa: E402
from linmultistep.backends.diffusers.testing import same_entry, sample_images  # noqa: E402


def test_invert_follows_the_core_default_mode(pipe):
    x = sample_images(1)
    assert invert(pipe, x, "a cat", num_steps=4).mode == "stable"  # O-BELM
    assert invert(pipe, x, "a cat", num_steps=4, method="ddim").mode == "recurrence"
    assert invert(pipe, x, "a cat", num_steps=4, mode="recurrence").mode == "recurrence"
    with pytest.raises(TypeError, match="mode_options"):
        invert(pipe, x, "a cat", num_steps=4, mode="bits", mode_options=256)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_bits_round_trip_through_the_pipeline_is_exact(pipe, guidance):
    x = sample_images(2)
    latent = invert(pipe, x, ["a cat", "a dog"], num_steps=6, guidance_scale=guidance, mode="bits")
    assert latent.mode == "bits"
    _, z0 = reconstruct(pipe, latent, return_dict=False)
    # 0 error in the latent: the reconstruction is the encoded input itself, bit for bit
    assert torch.equal(z0, encode_images(parts_of(pipe), x))


def test_bits_with_strong_guidance_needs_and_takes_a_larger_eps_bound(pipe):
    x = sample_images(1)
    # guidance 1000 amplifies eps_c - eps_u past the default bound |eps| <= 64: refused, with the way out
    with pytest.raises(FixedPointRangeError, match="mode_options"):
        invert(pipe, x, "a cat", num_steps=5, guidance_scale=1000.0, mode="bits")
    latent = invert(pipe, x, "a cat", num_steps=5, guidance_scale=1000.0, mode="bits", mode_options={"eps_bound": 1024})
    assert latent.mode == "bits(data_bound=64.0, eps_bound=1024.0)"
    _, z0 = reconstruct(pipe, latent, return_dict=False)
    assert torch.equal(z0, encode_images(parts_of(pipe), x))


@pytest.mark.parametrize("mode", ["stable", "bits"])
def test_latent_files_round_trip_every_mode_bit_for_bit(pipe, tmp_path, mode):
    x = sample_images(2)
    latent = invert(pipe, x, ["a cat", "a dog"], num_steps=5, guidance_scale=2.0, mode=mode)
    back = load_latent(save_latent(latent, tmp_path / "z.safetensors"))
    assert (back.mode, back.method, back.fingerprint, back.nfe) == (latent.mode, latent.method, latent.fingerprint, latent.nfe)
    assert set(back.window) == set(latent.window) == {4, 5}
    for i, e in latent.window.items():
        assert same_entry(e, back.window[i]) and type(e).__name__ == ("StableEntry" if mode == "stable" else "FixedEntry")
    assert torch.equal(reconstruct(pipe, back, output_type="pt").images, reconstruct(pipe, latent, output_type="pt").images)


def test_a_latent_of_another_mode_is_refused(pipe):
    x = sample_images(1)
    bits = invert(pipe, x, "a cat", num_steps=5, mode="bits")
    with pytest.raises(LatentMismatchError, match="mode 'bits'"):
        reconstruct(pipe, bits, mode="stable")
    sched = BELMScheduler.from_config(pipe.scheduler.config)  # the default mode: 'stable'
    with pytest.raises(LatentMismatchError, match="mode='bits'"):
        sched.load_state(bits)
    BELMScheduler.from_config(pipe.scheduler.config, mode=bits.mode).load_state(bits)  # the latent's own mode


def test_edit_to_the_same_prompt_reproduces_the_input_in_the_default_mode(pipe):
    x = sample_images(1)
    _, z0 = edit(pipe, x, "a cat", "a cat", num_steps=6, guidance_scale=1.0, output_type="pt", return_dict=False)[:2]
    ref = encode_images(parts_of(pipe), x)
    assert float((z0 - ref).norm() / ref.norm()) <= round_trip_bound(torch.float32, grid_from_config(pipe.scheduler, 6))


@pytest.mark.parametrize("mode", ["recurrence", "bits"])
def test_scheduler_started_mid_way_reads_the_form_state_off_a_ddim_step(pipe, mode):
    """img2img starts the scheduler below the noise end: one DDIM step, then the method, in every
    mode; the forms read v off the two points, so they agree with the recurrence to rounding."""
    grid = grid_from_config(pipe.scheduler, 8)
    f = UNetEps(pipe.unet, grid, "epsilon", encode_prompts(pipe, "a cat", 1))
    start = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    out = {}
    for m in ("recurrence", "stable", mode):
        sched = BELMScheduler.from_config(pipe.scheduler.config, mode=m)
        sched.set_timesteps(8)
        x = start.clone()
        for t in sched.timesteps[3:]:  # grid indices 5..1
            x = sched.step(f(x, sched._grid_index(t)), t, x).prev_sample
        out[m] = x
    # the core: one DDIM step 5 -> 4, then O-BELM from the window (x_5, x_4)
    x4 = lms.sample(lambda x, i: f(x, i), start.clone(), lms.Grid(grid.alpha[:6], grid.sigma[:6], grid.timesteps[:6]),
                    "ddim", stop=4)
    obelm = lms.get_method("obelm")
    ref = lms.sample(f, lms.State({5: lms.Point(start), 4: lms.Point(x4)}, obelm.spec, grid.fingerprint), grid, obelm, mode="recurrence")
    assert torch.equal(out["recurrence"], ref)
    assert float((out["stable"] - ref).norm() / ref.norm()) <= round_trip_bound(torch.float32, grid)
    assert float((out[mode] - ref).norm() / ref.norm()) <= round_trip_bound(torch.float32, grid)


@pytest.mark.parametrize("mode", ["recurrence", "stable", "bits"])
def test_inverse_scheduler_refuses_a_latent_changed_between_steps(pipe, mode):
    from linmultistep.backends.diffusers import BELMInverseScheduler

    inv = BELMInverseScheduler.from_config(pipe.scheduler.config, mode=mode)
    inv.set_timesteps(5)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g)
    t1, t2 = inv.timesteps[:2]
    x1 = inv.step(torch.randn(1, 4, 8, 8, generator=g), t1, x).prev_sample
    with pytest.raises(ValueError, match="not the one this scheduler returned"):
        inv.step(torch.randn(1, 4, 8, 8, generator=g), t2, x1 + 1e-3)


def test_bits_latents_can_be_edited(pipe):
    """An edit samples a bits latent with other network outputs by design: the reconstruction check
    (the first step's increment must equal the inversion's) does not apply, the edit runs."""
    x = sample_images(1)
    ref = encode_images(parts_of(pipe), x)
    _, same = edit(pipe, x, "a cat", "a cat", num_steps=6, guidance_scale=1.0, mode="bits",
                   output_type="pt", return_dict=False)[:2]
    assert float((same - ref).norm() / ref.norm()) <= round_trip_bound(torch.float32, grid_from_config(pipe.scheduler, 6))  # batched with the source branch: rounding apart
    _, dog = edit(pipe, x, "a cat", "a dog", num_steps=6, guidance_scale=3.0, mode="bits",
                  output_type="pt", return_dict=False)[:2]
    latent = invert(pipe, x, "a cat", num_steps=6, mode="bits")
    _, plain = reconstruct(pipe, latent, "a dog", return_dict=False)
    assert float((dog - ref).norm() / ref.norm()) > 1e-3 and float((plain - ref).norm() / ref.norm()) > 1e-3
