"""Grouped settings (issue 25 item 4), flow models from the CLI by name, the library-side image-size
guardrail (issue 22), and the reconstruct flags --approximate / --allow-legacy (issue 19)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from PIL import Image  # noqa: E402

from linmultistep.backends.diffusers import edit, generate, invert, load_latent, reconstruct, save_latent  # noqa: E402
from linmultistep.backends.diffusers.images import ImageSizeError  # noqa: E402
from linmultistep.backends.diffusers.settings import EditSettings, InversionSettings  # noqa: E402
from linmultistep.backends.diffusers.testing import sample_images  # noqa: E402
from linmultistep.cli import main  # noqa: E402

QUIET = ["--quiet", "--threads", "1"]


ONE_TORCH_THREAD = True  # conftest._one_torch_thread: one intra-op thread for this module


# --- settings -----------------------------------------------------------------------------------------
def test_settings_and_keyword_shortcuts_compute_the_same_latent(pipe):
    x = sample_images(1)
    by_keywords = invert(pipe, x, "a cat", num_steps=4, method="edict", progress=False)
    settings = InversionSettings(num_steps=4, method="edict")
    by_settings = invert(pipe, x, "a cat", settings=settings, progress=False)
    assert by_settings.method == by_keywords.method and by_settings.fingerprint == by_keywords.fingerprint
    assert all(torch.equal(a, b) for a, b in zip(by_settings.named_arrays().values(), by_keywords.named_arrays().values()))
    # a keyword overrides the same field of the settings: 6 steps, not 4
    assert invert(pipe, x, "a cat", settings=settings, num_steps=6, progress=False).metadata["num_steps"] == 6
    # the same settings object serves reconstruct (None fields: the latent's), edit and generate
    rec = reconstruct(pipe, by_settings, settings=InversionSettings(), progress=False)
    assert float((rec.latents - reconstruct(pipe, by_settings, progress=False).latents).abs().max()) == 0.0
    a = edit(pipe, x, "a cat", "a dog", settings=settings, editing=EditSettings(strength=0.5), guidance_scale=2.0,
             progress=False).latents
    b = edit(pipe, x, "a cat", "a dog", num_steps=4, method="edict", strength=0.5, guidance_scale=2.0, progress=False).latents
    assert torch.equal(a, b)
    g = generate(pipe, "a cat", settings=InversionSettings(num_steps=3), generator=torch.Generator().manual_seed(0),
                 progress=False)
    assert g.latents.shape == g.noise.shape


@pytest.mark.bad_input("9 unclear errors")
def test_unknown_or_unused_settings_are_refused_by_name(pipe):
    x = sample_images(1)
    with pytest.raises(TypeError, match="invert\\(\\) got an unexpected keyword argument 'num_step'"):
        invert(pipe, x, "a cat", num_step=4)
    with pytest.raises(TypeError, match="reconstruct\\(\\) takes no state_dtype"):
        reconstruct(pipe, invert(pipe, x, "a cat", num_steps=2, progress=False), state_dtype=torch.float64)
    with pytest.raises(TypeError, match="generate\\(\\) takes no resize"):
        generate(pipe, "a cat", num_steps=2, resize="down")
    with pytest.raises(TypeError, match="settings must be an InversionSettings"):
        invert(pipe, x, "a cat", settings={"num_steps": 4})
    with pytest.raises(TypeError, match="editing must be an EditSettings"):
        edit(pipe, x, "a", "b", editing=0.5)


# --- the library's image-size guardrail --------------------------------------------------------------
@pytest.mark.bad_input("2 resources")
def test_invert_and_edit_refuse_images_far_from_the_trained_size_with_the_cost(pipe):
    """The tiny pipeline is trained (sample_size 8, VAE factor 2) at 16x16; 64x64 is 16x its pixels."""
    big = sample_images(1, size=64)
    with pytest.raises(ImageSizeError, match=r"64x64 pixels, but the model was trained at 16x16 \(16x the pixels; "
                                             r"each network call would cost about 16x .*allow_size_mismatch=True"):
        invert(pipe, big, "a cat", num_steps=2)
    with pytest.raises(ImageSizeError, match="trained at 16x16"):
        edit(pipe, big, "a cat", "a dog", num_steps=2)
    # asked for: it runs (and round-trips exactly, as at any size)
    latent = invert(pipe, big, "a cat", num_steps=2, allow_size_mismatch=True, progress=False)
    assert tuple(latent.x.shape[-2:]) == (32, 32)
    # within a factor 4 of the pixels: no refusal
    invert(pipe, sample_images(1, size=32), "a cat", num_steps=2, progress=False)


# --- reconstruct --approximate / --allow-legacy ---------------------------------------------------------
@pytest.fixture(scope="module")
def digits_png(tmp_path_factory):
    from linmultistep.backends.digits import load_heldout, load_pipeline

    d = tmp_path_factory.mktemp("digits")
    x, y = load_heldout()
    k = int((y == 3).nonzero()[0, 0])
    p = d / "d3.png"
    Image.fromarray(((x[k, 0] + 1) * 127.5).round().byte().numpy(), "L").save(p)
    return p, load_pipeline()


def test_reconstruct_approximate_samples_a_latent_of_another_environment(digits_png, tmp_path, capsys):
    from linmultistep.backends.diffusers.environment import ENVIRONMENT_KEY

    png, pipe = digits_png
    assert main(["invert", "--model", "digits", str(png), "--prompt", "3", "--steps", "5", "--mode", "bits",
                 "-o", str(tmp_path / "l.safetensors"), *QUIET]) == 0
    latent = load_latent(tmp_path / "l.safetensors")
    env = dict(latent.metadata[ENVIRONMENT_KEY])
    # another machine, played by another probe digest (its network computes other bits)
    env["probe"] = {**env["probe"], "digest": "0" * len(str(env["probe"]["digest"]))}
    env["cpu_capability"] = "elsewhere"
    save_latent(dataclasses.replace(latent, metadata={**latent.metadata, ENVIRONMENT_KEY: env}),
                tmp_path / "foreign.safetensors")
    argv = ["reconstruct", "--model", "digits", str(tmp_path / "foreign.safetensors"), *QUIET]
    assert main(argv + ["-o", str(tmp_path / "exact.png")]) != 0  # refused up front
    assert not (tmp_path / "exact.png").exists()
    capsys.readouterr()
    with pytest.warns(UserWarning, match="expected error"):
        assert main(argv + ["--approximate", "-o", str(tmp_path / "approx.png")]) == 0
    a = np.asarray(Image.open(tmp_path / "approx.png"), dtype=np.int64)
    b = np.asarray(Image.open(png), dtype=np.int64)
    assert np.abs(a - b).max() <= 1  # this machine's network is the inversion's: within PNG rounding


def test_reconstruct_allow_legacy_reads_a_file_without_digest(digits_png, tmp_path, capsys):
    from safetensors import safe_open
    from safetensors.torch import save_file

    png, _ = digits_png
    path = tmp_path / "l.safetensors"
    assert main(["invert", "--model", "digits", str(png), "--prompt", "3", "--steps", "4", "-o", str(path), *QUIET]) == 0
    with safe_open(str(path), framework="pt") as fh:
        meta = {k: v for k, v in fh.metadata().items() if k != "digest"}
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    save_file(tensors, str(tmp_path / "legacy.safetensors"), metadata=meta)
    argv = ["reconstruct", "--model", "digits", str(tmp_path / "legacy.safetensors"), *QUIET]
    assert main(argv + ["-o", str(tmp_path / "refused.png")]) != 0
    assert "no integrity digest" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="without integrity digest"):
        assert main(argv + ["--allow-legacy", "-o", str(tmp_path / "r.png")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "r.png")), np.asarray(Image.open(png)))


# --- flow models from the CLI by name ----------------------------------------------------------------
@pytest.fixture(scope="module")
def flow_pngs(tmp_path_factory):
    pytest.importorskip("transformers")
    from linmultistep.backends.mnist_flow import MODEL_DIR
    from linmultistep.backends.mnist_sd import load_heldout

    if not (MODEL_DIR / "model_index.json").is_file():
        pytest.skip("the trained mnist-flow folder is not shipped in this checkout")
    d = tmp_path_factory.mktemp("flow")
    images, _, caps = load_heldout()
    paths = []
    for k in range(2):
        p = d / f"h{k}.png"
        Image.fromarray(((images[k, 0] + 1) * 127.5).round().byte().numpy(), "L").save(p)
        paths.append(p)
    return paths, caps[:2]


def test_mnist_flow_by_name_inverts_reconstructs_edits_and_generates(flow_pngs, tmp_path):
    paths, caps = flow_pngs
    latent = tmp_path / "f.safetensors"
    assert main(["invert", "--model", "mnist-flow", *map(str, paths), "--prompt", *caps, "--steps", "6",
                 "--guidance-scale", "3", "--state-dtype", "float64", "-o", str(latent), *QUIET]) == 0
    state = load_latent(latent)
    assert state.metadata["path"] == "flow" and state.metadata["max_sequence_length"] == 16
    assert main(["reconstruct", "--model", "mnist-flow", str(latent), "-o", str(tmp_path / "r.png"), *QUIET]) == 0
    # float64 states and an exact method: the round trip is the VAE's; compare with the API on the same files
    from linmultistep.backends.diffusers import flow_pipeline
    from linmultistep.backends.diffusers.models import load_pipeline

    pipe = load_pipeline("mnist-flow", quiet=True)
    api = flow_pipeline.reconstruct(pipe, state, output_type="pil", progress=False).images
    for k in range(2):
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"r_{k}.png")), np.asarray(api[k]))
    targets = [c.replace(c.split()[3], "one") for c in caps]
    assert main(["edit", "--model", "mnist-flow", *map(str, paths), "--source-prompt", *caps, "--target-prompt",
                 *targets, "--per-image-targets", "--steps", "6", "--guidance-scale", "3", "--source-guidance-scale", "3",
                 "-o", str(tmp_path / "e.png"), *QUIET]) == 0
    assert len(list(tmp_path.glob("e_*.png"))) == 2
    assert main(["generate", "--model", "mnist-flow", "--prompt", "a thick wide one upright", "--steps", "4",
                 "--count", "2", "-o", str(tmp_path / "g.png"), *QUIET]) == 0
    assert Image.open(tmp_path / "g_0.png").size == (32, 32)


@pytest.mark.bad_input("10 cli")
def test_unet_only_edit_options_are_refused_for_a_flow_model(flow_pngs, tmp_path, capsys):
    paths, caps = flow_pngs
    code = main(["edit", "--model", "mnist-flow", str(paths[0]), "--source-prompt", caps[0], "--target-prompt", caps[0],
                 "--steps", "4", "--cross-attention-steps", "0.5", "-o", str(tmp_path / "e.png"), *QUIET])
    assert code != 0 and "--cross-attention-steps: UNet models only" in capsys.readouterr().err
