"""The shipped digits model: loading, exact reconstruction of held-out digits, sample quality, CLI.

Nothing here trains: every test loads the files that ship in linmultistep/backends/digits/model.
"""

from __future__ import annotations

import re

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import linmultistep as lms  # noqa: E402
from linmultistep.backends.diffusers import BELMScheduler, edit, invert, reconstruct  # noqa: E402
from linmultistep.backends.diffusers.adapters import UNetEps, encode_classes, null_class  # noqa: E402
from linmultistep.backends.diffusers.generation import generate  # noqa: E402
from linmultistep.backends.diffusers.grid import grid_from_config  # noqa: E402
from linmultistep.backends.digits import MODEL_DIR, load_classifier, load_heldout, load_pipeline  # noqa: E402
from linmultistep.backends.digits.data import HELDOUT_PER_CLASS  # noqa: E402
from strategies import cli_error  # noqa: E402
from bounds import round_trip_bound, unit_roundoff  # noqa: E402
from linmultistep.forms import DEFAULT_EPS_BOUND  # noqa: E402

ONE_TORCH_THREAD = True  # conftest: one torch thread for this module, restored after


@pytest.fixture(scope="module")
def digits(digits_pipe):
    images, labels = load_heldout()
    return digits_pipe, images, labels


def test_shipped_folder_is_a_plain_diffusers_model_under_budget():
    from diffusers import DiffusionPipeline

    size = sum(f.stat().st_size for f in MODEL_DIR.rglob("*") if f.is_file())
    assert size < 15e6
    pipe = DiffusionPipeline.from_pretrained(str(MODEL_DIR), local_files_only=True, trust_remote_code=True)
    assert type(pipe).__name__ == "DigitsPipeline"  # model_index.json names the project's pipeline class
    assert pipe.unet.config.num_class_embeds == 11 and null_class(pipe.unet) == 10
    info = json.loads((MODEL_DIR / "training.json").read_text())
    assert info["null_class"] == 10 and info["steps"] > 0


def test_heldout_split_is_balanced_and_never_trained_on(digits):
    _, images, labels = digits
    assert images.shape == (10 * HELDOUT_PER_CLASS, 1, 8, 8) and images.dtype == torch.float32
    assert torch.bincount(labels, minlength=10).tolist() == [HELDOUT_PER_CLASS] * 10
    assert float(images.min()) >= -1 and float(images.max()) <= 1
    pytest.importorskip("sklearn")
    from linmultistep.backends.digits.data import load_all, split_indices

    from safetensors.torch import load_file

    all_images, all_labels = load_all()
    train_idx, held_idx = split_indices(all_labels)
    recorded = load_file(str(MODEL_DIR / "heldout.safetensors"))["indices"].numpy()
    assert np.array_equal(recorded, held_idx) and not set(train_idx) & set(held_idx)
    assert np.array_equal(all_images[held_idx], images.numpy())


@pytest.mark.parametrize("method", ["obelm", "bdia", "edict"])
@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_exact_samplers_reconstruct_heldout_digits_float64(digits, method, guidance):
    pipe, images, labels = digits
    x = images[:6]
    latent = invert(pipe, x, labels[:6].tolist(), num_steps=20, method=method, guidance_scale=guidance,
                    state_dtype=torch.float64)
    back = reconstruct(pipe, latent).images
    assert float((back.double() - x.double()).norm() / x.double().norm()) <= 1e-10


@pytest.mark.parametrize("method", ["obelm", "bdia"])
def test_bits_mode_reconstructs_heldout_digits_exactly(digits, method):
    pipe, images, labels = digits
    x = images[10:16]
    latent = invert(pipe, x, labels[10:16].tolist(), num_steps=20, method=method, mode="bits", guidance_scale=2.0,
                    mode_options={"eps_bound": 128.0})
    assert torch.equal(reconstruct(pipe, latent).images, x)


def test_ddim_reconstruction_is_clearly_worse(digits):
    pipe, images, labels = digits
    x = images[:6]
    errs = {}
    for method in ("ddim", "obelm"):
        latent = invert(pipe, x, labels[:6].tolist(), num_steps=20, method=method, state_dtype=torch.float64)
        errs[method] = float((reconstruct(pipe, latent).images.double() - x.double()).pow(2).mean())
    assert errs["ddim"] > 1e-4 and errs["ddim"] > 1e6 * errs["obelm"]


