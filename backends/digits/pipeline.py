"""``DigitsPipeline``: diffusers' DDIMPipeline layout (unet + scheduler) with class labels.

The folder's ``model_index.json`` names ``DDIMPipeline``, so plain diffusers loads it too
(``DiffusionPipeline.from_pretrained(path)``); this subclass adds class-conditional sampling with
any method of linmultistep and classifier-free guidance through the null class.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from diffusers import DDIMPipeline
from diffusers.utils import BaseOutput

from ..diffusers.generate import generate

__all__ = ["DigitsPipeline", "DigitsPipelineOutput"]


class DigitsPipelineOutput(BaseOutput):
    images: Any


class DigitsPipeline(DDIMPipeline):
    @torch.no_grad()
    def __call__(  # type: ignore[override]
        self,
        class_labels: "int | Sequence[int]",
        num_inference_steps: int = 50,
        guidance_scale: float = 2.0,
        generator: torch.Generator | None = None,
        method: str = "obelm",
        output_type: str = "pil",
        return_dict: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Sample one digit per label with ``method`` (any of linmultistep's) and guidance."""
        labels = [class_labels] if isinstance(class_labels, int) else list(class_labels)
        images = generate(self, labels, num_steps=num_inference_steps, method=method, guidance_scale=guidance_scale,
                          generator=generator, output_type=output_type, **kwargs).images
        return DigitsPipelineOutput(images=images) if return_dict else (images,)
