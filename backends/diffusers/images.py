"""Images in and out: PIL or float tensors in [-1, 1] of shape (B, 3, H, W).

Accepted inputs ([`read_images`][linmultistep.backends.diffusers.images.read_images]):

- PIL images and paths (any mode, see below), one or a list; EXIF orientation is applied as a
  viewer (and diffusers' ``load_image``) shows the picture.
- torch tensors: float in [-1, 1], (B, C, H, W) or (C, H, W); or uint8 in 0..255, same shapes.
- numpy arrays (diffusers' convention, channels last): uint8 in 0..255 or float in [0, 1], of
  shape (H, W), (H, W, C) or (B, H, W, C).

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
multiple below / above / nearest, and [`read_images`][linmultistep.backends.diffusers.images.read_images] reports the original sizes so that a
reconstruction can be given back at them. Images are never silently cropped. A file or array of
more than `MAX_PIXELS` pixels is refused before it is decoded (a small compressed file can
decode to gigabytes).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Sequence

import numpy as np

from linmultistep.caller import outside_stacklevel

if TYPE_CHECKING:  # torch is imported by the functions that need it: the CLI reads files before it loads
    import torch

__all__ = ["ImageSizeError", "Images", "load_image", "read_images", "to_rgb", "to_tensor", "to_pil", "resize_to",
           "image_grid", "check_trained_size", "conversion", "RESIZE_POLICIES", "MAX_PIXELS", "SIZE_TOLERANCE"]

RESIZE_POLICIES = (None, "down", "up", "nearest")

#: Largest image accepted, in pixels (64 megapixels, e.g. 8192 x 8192; Stable Diffusion works at
#: 0.25-1 megapixel). Checked from the file header before decoding.
MAX_PIXELS = 64 * 1024 * 1024


class ImageSizeError(ValueError):
    """An image size the VAE/UNet cannot take (and no resize policy was requested), or too large."""


class Images(NamedTuple):
    """What [`read_images`][linmultistep.backends.diffusers.images.read_images] returns."""

    x: torch.Tensor  #: (B, C, H, W) float32 in [-1, 1], at the size the model takes
    kind: str  #: 'pil' (PIL images, paths, numpy arrays) or 'pt' (tensors): the kind a reconstruction returns
    sizes: list  #: original (height, width) of each image, before any resize


def _check_pixels(w: int, h: int, what: str, max_pixels: int) -> None:
    if w <= 0 or h <= 0:
        raise ImageSizeError(f"{what} is empty ({w}x{h} pixels)")
    if w * h > max_pixels:
        raise ImageSizeError(f"{what} has {w}x{h} = {w * h} pixels, more than the limit of {max_pixels} "
                             "(max_pixels=); downscale it first")


def load_image(path: "str | os.PathLike", max_pixels: int = MAX_PIXELS) -> Any:
    """Open an image file fully (so it can be closed), upright by its EXIF orientation.

    Clear errors name the file: missing, unreadable, empty, or more than ``max_pixels`` pixels
    (checked from the header, before decoding)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image file not found: {p}")
    try:
        with Image.open(p) as im:
            _check_pixels(*im.size, f"image {p}", max_pixels)
            im.load()
            upright = ImageOps.exif_transpose(im)
            return upright if upright is not im else im.copy()
    except ImageSizeError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
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


def conversion(mode: str, channels: int, transparency: bool = False) -> str:
    """What reading an image of PIL ``mode`` for a model of ``channels`` channels changes, in words; ''
    when nothing is lost (RGB for RGB, grey for either, a palette without transparency for RGB).
    ``transparency``: a palette image with a transparent colour (``"transparency" in image.info``)."""
    steps = []
    alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and transparency)
    if alpha:
        steps.append(f"its alpha channel ({mode}) is composited on white and dropped")
    if mode.startswith("I") or mode == "F":
        steps.append(f"its {mode} grey values are scaled to 8 bits")
    elif mode not in ("RGB", "RGBA", "RGBa", "L", "LA", "La", "1", "P", "PA"):
        steps.append(f"{mode} is converted to RGB by PIL")
    grey = mode in ("L", "LA", "La", "1") or mode.startswith("I") or mode == "F"
    if channels == 1 and not grey:
        steps.append("its colours become grey (ITU-R 601-2 luma) for this 1-channel model")
    return "; ".join(steps)


#: How far (in pixel count, either way) an image may be from the model's trained size before
#: [`check_trained_size`][linmultistep.backends.diffusers.images.check_trained_size] refuses it.
SIZE_TOLERANCE = 4.0


