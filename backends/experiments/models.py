"""Which subject and which experiment list a ``--model`` value means.

- ``digits`` (or a folder with the digits model's ``classifier/`` and ``heldout.safetensors``): the
  class-conditional pixel model with its classifier as the judge.
- ``mnist-sd`` (or a Stable Diffusion folder with ``judge/`` and ``heldout.safetensors``): the latent
  text-to-image model with mnist-sd's judge, held-out digits and captions.
- ``mnist-flow`` (or an SD3 folder): the rectified-flow model on mnist-sd's held-out data and judge.
- any other local diffusers folder with ``--images``: the experiments that need no judge.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

from .subjects import ClassifierJudge, FlowSubject, Heldout, UNetSubject

__all__ = ["subject_for", "family_of", "caption_classes"]


def caption_classes(captions: Sequence[str], words: dict[str, Sequence[str]]) -> dict[str, torch.Tensor]:
    """The class of each attribute head named by each caption (the index of its word)."""
    out = {}
    for head, options in words.items():
        if head == "digit":
            continue
        found = []
        for c in captions:
            hits = [k for k, w in enumerate(options) if f" {w}" in f" {c}"]
            if len(hits) != 1:
                raise ValueError(f"caption {c!r} names {len(hits)} of the {head} words {tuple(options)}, expected one")
            found.append(hits[0])
        out[head] = torch.tensor(found)
    return out


def _class_name(folder: Path) -> str:
    try:
        return str(json.loads((folder / "model_index.json").read_text()).get("_class_name", ""))
    except (OSError, ValueError):
        return ""


def family_of(model: str) -> str:
    """'digits', 'mnist-sd', 'mnist-flow' or 'generic' for a built-in name or a folder."""
    from ..diffusers.models import resolve_model

    if model in ("digits", "mnist-sd", "mnist-flow"):
        return model
    folder = resolve_model(model)
    if (folder / "classifier").is_dir() and (folder / "heldout.safetensors").is_file():
        return "digits"
    if (folder / "judge").is_dir() and (folder / "heldout.safetensors").is_file():
        return "mnist-sd"
    if _class_name(folder) == "StableDiffusion3Pipeline" and (folder / "transformer").is_dir():
        return "mnist-flow"
    return "generic"


def _words() -> dict[str, Sequence[str]]:
    from ..mnist_sd.data import ATTRIBUTES, DIGIT_WORDS

    return {"digit": DIGIT_WORDS, **ATTRIBUTES}


def _mnist_heldout(folder: "str | Path | None" = None) -> Heldout:
    from ..mnist_sd import load_heldout

    images, labels, caps = load_heldout(folder)
    return Heldout(images, list(caps), {"digit": labels, **caption_classes(caps, _words())})


def subject_for(model: str, images: "Sequence[str] | None" = None, prompt: str = "") -> tuple[Any, list[str]]:
    """(subject, report header lines) for a ``--model`` value; ``images``/``prompt`` for other folders."""
    from ..diffusers.models import resolve_model

    family = family_of(model)
    folder = resolve_model(model)
    if family == "digits":
        from ..digits import load_classifier, load_heldout, load_pipeline

        pipe = load_pipeline(model)
        pipe.set_progress_bar_config(disable=True)
        x, labels = load_heldout(model)
        subj = UNetSubject(pipe, str(model), 2.0, Heldout(x, labels.tolist(), {"digit": labels}),
                           ClassifierJudge(load_classifier(model)), text=False)
        subj.prompt_note = "labels 0..9 in turn"
        info = _training(folder)
        return subj, [f"# The seeds' experiments on the {model} model", "",
                      f"Model: `{folder}` (trained {info.get('steps', '?')} steps, seed {info.get('seed', '?')}). "
                      f"Held-out digits: {len(x)} (never seen in training). Guidance where used: the null class as "
                      "the unconditional half. Pixel space: the autoencoder floor is 0.", ""]
    if family == "mnist-sd":
        from ..mnist_sd import load_judge, load_pipeline

        pipe = load_pipeline(model)
        held = _mnist_heldout(model)
        subj = UNetSubject(pipe, str(model), 3.0, held, load_judge(model), text=True, edit_words=_words())
        subj.prompt_note = "digit k mod 10 with seeded random attributes, mnist_sd.evaluate.prompts_for"
        return subj, [f"# The seeds' experiments on the {model} model (latent text-to-image, Stable Diffusion architecture)", "",
                      f"Model: `{folder}`. Held-out digits: {len(held.images)} with their measured captions (never seen "
                      "in training); judge: mnist-sd's own classifier of digit, thickness, width and slant. Guidance: "
                      "classifier-free against the empty prompt.", ""]
    if family == "mnist-flow":
        from ..diffusers.models import load_pipeline
        from ..mnist_flow import MAX_SEQUENCE_LENGTH
        from ..mnist_sd import load_judge

        pipe = load_pipeline(model)
        pipe.set_progress_bar_config(disable=True)
        held = _mnist_heldout()
        subj = FlowSubject(pipe, str(model), 3.0, held, load_judge(), MAX_SEQUENCE_LENGTH, edit_words=_words())
        subj.prompt_note = "digit k mod 10 with seeded random attributes, mnist_sd.evaluate.prompts_for"
        return subj, [f"# The seeds' experiments on the {model} model (rectified flow, Stable Diffusion 3 architecture)", "",
                      f"Model: `{folder}`. Data, captions and judge: mnist-sd's ({len(held.images)} held-out digits). "
                      "Euler is the DDIM method on the flow grid (the scheduler's own sampler); guidance: "
                      "classifier-free against the empty prompt.", ""]
    # any other local folder: the given images, no judge
    from ..diffusers.cli import load_pipeline
    from ..diffusers.images import to_tensor
    from ..diffusers.pipeline import parts_of

    if not images:
        raise ValueError(f"{folder} ships no judge and held-out data (only the digits, mnist-sd and mnist-flow models "
                         "do): give --images (and --prompt) to run the reconstruction and interpolation experiments")
    pipe = load_pipeline(model)
    parts = parts_of(pipe)
    x, _ = to_tensor(list(images), parts.size_multiple, "nearest", channels=parts.channels)
    subj = UNetSubject(pipe, str(model), 2.0, Heldout(x, [prompt] * len(x)), None, text=True)
    subj.prompt_note = repr(prompt)
    return subj, [f"# The seeds' experiments on `{folder}`", "",
                  f"{len(x)} images, prompt {prompt!r}. Pixel MSE after the model's autoencoder (if any): exact samplers "
                  "sit at the autoencoder floor. No generation-quality table: it needs a judge, which only the shipped "
                  "models have.", ""]


def _training(folder: Path) -> dict:
    f = folder / "training.json"
    return json.loads(f.read_text()) if f.is_file() else {}