def test_guided_samples_are_recognised_by_the_shipped_classifier(digits):
    """The stated rate: >= 90% of guided 50-step samples (seed 0) are classified as requested."""
    pipe, _, _ = digits
    classifier = load_classifier()
    labels = [k % 10 for k in range(50)]
    x = generate(pipe, labels, num_steps=50, guidance_scale=2.0, generator=torch.Generator().manual_seed(0)).images
    assert x.shape == (50, 1, 8, 8)
    acc = float((classifier.predict(x) == torch.tensor(labels)).float().mean())
    assert acc >= 0.9


def test_classifier_recognises_heldout_digits(digits):
    _, images, labels = digits
    assert float((load_classifier().predict(images) == labels).float().mean()) >= 0.97


def test_class_labels_play_the_role_of_the_prompt(digits):
    pipe, images, labels = digits
    with pytest.raises(ValueError, match="class label"):
        invert(pipe, images[:2], "a cat", num_steps=5)
    with pytest.raises(ValueError, match="out of range"):
        invert(pipe, images[:2], [3, 11], num_steps=5)
    with pytest.raises(ValueError, match="2 class labels for a batch of 3"):
        invert(pipe, images[:3], [1, 2], num_steps=5)
    with pytest.raises(ValueError, match="give a class label"):
        invert(pipe, images[:2], "", num_steps=5)
    latent = invert(pipe, images[:2], "7", num_steps=5, state_dtype=torch.float64)
    assert latent.metadata["prompt"] == "7"
    # a digit string, an int and a label tensor are the same conditioning
    a = encode_classes(pipe.unet, "7", 2, 2.0)
    b = encode_classes(pipe.unet, torch.tensor([7, 7]), 2, 2.0)
    assert torch.equal(a.cond, b.cond) and torch.equal(a.uncond, torch.full((2,), 10))


def test_guidance_uses_the_null_class(digits):
    """eps_guided = eps(null) + w (eps(c) - eps(null)), computed independently from the raw UNet."""
    pipe, images, _ = digits
    grid = grid_from_config(pipe.scheduler, 10)
    x = images[:3].double()
    eps = UNetEps(pipe.unet, grid, "epsilon", encode_classes(pipe.unet, [1, 2, 3], 3, 3.0))(x, 5)
    t = torch.tensor(int(grid.timestep(5)))
    with torch.no_grad():
        e_c = pipe.unet(x.float(), t, class_labels=torch.tensor([1, 2, 3])).sample.double()
        e_u = pipe.unet(x.float(), t, class_labels=torch.tensor([10, 10, 10])).sample.double()
    assert torch.allclose(eps, e_u + 3.0 * (e_c - e_u), atol=1e-5)


def test_belm_scheduler_with_class_labels_equals_the_core(digits):
    pipe, _, _ = digits
    sched = BELMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(12)
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 3, 5, 9])
    x = noise.clone()
    for t in sched.timesteps:
        with torch.no_grad():
            out = pipe.unet(x, t, class_labels=labels).sample
        x = sched.step(out, t, x).prev_sample
    ref = generate(pipe, labels, num_steps=12, noise=noise.clone()).images
    assert torch.equal(x.clamp(-1, 1), ref)


def test_edit_changes_the_class_and_same_class_edit_reproduces(digits):
    pipe, images, labels = digits
    x, src = images[:4], labels[:4].tolist()
    same = edit(pipe, x, src, src, num_steps=20, guidance_scale=1.0, source_guidance_scale=1.0,
                state_dtype=torch.float64).images
    # float64 states (their round trip, tests/bounds.py), one rounding to the float32 output, and the float32
    # network's last bits, which differ between the inversion's batch and the edit's (DI batch is 2B): x_0 moves
    # by sum_i |c_i w_i| ~ 2 sigmabar_N per unit of network output (docs/precision.md), |eps| <= DEFAULT_EPS_BOUND
    grid = grid_from_config(pipe.scheduler, 20)
    network = 2 * float(grid.sigmabar[-1]) * unit_roundoff(torch.float32) * DEFAULT_EPS_BOUND
    bound = round_trip_bound(torch.float64, grid) + unit_roundoff(torch.float32) + network
    assert float((same.double() - x.double()).abs().max()) <= bound * float(x.abs().max())
    tgt = [(a + 5) % 10 for a in src]
    out = edit(pipe, x, src, tgt, num_steps=20, guidance_scale=2.0).images
    assert float((load_classifier().predict(out) == torch.tensor(tgt)).float().mean()) >= 0.75