def check_trained_size(size: "tuple[int, int]", trained: "tuple[int, int] | None", what: str = "the images",
                       allow: str = "allow_size_mismatch=True") -> None:
    """Refuse images far from the size the model was trained at (more than `SIZE_TOLERANCE`
    times its pixels, or less than 1/`SIZE_TOLERANCE`): a network runs at any size, but far from
    its training size it gives garbage, at a cost that grows with the pixels (each network call
    costs about pixels / trained pixels times a call at the trained size). ``allow`` names the
    switch that runs anyway."""
    if trained is None:
        return
    (h, w), (th, tw) = size, trained
    ratio = (h * w) / float(th * tw)
    if 1.0 / SIZE_TOLERANCE <= ratio <= SIZE_TOLERANCE:
        return
    cost = (f"each network call would cost about {ratio:,.0f}x one at the trained size" if ratio > 1 else
            f"the model sees {1 / ratio:,.0f}x fewer pixels than it was trained on")
    raise ImageSizeError(f"{what} are {w}x{h} pixels, but the model was trained at {tw}x{th} ({ratio:,.4g}x the "
                         f"pixels; {cost}); resize them to about {tw}x{th}, or pass {allow} to run anyway")


def image_grid(images: Sequence[Any], rows: int, columns: int, pad: int = 1) -> Any:
    """One PIL image of ``images`` (PIL, all the same size and mode) in ``rows`` x ``columns`` cells,
    row by row, ``pad`` pixels of white between cells."""
    from PIL import Image

    if len(images) != rows * columns or not images:
        raise ValueError(f"a {rows} x {columns} grid needs {rows * columns} images, got {len(images)}")
    w, h = images[0].size
    mode = images[0].mode
    white = 255 if mode == "L" else (255,) * len(mode)
    grid = Image.new(mode, (columns * w + (columns - 1) * pad, rows * h + (rows - 1) * pad), white)
    for k, im in enumerate(images):
        r, c = divmod(k, columns)
        grid.paste(im.convert(mode), (c * (w + pad), r * (h + pad)))
    return grid


def _check_resize(resize: Any) -> None:
    if resize not in RESIZE_POLICIES:  # checked even when no image needs resizing
        raise ValueError(f"resize must be one of {RESIZE_POLICIES}, got {resize!r}")


def _target_size(w: int, h: int, multiple: int, resize: str | None) -> tuple[int, int]:
    _check_resize(resize)
    if w % multiple == 0 and h % multiple == 0:
        return w, h
    if resize is None:
        raise ImageSizeError(
            f"image size {w}x{h} is not a multiple of {multiple} (needed by the VAE/UNet); "
            "pass resize='down', 'up' or 'nearest' to resize (images are never cropped)"
        )

    def fit(v: int) -> int:
        lo, hi = max(multiple, v // multiple * multiple), -(-v // multiple) * multiple
        return {"down": lo, "up": hi, "nearest": lo if v - lo <= hi - v else hi}[resize]

    return fit(w), fit(h)


def _tensor_images(images: torch.Tensor, multiple: int, resize: str | None, name: str, channels: int,
                   max_pixels: int) -> Images:
    import torch

    x = images.detach()
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[1] != channels or not (x.is_floating_point() or x.dtype == torch.uint8):
        raise ValueError(f"{name} tensor must be float in [-1, 1] or uint8 in 0..255 with shape (B, {channels}, H, W), "
                         f"got {x.dtype} {tuple(images.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} tensor holds no image (batch size 0)")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    _check_pixels(w, h, f"{name} tensor", max_pixels)
    if x.dtype == torch.uint8:
        x = x.float() / 127.5 - 1.0  # 0..255 -> [-1, 1]
    else:
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} tensor contains NaN or infinity")
        if x.min() < -1 - 1e-6 or x.max() > 1 + 1e-6:
            raise ValueError(f"{name} tensor must be in [-1, 1] (or uint8 in 0..255), got range "
                             f"[{x.min():.3g}, {x.max():.3g}]")
    tw, th = _target_size(w, h, multiple, resize)
    if (tw, th) != (w, h):
        x = torch.nn.functional.interpolate(x.float(), size=(th, tw), mode="bicubic", antialias=True).clamp(-1, 1)
    return Images(x.clone(), "pt", [(h, w)] * x.shape[0])


