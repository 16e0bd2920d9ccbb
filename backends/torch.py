"""PyTorch array backend: any device and dtype, no autograd graph.

Coefficients arrive as float64 Python floats computed on the host; each is applied as a
Python scalar (no device tensor is created per coefficient). The combination is built in
one output buffer with in-place fused multiply-adds, so a step allocates one new tensor.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["TorchBackend", "use_deterministic"]


class TorchBackend:
    name = "torch"

    @torch.no_grad()
    def lincomb(self, coeffs: Sequence[float], arrays: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(coeffs) != len(arrays) or not arrays:
            raise ValueError(f"lincomb needs as many coefficients as arrays, got {len(coeffs)} and {len(arrays)}")
        out = torch.mul(arrays[0], float(coeffs[0]))
        for c, x in zip(coeffs[1:], arrays[1:]):
            out.add_(x, alpha=float(c))
        return out

    @torch.no_grad()
    def all_finite(self, x: torch.Tensor) -> bool:
        return bool(torch.isfinite(x).all())

    def cast_like(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return x.to(device=ref.device, dtype=ref.dtype)


def use_deterministic(enabled: bool = True) -> None:
    """Ask torch for deterministic kernels (needed for bit-identical network calls on GPUs).

    On CUDA this also requires CUBLAS_WORKSPACE_CONFIG=:4096:8 in the environment before
    the first cuBLAS call; a warning is issued by torch otherwise.
    """
    torch.use_deterministic_algorithms(enabled, warn_only=False)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = not enabled
        torch.backends.cudnn.deterministic = enabled
