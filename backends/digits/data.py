"""The digits data: scikit-learn's bundled handwritten digits (UCI optdigits test set, 1797 images).

8x8 grey images with 17 levels (0..16), mapped to [-1, 1] as x = v / 8 - 1. The held-out split is
fixed by a seed and stratified (``HELDOUT_PER_CLASS`` images per class); training never sees it, and
the split's indices ship with the model so that every later measurement uses the same images.

scikit-learn is needed only to rebuild the split or to train; the shipped model folder carries the
held-out images themselves (``heldout.safetensors``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["HELDOUT_PER_CLASS", "SPLIT_SEED", "NUM_CLASSES", "load_all", "split_indices", "stratified_split", "to_unit_range"]

HELDOUT_PER_CLASS = 30
SPLIT_SEED = 20261124
NUM_CLASSES = 10


def to_unit_range(levels: np.ndarray) -> np.ndarray:
    """Map the dataset's 0..16 grey levels to [-1, 1] (float32): x = v / 8 - 1."""
    return (np.asarray(levels, dtype=np.float32) / 8.0 - 1.0).astype(np.float32)


def load_all() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 images as (N, 1, 8, 8) float32 in [-1, 1] and their labels (N,) int64."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "rebuilding the digits data needs scikit-learn (pip install 'linmultistep[train]'); "
            "the shipped model folder already carries the held-out images"
        ) from exc
    d = load_digits()
    images = to_unit_range(d.images)[:, None]
    return images, np.asarray(d.target, dtype=np.int64)


def split_indices(labels: np.ndarray, per_class: int = HELDOUT_PER_CLASS, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train, heldout) index arrays: ``per_class`` random images of every class are held out."""
    return stratified_split(labels, per_class, seed, NUM_CLASSES)


def stratified_split(labels: np.ndarray, per_class: int, seed: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, heldout) sorted index arrays: ``per_class`` images of every class drawn without replacement by
    ``numpy.random.default_rng(seed)``, class by class in order (the shipped digits and mnist-sd splits were
    drawn so). Shared by the model packages' data modules."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    held = [np.sort(rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)) for c in range(num_classes)]
    heldout = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(labels)), heldout), heldout
