"""PyTorch array backend: any device and dtype, no autograd graph.

Coefficients arrive as float64 Python floats computed on the host; each is applied as a
Python scalar (no device tensor is created per coefficient). The combination is built in
one output buffer with in-place fused multiply-adds, so a step allocates one new tensor.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Sequence

import torch

from linmultistep import fixedkernels, shearkernels

__all__ = ["TorchBackend", "use_deterministic", "deterministic"]


class TorchBackend:
    name = "torch"

    def run_context(self):
        """Entered around a whole run by the integrator: no autograd graph (one switch per run instead
        of one per operation)."""
        return torch.no_grad()

    def lincomb(self, coeffs: Sequence[float], arrays: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(coeffs) != len(arrays) or not arrays:
            raise ValueError(f"lincomb needs as many coefficients as arrays, got {len(coeffs)} and {len(arrays)}")
        c0 = float(coeffs[0])
        if c0 == 1.0 and len(arrays) > 1:  # x + c y in one kernel (the product by 1 would be a copy)
            out = torch.add(arrays[0], arrays[1], alpha=float(coeffs[1]))
            rest = 2
        else:
            out, rest = torch.mul(arrays[0], c0), 1
        for c, x in zip(coeffs[rest:], arrays[rest:]):
            out.add_(x, alpha=float(c))
        return out

    def stable_shear(self, eps: torch.Tensor, c: float, v: "torch.Tensor | None", xbar: torch.Tensor, w: float,
                     s: float) -> "tuple[torch.Tensor, torch.Tensor, torch.Tensor]":
        """Mode 'stable''s step in one call: v' = -v + c eps (c eps when v is None), xbar' = xbar + w v',
        x' = s xbar' (:func:`linmultistep.stable.stable_shear`), with the rounding of :meth:`lincomb`, so
        the same bits: on contiguous CPU float32/float64 tensors one compiled pass
        (:mod:`linmultistep.shearkernels`, when it reproduces torch's kernels on this machine), else four
        torch operations into three new tensors."""
        if (eps.numel() * eps.element_size() >= _SHEAR_KERNEL_BYTES and _host(eps) and _host(xbar, eps.dtype)
                and xbar.shape == eps.shape
                and (v is None or (_host(v, eps.dtype) and v.shape == eps.shape)) and _shear_agrees(eps.dtype)):
            outs = [_empty(eps.shape, eps.dtype) for _ in range(3)]
            if shearkernels.kernel_stable_shear(*map(_view, (eps, c, v, xbar, w, s, *outs)), fused=True):
                return outs[0], outs[1], outs[2]
        return _compose_stable_shear(eps, c, v, xbar, w, s)

    def stable_shear_(self, eps: torch.Tensor, c: float, v: torch.Tensor, xbar: torch.Tensor, w: float,
                      s: float) -> torch.Tensor:
        """:meth:`stable_shear` in place: v and xbar become v' and xbar' (the same bits: the same torch
        kernels as :func:`_compose_stable_shear`, writing over their first operand), x' is returned. The
        caller owns v and xbar (two distinct tensors nobody else holds, not views of eps). A step then
        touches four arrays instead of six; at 8x4x64x64 float32 these fit a 2 MiB L2 cache, and three
        torch operations are as fast as the compiled out-of-place pass (benchmarks/step_cost.py)."""
        v.neg_().add_(eps, alpha=float(c))  # lincomb's rounding: -v exact, then one fused multiply-add
        xbar.add_(v, alpha=float(w))
        return torch.mul(xbar, float(s))

    @torch.no_grad()
    def all_finite(self, x: torch.Tensor) -> bool:
        if not (x.is_floating_point() or x.is_complex()):  # integers (the fixed-point state) are always finite
            return True
        # the sum first: one vectorised reduction without a temporary, finite whenever every entry is (on the
        # CPU torch.isfinite is an unvectorised pass writing a bool mask, about 20x slower); a non-finite sum
        # (a NaN or inf, or finite values overflowing) is settled by the exact test
        if x.numel() and torch.isfinite(self.finite_flag(x)):
            return True
        return bool(torch.isfinite(x).all())

    def finite_flag(self, x: torch.Tensor) -> torch.Tensor:
        # the sum, a 0-d tensor left on x's device (no host synchronisation until read): one reduction;
        # a NaN or inf anywhere makes it non-finite (an overflow of finite values is a false alarm that
        # the exact check clears)
        if not (x.is_floating_point() or x.is_complex()):
            return torch.zeros((), device=x.device)
        acc = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else None
        return x.detach().sum(dtype=acc)

    def read(self, values: Sequence[torch.Tensor]) -> list:
        """Python scalars of 0-d tensors (flags, checksums): one transfer per device and dtype."""
        if len(values) == 1 and isinstance(values[0], torch.Tensor) and values[0].dim() == 0:
            return [values[0].item()]  # the common case (one probe per read): no stack
        groups: dict[tuple, list[int]] = {}
        out: list = [None] * len(values)
        for j, v in enumerate(values):
            if isinstance(v, torch.Tensor):
                groups.setdefault((v.device, v.dtype, tuple(v.shape)), []).append(j)
            else:  # already a Python scalar (a count from a host kernel)
                out[j] = v
        for idx in groups.values():
            for j, v in zip(idx, torch.stack([values[j] for j in idx]).tolist()):
                out[j] = v
        return out

    def check_interval(self, x: torch.Tensor) -> int:
        """Steps between reads of the deferred checks (a NaN is still reported with the first grid index
        that went bad): 8 on a device, where each read is a synchronisation; 4 on the CPU, where a read
        costs little but the states kept between reads do: with 8 steps' arrays of 512 KiB alive, each
        step's new arrays came from fresh pages (150 page faults per step at 8x4x64x64, 1.6x the time of
        a mode 'stable' step against 4, which also beat reading every step by 1.2x)."""
        return 4 if x.device.type == "cpu" else 8

    @torch.no_grad()
    def checksum(self, q: torch.Tensor) -> torch.Tensor:
        """Position-weighted int64 sums (wrapping) of each batch row (first axis of a 2+-d tensor; the
        whole tensor otherwise), left on the device; the numpy backend's values."""
        rows = q.reshape(fixedkernels.checksum_rows(q.shape), -1)
        w = _weights(rows.shape[1], rows.device)
        if rows.device.type == "cpu":  # one pass, no int64 temporary (CUDA has no int64 matrix-vector product)
            return torch.mv(rows, w)  # wrapping sums are order-free: the same values as below
        return (rows * w).sum(dim=1)

    def cast_like(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        if x.dtype == ref.dtype and x.device == ref.device:
            return x
        return x.to(device=ref.device, dtype=ref.dtype)

    # --- fixed point (bit-exact mode) -------------------------------------------------
    @torch.no_grad()
    def max_abs(self, x: torch.Tensor) -> float:
        return float(x.detach().abs().max()) if x.numel() else 0.0

    def max_abs_lazy(self, x: torch.Tensor) -> torch.Tensor:
        """max |x| as a 0-d tensor on x's device (read later with the deferred checks)."""
        if not x.numel():
            return torch.zeros((), device=x.device)
        lo, hi = torch.aminmax(x.detach())  # one pass, no |x| temporary
        return torch.maximum(-lo, hi)

    def quantize(self, x: torch.Tensor, factor: float) -> torch.Tensor:
        # float64 product: a deterministic function of x on every device (MPS lacks float64); widened
        # once, then scaled and rounded in place (a mixed int64 x float64 product is slower on the CPU)
        y = x.detach().to(torch.float64, copy=True).mul_(float(factor))
        return y.round_().to(torch.int64)

    def dequantize(self, q: torch.Tensor, factor: float, like: torch.Tensor) -> torch.Tensor:
        return q.to(torch.float64).mul_(float(factor)).to(device=like.device, dtype=like.dtype)

    def int_lincomb(self, coeffs: Sequence[int], arrays: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(coeffs) != len(arrays) or not arrays:
            raise ValueError(f"int_lincomb needs as many coefficients as arrays, got {len(coeffs)} and {len(arrays)}")
        c = [int(v) for v in coeffs]
        if c == [-1, 1]:  # the shear V <- -V + dV in one pass
            return torch.sub(arrays[1], arrays[0])
        if len(c) > 1 and c[0] == 1:
            out, rest = torch.add(arrays[0], arrays[1], alpha=c[1]), 2
        else:
            out, rest = torch.mul(arrays[0], c[0]), 1
        for cj, x in zip(c[rest:], arrays[rest:]):
            out.add_(x, alpha=cj)
        return out

    @torch.no_grad()
    def shear(self, f: torch.Tensor, factor: float, bound: float, V: "torch.Tensor | None", X: torch.Tensor,
              shift: float, sign: int, scale: float, like: torch.Tensor, keep: bool, digest: bool):
        """Mode 'bits'' step: one compiled pass on CPU tensors (:func:`linmultistep.fixedkernels.shear`),
        else the composition of the operations above."""
        if (f.numel() and _host(f) and _host(X, torch.int64) and X.shape == f.shape and like.device.type == "cpu"
                and like.dtype in _KERNEL_FLOATS and (V is None or (_host(V, torch.int64) and V.shape == f.shape))
                and fixedkernels.available()):
            out_V, out_X, out_x = _empty(f.shape, torch.int64), _empty(f.shape, torch.int64), _empty(f.shape, like.dtype)
            out_dV = _empty(f.shape, torch.int64) if keep else None
            out_digest = _empty(torch.Size([fixedkernels.checksum_rows(f.shape)]), torch.int64) if digest else None
            over = fixedkernels.kernel_shear(*map(_view, (f, factor, bound, V, X, shift, sign, scale, out_V, out_X, out_x,
                                                          out_dV, out_digest)))
            if over is not None:
                return fixedkernels.Sheared(out_V, out_X, out_x, out_dV, over, out_digest)
        return fixedkernels.compose_shear(self, f, factor, V, X, shift, sign, scale, like, keep, digest)

    @torch.no_grad()
    def equal(self, a: torch.Tensor, b: torch.Tensor) -> bool:
        return bool(torch.equal(a, b))

    def deterministic(self):
        return deterministic()


def use_deterministic(enabled: bool = True) -> None:
    """Ask torch for deterministic kernels (needed for bit-identical network calls on GPUs).

    On CUDA this also requires CUBLAS_WORKSPACE_CONFIG=:4096:8 in the environment before
    the first cuBLAS call; a warning is issued by torch otherwise.
    """
    torch.use_deterministic_algorithms(enabled, warn_only=False)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = not enabled
        torch.backends.cudnn.deterministic = enabled


_DET_LOCK = threading.Lock()
_det_users = 0
_det_before: tuple | None = None


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic kernels for the duration of the block; the previous settings are restored after.

    torch's switch is process-wide, so concurrent blocks (threads running mode 'bits') share one
    switch: the first to enter saves the settings and switches, the last to leave restores them.
    (Other threads running meanwhile also get deterministic kernels: slower, never wrong.)
    """
    global _det_users, _det_before
    with _DET_LOCK:
        if _det_users == 0:
            _det_before = (
                torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.benchmark,
                torch.backends.cudnn.deterministic,
            )
            use_deterministic(True)
        _det_users += 1
    try:
        yield
    finally:
        with _DET_LOCK:
            _det_users -= 1
            if _det_users == 0 and _det_before is not None:
                before, _det_before = _det_before, None
                torch.use_deterministic_algorithms(before[0], warn_only=before[1])
                torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before[2], before[3]


def _compose_stable_shear(eps: torch.Tensor, c: float, v: "torch.Tensor | None", xbar: torch.Tensor, w: float,
                          s: float) -> "tuple[torch.Tensor, torch.Tensor, torch.Tensor]":
    """The step as torch operations, rounded as TorchBackend.lincomb rounds (-v is exact, so neg + add_ is
    lincomb's mul by -1 + add_): every device and dtype."""
    if v is None:
        v_new = torch.mul(eps, float(c))
    else:
        v_new = torch.neg(v).add_(eps, alpha=float(c))
    xbar_new = torch.add(xbar, v_new, alpha=float(w))
    return v_new, xbar_new, torch.mul(xbar_new, float(s))


#: the compiled step pays from this size on: below it the call costs more than the passes it saves
#: (benchmarks/step_cost.py: 1x4x64x64 float32, 64 KiB, 1.2x slower with it; 8x4x64x64, 512 KiB, 1.1x faster)
_SHEAR_KERNEL_BYTES = 256 * 1024

_AGREES: dict[torch.dtype, bool] = {}


def _shear_agrees(dtype: torch.dtype) -> bool:
    """Whether the compiled step reproduces _compose_stable_shear bit for bit for this dtype on this
    machine (checked once per process on values where one and two roundings differ)."""
    got = _AGREES.get(dtype)
    if got is None:
        if dtype not in _KERNEL_FLOATS or not fixedkernels.available():
            return False  # not remembered: the kernels may be switched on later
        with torch.no_grad():
            got = _AGREES[dtype] = shearkernels.agrees(
                _compose_stable_shear, torch.from_numpy, lambda t: t.numpy(), _NUMPY_DTYPES[dtype], fused=True)
    return got and fixedkernels.available()


_NUMPY_DTYPES = {torch.float32: "float32", torch.float64: "float64"}


def _host(t: torch.Tensor, dtype: "torch.dtype | None" = None) -> bool:
    """A contiguous CPU tensor (of ``dtype``) whose .numpy() is a view of its memory, for the kernels."""
    return (t.device.type == "cpu" and (t.dtype == dtype if dtype is not None else t.dtype in _KERNEL_FLOATS)
            and t.is_contiguous() and not t.is_neg() and not t.is_conj())


_KERNEL_FLOATS = (torch.float32, torch.float64)


def _empty(shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """torch.empty without the fill that deterministic mode (mode 'bits' runs in it) gives new memory:
    every element is written by a kernel right after, so the fill would be one more pass per array."""
    det = torch.utils.deterministic
    if not (torch.are_deterministic_algorithms_enabled() and det.fill_uninitialized_memory):
        return torch.empty(shape, dtype=dtype)
    det.fill_uninitialized_memory = False
    try:
        return torch.empty(shape, dtype=dtype)
    finally:
        det.fill_uninitialized_memory = True


def _view(t: object) -> object:
    """A numpy view of a CPU tensor's memory (other arguments as they are)."""
    if not isinstance(t, torch.Tensor):
        return t
    return (t.detach() if t.requires_grad else t).numpy()


_WEIGHTS: dict[tuple[int, torch.device], torch.Tensor] = {}


def _weights(n: int, device: torch.device) -> torch.Tensor:
    """The checksum weights of :mod:`linmultistep.fixedkernels` on a device (checksums agree across backends)."""
    key = (n, device)
    if key not in _WEIGHTS:
        _WEIGHTS[key] = torch.from_numpy(fixedkernels.checksum_weights(n).copy()).to(device)
    return _WEIGHTS[key]