def test_cli_by_builtin_name_round_trips_a_png(tmp_path, digits):
    from PIL import Image

    from linmultistep.cli import main

    _, images, labels = digits
    png = tmp_path / "digit.png"
    Image.fromarray(((images[0, 0] + 1) * 127.5).round().byte().numpy(), "L").save(png)
    lat = tmp_path / "digit.safetensors"
    assert main(["invert", "--model", "digits", str(png), "--prompt", str(int(labels[0])), "--steps", "10",
                 "--mode", "bits", "--quiet", "-o", str(lat)]) == 0
    out = tmp_path / "back.png"
    assert main(["reconstruct", "--model", "digits", str(lat), "--quiet", "-o", str(out)]) == 0
    back = Image.open(out)
    assert back.mode == "L" and np.array_equal(np.asarray(back), np.asarray(Image.open(png)))


def test_missing_or_corrupt_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing unet/diffusion_pytorch_model.safetensors"):
        broken = tmp_path / "broken"
        shutil.copytree(MODEL_DIR, broken)
        (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
        load_pipeline(broken)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(MODEL_DIR, corrupt)
    (corrupt / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="cannot load the model in .*corrupt"):
        load_pipeline(corrupt)
    with pytest.raises(FileNotFoundError, match="not a complete digits model folder"):
        load_pipeline(tmp_path / "nowhere")


def test_reproduce_writes_a_report(tmp_path):
    from linmultistep.backends.experiments.definitions import DIGITS_SAMPLERS, definitions_for
    from linmultistep.backends.experiments.models import subject_for
    from linmultistep.backends.experiments.runner import run

    quick = {e.kind: e for e in definitions_for("digits", quick=True)}
    exps = [quick["reconstruction"].replace(steps=(5,), images=4, samplers=(DIGITS_SAMPLERS[0], DIGITS_SAMPLERS[7])),
            quick["edit"].replace(images=3, strengths=(1.0,), steps=(6,)), quick["interpolation"]]
    subject, header = subject_for("digits")
    report = run(exps, subject, tmp_path, progress=lambda _: None, threads=1, header=header)
    text = report.read_text()
    assert "Reconstruction" in text and "Editing" in text and "Interpolation" in text
    results = json.loads((tmp_path / "results.json").read_text())["experiments"]
    rec = results["reconstruction"]["result"]["pixel_mse"]["float32 w=1"]
    assert rec["O-BELM bits"]["5"] == 0.0 and rec["DDIM"]["5"] > 1e-4
    ends = results["interpolation"]["result"]["endpoint_error"]
    assert ends["O-BELM"] < 1e-10 < ends["DDIM"]
    for f in ("editing_digit_grid.png", "editing_digit_metrics.png", "interpolation.png"):
        assert (tmp_path / f).stat().st_size > 1000


def test_sample_quality_does_not_depend_on_the_method_name_only(digits):
    """DDIM and O-BELM from the same noise land near each other (same ODE) but not on the same bits."""
    pipe, _, _ = digits
    noise = torch.randn(10, 1, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    a = generate(pipe, list(range(10)), num_steps=50, noise=noise, method="ddim", state_dtype=torch.float64).images
    b = generate(pipe, list(range(10)), num_steps=50, noise=noise, method="obelm", state_dtype=torch.float64).images
    d = float((a - b).pow(2).mean().sqrt())
    assert 0 < d < 0.2


def test_reproduce_on_another_local_model(tmp_path, capsys):
    """The same command on a local text-to-image folder (the tiny Stable Diffusion pipeline)."""
    from PIL import Image

    from linmultistep.backends.diffusers.images import to_pil
    from linmultistep.backends.diffusers.testing import sample_images, tiny_sd_pipeline
    from linmultistep.cli import main

    tiny_sd_pipeline().save_pretrained(tmp_path / "sd")
    paths = []
    for k, im in enumerate(to_pil(sample_images(2, 16))):
        paths.append(tmp_path / f"im{k}.png")
        im.save(paths[-1])
    assert re.search("--images", cli_error(capsys, ["reproduce", "--model", str(tmp_path / "sd"), "--out", str(tmp_path / "r0")]))
    assert main(["reproduce", "--model", str(tmp_path / "sd"), "--quick", "--threads", "1", "--out", str(tmp_path / "r"),
                 "--images", *map(str, paths), "--prompt", "a cat"]) == 0
    results = json.loads((tmp_path / "r" / "results.json").read_text())["experiments"]
    rec = results["reconstruction"]["result"]["latent_mse"]["float32 w=1"]
    assert rec["O-BELM bits"]["10"] < rec["DDIM"]["10"]
    assert Image.open(tmp_path / "r" / "interpolation.png").size[0] > 100
