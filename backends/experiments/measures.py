"""The measures of the reports, each a small pure function of tensors (formulas in the docstrings)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

__all__ = ["mse", "rms", "max_abs", "judge_accuracy", "frechet", "target_share", "mean_std"]


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    """mean((a - b)^2) in float64: the seeds' reconstruction error (Tables 2/3)."""
    return float((a.double() - b.double()).pow(2).mean())


def rms(a: torch.Tensor, b: torch.Tensor) -> float:
    """sqrt(mean((a - b)^2)): the distance of a sample to a reference solution or to an edit's source."""
    return mse(a, b) ** 0.5


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b|: the interpolation's endpoint error."""
    return float((a.double() - b.double()).abs().max())


@torch.no_grad()
def judge_accuracy(judge: Any, x: torch.Tensor, targets: Mapping[str, Any]) -> dict[str, float]:
    """Per judged head: the share of images the judge classifies as their target class."""
    pred = judge.predict(x.float())
    return {h: float((np.asarray(pred[h]) == np.asarray(t)).mean()) for h, t in targets.items() if h in pred}


@torch.no_grad()
def frechet(judge: Any, x: torch.Tensor, reference_features: np.ndarray) -> float:
    """Fréchet distance |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussians fitted to the
    judge's features of ``x`` and the reference features (Heusel et al. 2017, FID with the judge's features)."""
    from ..digits.classifier import frechet_distance

    return float(frechet_distance(judge.features(x.float()).numpy(), reference_features))


@torch.no_grad()
def target_share(judge: Any, x: torch.Tensor, head: str, target: Any) -> float:
    """Share of ``x`` judged as ``target`` on ``head`` (an edit's success)."""
    return float((np.asarray(judge.predict(x.float())[head]) == np.asarray(target)).mean())


def mean_std(values: Sequence[float], fmt: str = ".3f") -> str:
    """'mean ± std' (sample std over seeds), or the value alone for one seed."""
    v = np.asarray(values, dtype=np.float64)
    return f"{v.mean():{fmt}} ± {v.std(ddof=1):{fmt}}" if len(v) > 1 else f"{v.mean():{fmt}}"