def _numpy_images(arr: np.ndarray, name: str) -> list:
    """PIL images from a numpy array in diffusers' convention: channels last, uint8 0..255 or float [0, 1]."""
    from PIL import Image

    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[None, :, :, None]
    elif a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{name} array must be (H, W), (H, W, C) or (B, H, W, C) with C in 1, 3, 4 (channels last), "
                         f"got shape {tuple(arr.shape)}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} array holds no image (batch size 0)")
    if a.dtype == np.uint8:
        u8 = a
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} array contains NaN or infinity")
        if a.min() < -1e-6 or a.max() > 1 + 1e-6:
            raise ValueError(f"{name} float array must be in [0, 1] (diffusers' numpy convention; uint8 for 0..255), "
                             f"got range [{a.min():.3g}, {a.max():.3g}]")
        u8 = np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)
    else:
        raise ValueError(f"{name} array must be uint8 (0..255) or float (0..1), got dtype {a.dtype}")
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[a.shape[-1]]
    return [Image.fromarray(im[..., 0] if mode == "L" else im, mode) for im in u8]


def read_images(
    images: Any, multiple: int = 8, resize: str | None = None, name: str = "images", channels: int = 3,
    max_pixels: int = MAX_PIXELS,
) -> Images:
    """The model-ready (B, C, H, W) float32 tensor in [-1, 1], the input kind and the original sizes.

    See the module docstring for what is accepted. With ``channels=1`` (grey pixel-space models)
    PIL images go through the RGB policy above and then to grey by PIL's ITU-R 601-2 luma
    (``convert("L")``). The inputs are never modified.
    """
    import torch

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    _check_resize(resize)
    if isinstance(images, torch.Tensor):
        return _tensor_images(images, multiple, resize, name, channels, max_pixels)
    if isinstance(images, np.ndarray):
        images = _numpy_images(images, name)
    items: Sequence[Any] = images if isinstance(images, (list, tuple)) else [images]
    if not items:
        raise ValueError(f"{name} is empty")
    from PIL import Image

    arrays, sizes = [], []
    for k, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            item = load_image(item, max_pixels)
        elif isinstance(item, np.ndarray):
            converted = _numpy_images(item, f"{name}[{k}]")
            if len(converted) != 1:
                raise ValueError(f"{name}[{k}] is a batch of {len(converted)} images inside a list; "
                                 "give one (H, W, C) array per item, or the (B, H, W, C) array alone")
            item = converted[0]
        if not isinstance(item, Image.Image):
            raise TypeError(f"{name}[{k}] must be a PIL image, a path, a numpy array or a tensor, got {type(item).__name__}")
        _check_pixels(*item.size, f"{name}[{k}]", max_pixels)
        said = conversion(item.mode, channels, "transparency" in item.info)
        if said:
            what = f"{name}[{k}]" + (f" ({item.filename})" if getattr(item, "filename", "") else "")
            warnings.warn(f"{what}: {said}", UserWarning, stacklevel=outside_stacklevel())
        rgb = to_rgb(item)
        sizes.append((rgb.size[1], rgb.size[0]))
        tw, th = _target_size(*rgb.size, multiple, resize)
        if (tw, th) != rgb.size:
            rgb = rgb.resize((tw, th), Image.LANCZOS)
        pixels = np.asarray(rgb if channels == 3 else rgb.convert("L"), dtype=np.float32)
        arrays.append(pixels.reshape(*pixels.shape[:2], channels))
    shapes = {a.shape[:2] for a in arrays}
    if len(shapes) > 1:
        raise ImageSizeError(f"{name} have different sizes {sorted(shapes)}; a batch needs one size")
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0
    return Images(x.contiguous(), "pil", sizes)


def to_tensor(
    images: Any, multiple: int = 8, resize: str | None = None, name: str = "images", channels: int = 3
) -> tuple[torch.Tensor, str]:
    """(B, C, H, W) float32 tensor in [-1, 1] and the input kind ('pil' or 'pt'): [`read_images`][linmultistep.backends.diffusers.images.read_images]
    without the original sizes."""
    read = read_images(images, multiple, resize, name, channels)
    return read.x, read.kind


def resize_to(x: torch.Tensor, size: "tuple[int, int]") -> torch.Tensor:
    """(B, C, H, W) images in [-1, 1] resized to ``size`` = (height, width) (bicubic, antialiased):
    a reconstruction given back at the size of an image that was resized for the model."""
    import torch

    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return torch.nn.functional.interpolate(x.float(), size=tuple(size), mode="bicubic", antialias=True).clamp(-1, 1)


def to_pil(x: torch.Tensor) -> list:
    """PIL images from a (B, 3, H, W) tensor in [-1, 1] (RGB) or (B, 1, H, W) (grey "L"), clipped and
    rounded to 8 bits."""
    import torch

    from PIL import Image

    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    if arr.shape[-1] == 1:
        return [Image.fromarray(a[..., 0], "L") for a in arr]
    return [Image.fromarray(a, "RGB") for a in arr]
