"""mnist-sd folder builder: with tiny random weights (nothing trains), the folder it writes is a plain
Stable Diffusion folder that diffusers loads offline; the loaders give clear errors for bad folders."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from linmultistep.backends.mnist_sd import check_folder, load_heldout, load_judge, load_pipeline  # noqa: E402
from linmultistep.backends.mnist_sd.build import write_heldout, write_pipeline_folder  # noqa: E402
from linmultistep.backends.mnist_sd.data import AttributeBins, captions, to_unit_range  # noqa: E402
from linmultistep.backends.mnist_sd.text import MAX_LENGTH, TEXT_CONFIG  # noqa: E402
from linmultistep.backends.mnist_sd.train import SCHEDULER_CONFIG, VAE_CONFIG, alphas_cumprod, encode_prompts  # noqa: E402

PROMPT = "a thick wide seven slanted left"


def tiny_parts():
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    vae = AutoencoderKL(**{**VAE_CONFIG, "block_out_channels": (8, 8, 8), "norm_num_groups": 4})
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 16),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=TEXT_CONFIG["hidden_size"], attention_head_dim=4, norm_num_groups=8)
    return vae, unet


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("mnistsd") / "model"
    vae, unet = tiny_parts()
    write_pipeline_folder(out, vae, unet)
    return out


def test_plain_diffusers_loads_the_folder_offline(folder):
    from diffusers import DDIMScheduler, DiffusionPipeline, StableDiffusionPipeline

    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None] and index["feature_extractor"] == [None, None]
    for cls in (StableDiffusionPipeline, DiffusionPipeline):
        pipe = cls.from_pretrained(str(folder), local_files_only=True)
        assert type(pipe) is StableDiffusionPipeline and pipe.safety_checker is None
    assert isinstance(pipe.scheduler, DDIMScheduler)
    # Stable Diffusion v1's schedule: scaled_linear 0.00085..0.012 over 1000 steps
    np.testing.assert_allclose(pipe.scheduler.alphas_cumprod.double().numpy(), alphas_cumprod().numpy(), rtol=1e-6)
    assert pipe.scheduler.config.steps_offset == SCHEDULER_CONFIG["steps_offset"] == 1
    assert pipe.vae_scale_factor == 4 and pipe.unet.config.sample_size * pipe.vae_scale_factor == 32


def test_pipeline_encodes_prompts_as_training_does(folder):
    pipe = load_pipeline(folder)
    cond, uncond = pipe.encode_prompt([PROMPT, ""], device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True,
                                      negative_prompt=None)
    assert cond.shape == (2, MAX_LENGTH, TEXT_CONFIG["hidden_size"])
    ours = encode_prompts(pipe.tokenizer, pipe.text_encoder, [PROMPT, ""])
    torch.testing.assert_close(cond, ours, rtol=0, atol=0)
    # SD's unconditional branch is the empty prompt, which is what prompt dropout trains
    torch.testing.assert_close(uncond[0], ours[1], rtol=0, atol=0)
    assert not torch.equal(ours[0], ours[1])


def test_pipeline_generates_32x32_grey_images_with_guidance(folder):
    pipe = load_pipeline(folder)
    out = pipe([PROMPT, "a thin narrow one upright"], num_inference_steps=2, guidance_scale=3.0, output_type="np",
               generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, 32, 32, 1) and np.isfinite(out.images).all()


def test_heldout_round_trips_exactly(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (20, 1, 32, 32))
    images = to_unit_range(pixels)
    labels = np.arange(20) % 10
    bins = AttributeBins(thickness=1.0, slant=(-0.1, 0.1), width=[15.5] * 10)
    write_heldout(tmp_path, images, labels, np.arange(20) * 3, bins)
    x, y, caps = load_heldout(tmp_path)
    assert torch.equal(x, torch.from_numpy(images)) and y.tolist() == labels.tolist()
    assert caps == captions(images, labels, bins)


@pytest.mark.bad_input("6 files")
def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no mnist-sd model folder at .*nowhere"):
        load_pipeline(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no held-out data at"):
        load_heldout(tmp_path)
    with pytest.raises(FileNotFoundError, match="no judge weights at"):
        load_judge(tmp_path)


@pytest.mark.bad_input("6 files")
def test_incomplete_folder_names_the_missing_files(folder, tmp_path):
    import shutil

    broken = tmp_path / "m"
    shutil.copytree(folder, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (broken / "tokenizer" / "merges.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing unet/diffusion_pytorch_model.safetensors, tokenizer/merges.txt"):
        load_pipeline(broken)


@pytest.mark.bad_input("6 files")
def test_corrupt_weights_are_a_clear_error(folder, tmp_path):
    import shutil

    broken = tmp_path / "m"
    shutil.copytree(folder, broken)
    w = broken / "vae" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"cannot load the model in .*m"):
        load_pipeline(broken)


@pytest.mark.bad_input("6 files")
def test_a_folder_of_another_pipeline_is_refused(folder, tmp_path):
    import shutil

    broken = tmp_path / "m"
    shutil.copytree(folder, broken)
    index = json.loads((broken / "model_index.json").read_text())
    (broken / "model_index.json").write_text(json.dumps({**index, "_class_name": "DDIMPipeline"}))
    with pytest.raises(ValueError, match=r"names 'DDIMPipeline', expected 'StableDiffusionPipeline'"):
        check_folder(broken)
    (broken / "model_index.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"model_index.json is not valid JSON"):
        check_folder(broken)
