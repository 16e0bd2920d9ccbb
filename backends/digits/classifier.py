"""A small digit classifier, trained here, that measures the diffusion model.

It gives (a) the class accuracy of generated samples and (b) features for a Fréchet distance, the
analogue of FID (Heusel et al. 2017) for this data:

    FD = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})

with mu, S the mean and covariance of the classifier's penultimate-layer features.
Trained on the same training split as the diffusion model (never on the held-out digits), with
one-pixel shifts as augmentation; ``linmultistep train-digits --classifier`` rebuilds it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

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


def _shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts by -1..1 pixel in each direction (background -1 fills the border)."""
    pad = torch.nn.functional.pad(x, (1, 1, 1, 1), value=-1.0)
    dx, dy = torch.randint(0, 3, (2,), generator=gen).tolist()
    return pad[..., dy:dy + 8, dx:dx + 8]


def train_classifier(out: "str | os.PathLike", seed: int = 0, epochs: int = 60, threads: int = 2) -> dict:
    """Train on the training split, report held-out accuracy, save ``out/model.safetensors`` + ``config.json``."""
    from safetensors.torch import save_file

    torch.set_num_threads(threads)
    images, labels = load_all()
    train_idx, held_idx = split_indices(labels)
    x, y = torch.from_numpy(images[train_idx]), torch.from_numpy(labels[train_idx])
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    model = DigitClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=gen)
        for k in range(0, len(x), 64):
            idx = perm[k:k + 64]
            xb = _shift(x[idx], gen) + 0.05 * torch.randn(len(idx), 1, 8, 8, generator=gen)
            loss = nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    xh, yh = torch.from_numpy(images[held_idx]), torch.from_numpy(labels[held_idx])
    acc = float((model.predict(xh) == yh).float().mean())
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "model.safetensors"))
    info = {"architecture": "DigitClassifier", "features": FEATURES, "seed": seed, "epochs": epochs,
            "heldout_accuracy": round(acc, 4)}
    (d / "config.json").write_text(json.dumps(info, indent=2) + "\n")
    for f in d.iterdir():  # safetensors writes 0600; shipped files are for everyone to read
        f.chmod(0o644)
    return info


def load_classifier(path: "str | os.PathLike") -> DigitClassifier:
    """The classifier saved in folder ``path`` (eval mode)."""
    from safetensors.torch import load_file

    p = Path(path) / "model.safetensors"
    if not p.is_file():
        raise FileNotFoundError(f"no classifier weights at {p}")
    model = DigitClassifier()
    model.load_state_dict(load_file(str(p)))
    return model.eval()


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
