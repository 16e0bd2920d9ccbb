"""The shipped mnist-flow model (Stable Diffusion 3 architecture, rectified flow), loaded offline.

Plain diffusers loads it; exact samplers round-trip its latents (float64 <= 1e-10 relative, mode
'bits' exactly 0) while Euler inversion does not; Euler samples of a fixed seed are judged as their
digit by mnist-sd's judge (trained on held-out images only); missing or damaged folders are named.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import linmultistep as lms  # noqa: E402
from linmultistep.backends import mnist_flow  # noqa: E402

if not (mnist_flow.MODEL_DIR / "model_index.json").is_file():
    pytest.skip("the mnist-flow weights are not shipped in this checkout", allow_module_level=True)

from linmultistep.backends.diffusers.flow_pipeline import (  # noqa: E402
    decode_latents, encode_images, flow_parts_of, velocity_for,
)
from linmultistep.backends.diffusers.flow_schedulers import FlowBELMInverseScheduler  # noqa: E402
from linmultistep.backends.mnist_sd import load_heldout, load_judge  # noqa: E402

MSL = mnist_flow.MAX_SEQUENCE_LENGTH


@pytest.fixture(scope="module")
def pipe():
    torch.set_num_threads(2)
    return mnist_flow.load_pipeline()


@pytest.fixture(scope="module")
def heldout_latents(pipe):
    images, _, captions = load_heldout()
    return encode_images(flow_parts_of(pipe), images[:4]).double(), captions[:4]


def test_plain_diffusers_loads_the_folder_offline():
    from diffusers import DiffusionPipeline, StableDiffusion3Pipeline

    p = DiffusionPipeline.from_pretrained(str(mnist_flow.MODEL_DIR), text_encoder_3=None, tokenizer_3=None,
                                          local_files_only=True)
    assert isinstance(p, StableDiffusion3Pipeline)
    assert type(p.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler" and p.scheduler.config.shift == 3.0


def test_the_built_in_name_resolves_for_api_and_cli():
    from linmultistep.backends.diffusers.models import builtin_model, resolve_model

    assert resolve_model("mnist-flow") == mnist_flow.MODEL_DIR
    assert builtin_model("mnist-flow").guidance_scale == 3.0


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_exact_samplers_round_trip_heldout_latents_and_euler_does_not(pipe, heldout_latents, guidance):
    z, captions = heldout_latents
    field, grid = velocity_for(pipe, captions, tuple(z.shape), 10, guidance_scale=guidance, max_sequence_length=MSL)
    scale = float(z.abs().max())
    for method in ("obelm", "bdia", "edict"):
        back = lms.sample(field, lms.invert(field, z, grid, method), grid, method)
        assert float((back - z).abs().max()) / scale <= 1e-10, method
    z32 = z.float()
    bits = lms.invert(field, z32, grid, "obelm", mode="bits")
    # mode 'bits' returns the data's fixed-point image to the last bit; with the default flow coordinates
    # (x / (1 - b t): a 1 / (1 - b) wider range at the noise end) its grid 2^-Sx can be coarser than the
    # float32 ulp of entries near 0: the image is z32 to 2^-30 of its range (docs/precision.md)
    inv = FlowBELMInverseScheduler.from_config(pipe.scheduler.config, mode="bits")
    inv.set_timesteps(10)
    assert inv.grid.fingerprint == grid.fingerprint
    image = inv.fixed_point_data(z32)
    assert torch.equal(lms.sample(field, bits, grid, "obelm", mode="bits"), image)
    assert float((image - z32).abs().max()) <= 2.0**-30 * scale
    euler = lms.sample(field, lms.invert(field, z, grid, "ddim"), grid, "ddim")
    assert float((euler - z).abs().max()) / scale > 1e-3  # DDIM/Euler inversion is not the sampler's inverse


def test_euler_samples_of_a_fixed_seed_are_judged_as_their_digit(pipe):
    digits = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    prompts = [f"a thick wide {d} upright" for d in digits] * 2
    z1 = torch.randn((len(prompts), 4, 8, 8), generator=torch.Generator().manual_seed(0))
    field, grid = velocity_for(pipe, prompts, tuple(z1.shape), 28, guidance_scale=3.0, max_sequence_length=MSL)
    x = decode_latents(flow_parts_of(pipe), lms.sample(field, z1, grid, "ddim"))
    pred = np.asarray(load_judge().predict(x)["digit"])
    # benchmarks/mnist_flow_figures.py measures 28-step Euler samples; a fixed seed of 20 must mostly land
    assert (pred == np.arange(len(prompts)) % 10).mean() >= 0.8


@pytest.mark.bad_input("9 unclear errors")
def test_missing_or_damaged_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no mnist-flow model folder"):
        mnist_flow.load_pipeline(tmp_path / "absent")
    broken = tmp_path / "broken"
    shutil.copytree(mnist_flow.MODEL_DIR, broken)
    (broken / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="transformer/diffusion_pytorch_model.safetensors"):
        mnist_flow.load_pipeline(broken)
    (broken / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="cannot load the model"):
        mnist_flow.load_pipeline(broken)
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="expected 'StableDiffusion3Pipeline'"):
        mnist_flow.load_pipeline(broken)
