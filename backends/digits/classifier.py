"""A small digit classifier, trained here, that measures the diffusion model.

It gives (a) the class accuracy of generated samples and (b) features for a Fréchet distance, the
analogue of FID (Heusel et al. 2017) for this data:

    FD = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})

with mu, S the mean and covariance of the classifier's penultimate-layer features.
Trained on the same training split as the diffusion model (never on the held-out digits), with
one-pixel shifts as augmentation; ``linmultistep train-digits --classifier`` rebuilds it.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from ..training import fit_classifier, load_classifier_weights, save_classifier, shift_batch
from .data import NUM_CLASSES, load_all, split_indices

__all__ = ["DigitClassifier", "train_classifier", "load_classifier", "frechet_distance", "FEATURES"]

FEATURES = 64


class DigitClassifier(nn.Module):
    """conv(1->32) - conv(32->64) - pool - conv(64->64) - pool - linear(256 -> 64 features) - linear(64 -> 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 4, FEATURES), nn.ReLU(),
        )
        self.head = nn.Linear(FEATURES, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features of (B, 1, 8, 8) images in [-1, 1]."""
        return self.body(x.float().clamp(-1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).argmax(1)


def train_classifier(out: "str | os.PathLike", seed: int = 0, epochs: int = 60, threads: int = 2) -> dict:
    """Train on the training split, report held-out accuracy, save ``out/model.safetensors`` + ``config.json``.

    AdamW (lr 2e-3, weight decay 1e-4, cosine over the epochs), batches of 64, each shifted by up to one
    pixel with noise 0.05 added (``training.fit_classifier``)."""
    torch.set_num_threads(threads)
    images, labels = load_all()
    train_idx, held_idx = split_indices(labels)
    x, y = torch.from_numpy(images[train_idx]), torch.from_numpy(labels[train_idx])
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    model = DigitClassifier()

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        xb = shift_batch(x[idx], gen, 1) + 0.05 * torch.randn(len(idx), 1, 8, 8, generator=gen)
        return nn.functional.cross_entropy(model(xb), y[idx])

    fit_classifier(model, len(x), batch_loss, epochs=epochs, batch=64, lr=2e-3, weight_decay=1e-4, gen=gen)
    xh, yh = torch.from_numpy(images[held_idx]), torch.from_numpy(labels[held_idx])
    acc = float((model.predict(xh) == yh).float().mean())
    info = {"architecture": "DigitClassifier", "features": FEATURES, "seed": seed, "epochs": epochs,
            "heldout_accuracy": round(acc, 4)}
    save_classifier(model, info, out)
    return info


def load_classifier(path: "str | os.PathLike") -> DigitClassifier:
    """The classifier saved in folder ``path`` (eval mode)."""
    return load_classifier_weights(DigitClassifier(), path, "classifier")


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (n, d) and b (m, d) (formula above)."""
    from scipy import linalg

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    if np.iscomplexobj(covmean):
        covmean = covmean.real  # rounding leaves tiny imaginary parts
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))
