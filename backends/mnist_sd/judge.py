"""The judge: an independent small CNN that measures mnist-sd samples (issue 20, item 2).

One shared body, one head for the digit and one per attribute (thickness, width, slant; the classes of
``data.ATTRIBUTES``), trained on the **held-out** split only, i.e. on images the autoencoder and the
UNet never saw, with labels from the same measurement as the captions. Its accuracy is measured on the
training split (4500 images the judge never saw). Its penultimate features give a Fréchet distance
(the analogue of FID, Heusel et al. 2017)::

    FD = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})

Augmentation: random shifts by up to 2 pixels (all three attributes are shift invariant) and a little
Gaussian noise for every head; for the digit head also random rotations (+-12 degrees), scalings (+-10%)
and shears (+-0.15) of the same batch, which would change the attributes.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from torch import nn

from ..training import fit_classifier, load_classifier_weights, save_classifier, shift_batch
from .data import ATTRIBUTES, NUM_CLASSES, fit_bins, load_all, split_indices

__all__ = ["FEATURES", "HEADS", "Judge", "train_judge", "load_judge", "frechet_distance"]

FEATURES = 64
HEADS = {"digit": NUM_CLASSES, **{k: len(v) for k, v in ATTRIBUTES.items()}}


class Judge(nn.Module):
    """conv(1->32) pool conv(32->64) pool conv(64->64) pool -> linear(1024 -> 64 features) -> one linear head per name."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(0.2), nn.Linear(64 * 16, FEATURES), nn.ReLU(),
        )
        self.heads = nn.ModuleDict({k: nn.Linear(FEATURES, n) for k, n in HEADS.items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features of (B, 1, 32, 32) images in [-1, 1]."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 32, 32):
            raise ValueError(f"judge: expected images of shape (B, 1, 32, 32), got {tuple(x.shape)}")
        return self.body(x.float().clamp(-1, 1))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {k: h(f) for k, h in self.heads.items()}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Class index per head: ``{"digit": (B,), "thickness": (B,), "width": (B,), "slant": (B,)}``."""
        return {k: v.argmax(1) for k, v in self(x).items()}


def _affine(x: torch.Tensor, gen: torch.Generator, degrees: float = 12.0, scale: float = 0.1, shear: float = 0.15) -> torch.Tensor:
    """Random rotation, scaling and shear per image (bilinear, background fills): for the digit head only,
    since these change thickness, width and slant."""
    b = x.shape[0]
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(b, generator=gen)  # noqa: E731
    a = torch.deg2rad(u(-degrees, degrees))
    s = u(1 - scale, 1 + scale)
    h = u(-shear, shear)
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    theta = torch.stack([torch.stack([cos, -sin + h, torch.zeros(b)], 1), torch.stack([sin, cos, torch.zeros(b)], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros") - 1


def _targets(images: np.ndarray, labels: np.ndarray, bins) -> dict[str, torch.Tensor]:
    t = {"digit": torch.from_numpy(np.asarray(labels, np.int64))}
    t.update({k: torch.from_numpy(v) for k, v in bins.classes(images, labels).items()})
    return t


def train_judge(out: "str | os.PathLike", seed: int = 0, epochs: int = 150, threads: int = 1) -> dict:
    """Train on the held-out split; accuracy per head on the training split; save ``out/``."""
    torch.set_num_threads(threads)
    t0 = time.time()
    images, labels = load_all()
    train_idx, held_idx = split_indices(labels)
    bins = fit_bins(images[train_idx], labels[train_idx])  # the caption thresholds (fitted on the training split)
    x = torch.from_numpy(images[held_idx])
    y = _targets(images[held_idx], labels[held_idx], bins)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 11)
    model = Judge()

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        xb = shift_batch(x[idx], gen, 2) + 0.05 * torch.randn(len(idx), 1, 32, 32, generator=gen)
        out_b = model(xb)
        loss = sum(nn.functional.cross_entropy(out_b[h], y[h][idx]) for h in HEADS)
        # the digit also from affinely distorted copies (500 images are few for ten classes)
        return loss + nn.functional.cross_entropy(model(_affine(xb, gen))["digit"], y["digit"][idx])

    fit_classifier(model, len(x), batch_loss, epochs=epochs, batch=50, lr=2e-3, weight_decay=1e-3, gen=gen)
    acc = evaluate(model, images[train_idx], labels[train_idx], bins)
    info = {"architecture": "Judge", "features": FEATURES, "heads": HEADS, "seed": seed, "epochs": epochs,
            "trained_on": f"held-out split ({len(held_idx)} images)",
            "accuracy_on_training_split": {k: round(v, 4) for k, v in acc.items()},
            "train_seconds": round(time.time() - t0, 1), "threads": threads}
    save_classifier(model, info, out)
    return info


@torch.no_grad()
def evaluate(model: Judge, images: np.ndarray, labels: np.ndarray, bins, batch: int = 500) -> dict[str, float]:
    """Accuracy of every head against the digit labels and the measured attribute classes."""
    y = _targets(images, labels, bins)
    x = torch.from_numpy(np.asarray(images, np.float32))
    pred: dict[str, list] = {h: [] for h in HEADS}
    for k in range(0, len(x), batch):
        for h, v in model.predict(x[k:k + batch]).items():
            pred[h].append(v)
    return {h: float((torch.cat(pred[h]) == y[h]).float().mean()) for h in HEADS}


def load_judge(path: "str | os.PathLike") -> Judge:
    """The judge saved in folder ``path`` (eval mode)."""
    return load_classifier_weights(Judge(), path, "judge")


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (n, d) and b (m, d) (formula above)."""
    from ..digits.classifier import frechet_distance as _fd

    return _fd(a, b)
