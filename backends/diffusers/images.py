"""Images in and out: PIL or float tensors in [-1, 1] of shape (B, 3, H, W).

Mode policy (every PIL mode becomes 8-bit RGB, nothing crashes):

- ``RGBA``, ``LA``, ``PA`` and ``P`` with transparency: alpha-composited on WHITE (what a viewer
  shows for a transparent PNG); the alpha channel itself is dropped.
- ``L`` / ``1``: grey replicated to R = G = B.
- ``I;16`` / ``I`` (16-bit or 32-bit grey): scaled by the file's bit depth to 0..255, then grey.
- ``F`` (float grey): assumed in [0, 1], clipped.
- ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``, ``P`` without transparency: PIL's own conversion to RGB.

Size policy: the VAE needs H and W to be multiples of ``multiple`` (the VAE downsampling
factor times what the UNet needs; 8 for Stable Diffusion 1.x/2.x). By default a wrong size is an
error naming the size; ``resize='down'`` / ``'up'`` / ``'nearest'`` resizes (Lanczos) to the
multiple below / above / nearest. Images are never silently cropped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["ImageSizeError", "load_image", "to_rgb", "to_tensor", "to_pil", "RESIZE_POLICIES"]

RESIZE_POLICIES = (None, "down", "up", "nearest")


class ImageSizeError(ValueError):
    """An image size the VAE/UNet cannot take (and no resize policy was requested)."""


def load_image(path: "str | os.PathLike") -> Any:
    """Open an image file fully (so it can be closed); a clear error names an unreadable file."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image file not found: {p}")
    try:
        with Image.open(p) as im:
            im.load()
            return im.copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot read image {p}: {exc}") from None


def to_rgb(image: Any) -> Any:
    """8-bit RGB version of a PIL image following the mode policy above (input unchanged)."""
    from PIL import Image

    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        arr = np.asarray(image, dtype=np.float64)
        if mode == "F":
            scale = 1.0
        else:
            top = float(arr.max()) if arr.size else 0.0
            scale = 65535.0 if (mode.startswith("I;16") or top > 255) else 255.0
            if top > 65535:
                scale = float(2**32 - 1)
        grey = np.clip(np.round(arr / scale * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    return image.convert("RGB")


def _target_size(w: int, h: int, multiple: int, resize: str | None) -> tuple[int, int]:
    if w % multiple == 0 and h % multiple == 0:
        return w, h
    if resize is None:
        raise ImageSizeError(
            f"image size {w}x{h} is not a multiple of {multiple} (needed by the VAE/UNet); "
            "pass resize='down', 'up' or 'nearest' to resize (images are never cropped)"
        )
    if resize not in RESIZE_POLICIES:
        raise ValueError(f"resize must be one of {RESIZE_POLICIES}, got {resize!r}")

    def fit(v: int) -> int:
        lo, hi = max(multiple, v // multiple * multiple), -(-v // multiple) * multiple
        return {"down": lo, "up": hi, "nearest": lo if v - lo <= hi - v else hi}[resize]

    return fit(w), fit(h)


def to_tensor(
    images: Any, multiple: int = 8, resize: str | None = None, name: str = "images", channels: int = 3
) -> tuple[torch.Tensor, str]:
    """(B, C, H, W) float32 tensor in [-1, 1] and the input kind ('pil' or 'pt'); C = ``channels``.

    Accepts a PIL image, a path, or a list of them (all of one size after the size policy), or a
    float tensor in [-1, 1] of shape (B, C, H, W) or (C, H, W) (returned as a copy, size checked).
    With ``channels=1`` (grey pixel-space models) PIL images go through the RGB policy above and
    then to grey by PIL's ITU-R 601-2 luma (``convert("L")``).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    if isinstance(images, torch.Tensor):
        x = images.detach()
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[1] != channels or not x.is_floating_point():
            raise ValueError(f"{name} tensor must be float with shape (B, {channels}, H, W), got {x.dtype} {tuple(images.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} tensor contains NaN or infinity")
        if x.min() < -1 - 1e-6 or x.max() > 1 + 1e-6:
            raise ValueError(f"{name} tensor must be in [-1, 1], got range [{x.min():.3g}, {x.max():.3g}]")
        h, w = x.shape[-2:]
        tw, th = _target_size(w, h, multiple, resize)
        if (tw, th) != (w, h):
            x = torch.nn.functional.interpolate(x.float(), size=(th, tw), mode="bicubic", antialias=True).clamp(-1, 1)
        return x.clone(), "pt"
    items: Sequence[Any] = images if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise ValueError(f"{name} is empty")
    from PIL import Image

    arrays = []
    for k, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            item = load_image(item)
        if not isinstance(item, Image.Image):
            raise TypeError(f"{name}[{k}] must be a PIL image, a path or a tensor, got {type(item).__name__}")
        rgb = to_rgb(item)
        tw, th = _target_size(*rgb.size, multiple, resize)
        if (tw, th) != rgb.size:
            rgb = rgb.resize((tw, th), Image.LANCZOS)
        pixels = np.asarray(rgb if channels == 3 else rgb.convert("L"), dtype=np.float32)
        arrays.append(pixels.reshape(*pixels.shape[:2], channels))
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        raise ImageSizeError(f"{name} have different sizes {sorted(sizes)}; a batch needs one size")
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0
    return x.contiguous(), "pil"


def to_pil(x: torch.Tensor) -> list:
    """PIL images from a (B, 3, H, W) tensor in [-1, 1] (RGB) or (B, 1, H, W) (grey "L"), clipped and
    rounded to 8 bits."""
    from PIL import Image

    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if arr.shape[-1] == 1:
        return [Image.fromarray(a[..., 0], "L") for a in arr]
    return [Image.fromarray(a, "RGB") for a in arr]
