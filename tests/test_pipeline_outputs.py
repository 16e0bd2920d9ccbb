"""diffusers conventions of the pipeline functions: typed results, tuples on request, progress bars
on by default and configured the diffusers way."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from linmultistep import State  # noqa: E402
from linmultistep.backends.diffusers import edit, invert, reconstruct  # noqa: E402
from linmultistep.backends.diffusers.generation import generate  # noqa: E402
from linmultistep.backends.diffusers.outputs import EditOutput, GenerationOutput, ReconstructionOutput  # noqa: E402
from linmultistep.backends.diffusers.pipeline import encode_images, parts_of  # noqa: E402
from linmultistep.backends.diffusers.testing import sample_images, tiny_sd_pipeline  # noqa: E402
from linmultistep.backends.diffusers.grid import grid_from_config  # noqa: E402
from bounds import round_trip_bound  # noqa: E402

X = sample_images(1)


def test_results_are_typed_and_tuples_on_request(pipe):
    latent = invert(pipe, X, "a cat", num_steps=3, progress=False)
    assert isinstance(latent, State) and len(repr(latent).splitlines()) == 1
    z0 = encode_images(parts_of(pipe), X)
    out = reconstruct(pipe, latent, progress=False)
    assert isinstance(out, ReconstructionOutput) and out.images.shape == X.shape
    bound = round_trip_bound(torch.float32, grid_from_config(pipe.scheduler, 3)) * float(z0.abs().max())
    assert torch.allclose(out.latents, z0, rtol=0, atol=bound)  # model space: exact up to float32 rounding
    images, latents = reconstruct(pipe, latent, return_dict=False, progress=False)
    assert torch.equal(images, out.images) and torch.equal(latents, out.latents)
    assert torch.equal(out[0], out.images)  # BaseOutput: index access by field order
    ed = edit(pipe, X, "a cat", "a cat", num_steps=3, guidance_scale=1.0, progress=False)
    assert isinstance(ed, EditOutput) and isinstance(ed.inversion, State)
    assert ed.inversion.metadata["prompt"] == "a cat"
    assert torch.allclose(reconstruct(pipe, ed.inversion, progress=False).latents, z0, rtol=0, atol=bound)  # the source back
    assert torch.equal(reconstruct(pipe, ed, progress=False).latents,  # an EditOutput stands for its inversion
                       reconstruct(pipe, ed.inversion, progress=False).latents)
    assert len(edit(pipe, X, "a cat", "a dog", num_steps=3, return_dict=False, progress=False)) == 3
    gen = generate(pipe, "a cat", num_steps=3, generator=torch.Generator().manual_seed(0), progress=False)
    assert isinstance(gen, GenerationOutput) and gen.noise.shape == gen.latents.shape
    again = generate(pipe, "a cat", num_steps=3, noise=gen.noise, progress=False)
    assert torch.equal(again.images, gen.images)  # the recorded noise samples the same images


def test_progress_is_on_by_default_and_follows_the_pipeline_config(capfd):
    pipe = tiny_sd_pipeline()
    pipe.set_progress_bar_config()  # the test helper turns bars off; a pipeline's default is on
    invert(pipe, X, "a cat", num_steps=3)
    assert "inverting (obelm, stable)" in capfd.readouterr().err
    pipe.set_progress_bar_config(disable=True)
    latent = invert(pipe, X, "a cat", num_steps=3)
    reconstruct(pipe, latent)
    assert capfd.readouterr().err == ""
    reconstruct(pipe, latent, progress=True)  # an explicit argument wins over the config
    assert "sampling (obelm, stable)" in capfd.readouterr().err
    pipe.set_progress_bar_config(desc="my run")
    reconstruct(pipe, latent)
    assert "my run" in capfd.readouterr().err
    reconstruct(pipe, latent, progress=False)
    assert capfd.readouterr().err == ""
