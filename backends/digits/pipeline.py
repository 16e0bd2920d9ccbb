"""``DigitsPipeline``: diffusers' DDIMPipeline layout (unet + scheduler) with class labels.

The shipped folder's ``model_index.json`` names ``["digits_pipeline", "DigitsPipeline"]``, diffusers'
convention for a pipeline class outside diffusers, so plain diffusers loads this class:

    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)   # a DigitsPipeline
    images = pipe(class_labels=[3, 5], num_inference_steps=20).images       # a 3 and a 5

(diffusers asks for ``trust_remote_code=True`` because the folder holds a ``.py`` file; that file
only imports this class from the installed package.) ``DigitsPipeline.from_pretrained(folder)``
builds the same pipeline from the folder's components without running the file. Sampling uses
any method of linmultistep, with classifier-free guidance through the null class.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from diffusers import DDIMPipeline
from diffusers.utils import BaseOutput

from ..diffusers.generation import generate

__all__ = ["DigitsPipeline", "DigitsPipelineOutput"]


class DigitsPipelineOutput(BaseOutput):
    """``images``: PIL images (``output_type='pil'``) or a (B, 1, 8, 8) tensor in [-1, 1] (``'pt'``)."""

    images: Any


class DigitsPipeline(DDIMPipeline):
    """A class-conditional ``UNet2DModel`` and its scheduler; ``pipe(class_labels)`` samples one digit per label."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, **kwargs: Any) -> "DigitsPipeline":  # type: ignore[override]
        """The pipeline from a local folder, built from its components (never downloads, runs no file of the
        folder). Keywords: ``torch_dtype`` (default float32); others of diffusers' loader are refused."""
        import json
        from pathlib import Path

        from ..diffusers.models import _components_into

        torch_dtype = kwargs.pop("torch_dtype", None) or torch.float32
        kwargs.pop("local_files_only", None)
        if kwargs:
            raise TypeError(f"DigitsPipeline.from_pretrained takes a local folder and torch_dtype=, "
                            f"got {sorted(kwargs)}")
        folder = Path(pretrained_model_name_or_path)
        index = json.loads((folder / "model_index.json").read_text())
        return _components_into(cls, folder, index, torch_dtype)

    @torch.no_grad()
    def __call__(  # type: ignore[override]
        self,
        class_labels: "int | Sequence[int] | None" = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 2.0,
        generator: torch.Generator | None = None,
        method: str = "obelm",
        output_type: str = "pil",
        return_dict: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Sample one digit per label (0-9) with ``method`` (any of linmultistep's) and classifier-free
        guidance ``guidance_scale`` (the null class is the unconditional branch). Other keywords go to
        [`generate`][linmultistep.backends.diffusers.generation.generate] (``mode``, ``noise``, ...)."""
        if class_labels is None:
            raise ValueError("DigitsPipeline is class-conditional: give class_labels, e.g. pipe(class_labels=[3, 5]) "
                             "for a 3 and a 5")
        labels = [class_labels] if isinstance(class_labels, int) else list(class_labels)
        images = generate(self, labels, num_steps=num_inference_steps, method=method, guidance_scale=guidance_scale,
                          generator=generator, output_type=output_type, **kwargs).images
        return DigitsPipelineOutput(images=images) if return_dict else (images,)
