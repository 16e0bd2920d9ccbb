"""The noise grid a diffusion sampler runs on, in the paper's indexing.

Index 0 is the DATA end and index N the NOISE end; sampling runs N -> 0 and inversion 0 -> N.
With x_t = alpha_t x_0 + sigma_t eps, the scaled coordinates xbar = x / alpha and
sigmabar = sigma / alpha turn the probability-flow ODE into d xbar = epsbar d sigmabar
(BELM paper eq. 11), and the step sizes are h_i = sigmabar_i - sigmabar_{i-1} > 0 (i = 1..N).
"""

from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np

from .errors import GridError

__all__ = ["Grid", "StepSizes", "scheduled_timesteps", "Spacing"]

Spacing = Literal["linspace", "leading", "trailing"]


def _as_vector(name: str, values, length: int | None = None) -> np.ndarray:
    if np.iscomplexobj(values) or (hasattr(values, "is_complex") and callable(values.is_complex) and values.is_complex()):
        # float64(complex) would drop the imaginary part with only numpy's ComplexWarning
        raise GridError(f"{name} is complex ({getattr(values, 'dtype', type(values).__name__)}); a grid is real: pass "
                        "the real values (e.g. values.real if the imaginary part is zero)")
    arr = np.array(values, dtype=np.float64, copy=True)  # copy: the caller's array is never aliased
    if arr.ndim != 1:
        raise GridError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise GridError(f"{name} has {arr.shape[0]} entries, expected {length} (one per grid index 0..N)")
    arr.setflags(write=False)
    return arr


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def scheduled_timesteps(
    num_train_timesteps: int, num_steps: int, spacing: str = "linspace", steps_offset: int = 0
) -> np.ndarray:
    """The timesteps diffusers' DDIMScheduler.set_timesteps uses, in ASCENDING order.

    'linspace': round(linspace(0, T-1, n)); 'leading': arange(n) * (T // n) + steps_offset;
    'trailing': round(arange(T, 0, -T/n)) - 1, exactly n of them (numpy's float ``arange`` gives
    diffusers an (n+1)-th timestep -1 for some n, e.g. 61 of 1000; the first n agree bit for bit).
    Duplicates (e.g. 1000 'linspace' steps of a
    1000-step schedule) are reported by :class:`Grid`, not silently removed.
    """
    for name, v in (("num_train_timesteps", num_train_timesteps), ("num_steps", num_steps), ("steps_offset", steps_offset)):
        # 10.7 or "10" would be truncated or parsed silently; numpy integers are fine
        if isinstance(v, bool) or not hasattr(v, "__index__"):
            raise GridError(f"{name} must be an integer, got {v!r} ({type(v).__name__})")
    T, n = int(num_train_timesteps), int(num_steps)
    if n < 1:
        raise GridError(f"num_steps must be at least 1, got {num_steps}")
    if n > 4 * T:  # checked before any array is built: 10**9 steps would allocate gigabytes
        raise GridError(f"num_steps = {n} is more than the schedule's {T} timesteps can give without repeating "
                        f"(at most {T} distinct steps)")
    if spacing == "linspace":
        ts = np.linspace(0, T - 1, n).round()
    elif spacing == "leading":
        ts = np.arange(n) * (T // n) + int(steps_offset)
    elif spacing == "trailing":
        delta = (T - T / n) - T  # the increment numpy's arange uses, so the values match diffusers'
        ts = np.round(T + np.arange(n) * delta) - 1
    else:
        raise GridError(f"unknown timestep spacing {spacing!r}; expected 'linspace', 'leading' or 'trailing'")
    return np.sort(ts.astype(np.int64))


class StepSizes(np.ndarray):
    """A grid's step sizes ``h`` that also carry its field mix (:attr:`Grid.field_mix`), so that every
    :class:`~linmultistep.context.StepContext` built from ``grid.h`` applies it: a run that forgot it
    would integrate another ODE, silently. Only ``Grid`` makes them, and only when the mix is set."""

    field_mix: "tuple[np.ndarray, np.ndarray] | None" = None


class Grid:
    """alpha, sigma and model timesteps at grid indices 0..N (0 = data end, N = noise end).

    Parameters
    ----------
    alpha, sigma:
        Arrays of length N+1 with x_i = alpha_i x_0 + sigma_i eps.
    timesteps:
        Optional model timesteps of length N+1. Entry 0 may be NaN for a clean point that the
        network is never evaluated at (samplers only evaluate indices 1..N).

    path:
        What the run's coordinates and field mean (part of the fingerprint): ``"gaussian"`` (the
        default) for x = alpha x0 + sigma eps with a noise prediction; other tags come from
        :mod:`linmultistep.paths` (``"flow"``: rectified flow, field v).
    field_mix:
        Optional pair (p, q) of arrays of length N+1: the core integrates d(x / alpha) = F d sigmabar
        with F_m = p_m x + q_m f(x, m), f the field the caller passes (None: F = f). A path whose
        coordinates are not the ones its network predicts in sets it (:func:`linmultistep.paths.flow_grid`:
        f = the velocity v, F = b x + (1 - b t) v); it is part of the fingerprint.

    Derived: ``sigmabar = sigma / alpha`` and ``h`` with ``h[i] = sigmabar[i] - sigmabar[i-1]``
    for i >= 1 and, following the paper, ``h[0] = sigmabar[0]``.
    """

    def __init__(self, alpha, sigma, timesteps=None, path: str = "gaussian", field_mix=None) -> None:
        if not isinstance(path, str) or not path.isidentifier():
            raise GridError(f"path must be a name such as 'gaussian' or 'flow', got {path!r}")
        self.path = path
        alpha = _as_vector("alpha", alpha)
        n1 = alpha.shape[0]
        if n1 < 2:
            raise GridError(f"a grid needs at least 2 points (N >= 1), got {n1}")
        sigma = _as_vector("sigma", sigma, n1)
        for name, arr in (("alpha", alpha), ("sigma", sigma)):
            bad = ~np.isfinite(arr)
            if bad.any():
                i = _first_bad(bad)
                raise GridError(f"{name}[{i}] = {arr[i]} is not finite")
        if (alpha <= 0).any():
            i = _first_bad(alpha <= 0)
            raise GridError(f"alpha[{i}] = {alpha[i]} must be positive")
        if (sigma < 0).any():
            i = _first_bad(sigma < 0)
            raise GridError(f"sigma[{i}] = {sigma[i]} must be non-negative")
        sigmabar = sigma / alpha
        dec = np.diff(sigmabar) <= 0
        if dec.any():
            i = _first_bad(dec) + 1
            raise GridError(
                f"sigmabar must increase strictly from index 0 (data) to N (noise): "
                f"sigmabar[{i}] = {float(sigmabar[i])!r} <= sigmabar[{i - 1}] = {float(sigmabar[i - 1])!r}"
            )
        if timesteps is not None:
            timesteps = _as_vector("timesteps", timesteps, n1)
            body = timesteps[1:]
            if not np.isfinite(body).all():
                i = _first_bad(~np.isfinite(body)) + 1
                raise GridError(f"timesteps[{i}] = {timesteps[i]} is not finite (only index 0 may be NaN)")
            if np.isinf(timesteps[0]):
                raise GridError("timesteps[0] is infinite; use NaN for a clean point without a model timestep")
            known = timesteps if np.isfinite(timesteps[0]) else body
            offset = 0 if np.isfinite(timesteps[0]) else 1
            steps = np.diff(known)
            if (steps == 0).any():
                i = _first_bad(steps == 0) + 1 + offset
                raise GridError(
                    f"duplicate timestep {timesteps[i]:g} at grid indices {i - 1} and {i} "
                    "(too many steps for this schedule and spacing?)"
                )
            if (steps < 0).any():
                i = _first_bad(steps < 0) + 1 + offset
                raise GridError(
                    f"timesteps must increase from index 0 (data) to N (noise): "
                    f"timesteps[{i}] = {timesteps[i]:g} < timesteps[{i - 1}] = {timesteps[i - 1]:g}"
                )
        self.alpha = alpha
        self.sigma = sigma
        self.timesteps = timesteps
        self.sigmabar = sigmabar
        self.sigmabar.setflags(write=False)
        h = np.empty(n1)
        h[0] = sigmabar[0]
        h[1:] = np.diff(sigmabar)
        self.field_mix = None
        if field_mix is not None:
            if not isinstance(field_mix, (tuple, list)) or len(field_mix) != 2:
                raise GridError(f"field_mix must be a pair (p, q) of arrays, got {type(field_mix).__name__}")
            mix = tuple(_as_vector(name, v, n1) for name, v in zip(("field_mix p", "field_mix q"), field_mix))
            for name, arr in zip(("field_mix p", "field_mix q"), mix):
                if not np.isfinite(arr).all():
                    i = _first_bad(~np.isfinite(arr))
                    raise GridError(f"{name}[{i}] = {arr[i]} is not finite")
            self.field_mix = mix
            h = h.view(StepSizes)
            h.field_mix = mix
        h.setflags(write=False)
        self.h = h

    # --- construction -----------------------------------------------------------------
    @classmethod
    def from_alphas_cumprod(
        cls,
        alphas_cumprod,
        num_steps: int,
        spacing: str = "linspace",
        steps_offset: int = 0,
        final_alpha_one: bool = True,
    ) -> "Grid":
        """The grid diffusers' DDIMScheduler samples on.

        Indices 1..N hold the scheduled timesteps in ascending order. Index 0 is the clean
        point (alpha = 1, sigma = 0, timestep NaN) when ``final_alpha_one`` (diffusers'
        ``set_alpha_to_one=True``). Otherwise it is timestep 0 with ``alphas_cumprod[0]``, as
        diffusers' final step uses; when timestep 0 is itself scheduled (e.g. 'linspace'),
        index 0 is that smallest scheduled timestep and N = num_steps - 1, so that no step of
        zero length is taken (diffusers would take one there).
        """
        ac = _as_vector("alphas_cumprod", alphas_cumprod)
        if not np.isfinite(ac).all() or (ac <= 0).any() or (ac > 1).any():
            i = _first_bad(~(np.isfinite(ac) & (ac > 0) & (ac <= 1)))
            raise GridError(f"alphas_cumprod[{i}] = {ac[i]} is not in (0, 1]")
        ts = scheduled_timesteps(ac.shape[0], num_steps, spacing, steps_offset)
        if ts[0] < 0 or ts[-1] >= ac.shape[0]:
            raise GridError(
                f"scheduled timesteps {ts[0]}..{ts[-1]} fall outside the schedule's 0..{ac.shape[0] - 1}"
                f" (steps_offset={steps_offset}?)"
            )
        dup = np.diff(ts) == 0
        if dup.any():
            i = _first_bad(dup)
            raise GridError(
                f"duplicate timestep {ts[i]} at grid indices {i + 1} and {i + 2}: {num_steps} "
                f"'{spacing}' steps of a {ac.shape[0]}-step schedule repeat timesteps"
            )
        if final_alpha_one:
            ts_all = np.concatenate([[np.nan], ts.astype(np.float64)])
            acs = np.concatenate([[1.0], ac[ts]])
        elif ts[0] > 0:
            ts_all = np.concatenate([[0.0], ts.astype(np.float64)])
            acs = np.concatenate([[ac[0]], ac[ts]])
        else:
            ts_all = ts.astype(np.float64)
            acs = ac[ts]
        return cls(np.sqrt(acs), np.sqrt(1.0 - acs), ts_all)

    @classmethod
    def from_sigmabar(cls, sigmabar, timesteps=None) -> "Grid":
        """A variance-preserving grid with given sigmabar: alpha = 1/sqrt(1+sigmabar^2)."""
        sb = _as_vector("sigmabar", sigmabar)
        alpha = 1.0 / np.sqrt(1.0 + sb**2)
        return cls(alpha, sb * alpha, timesteps)

    # --- views ------------------------------------------------------------------------
    @property
    def N(self) -> int:
        """Number of steps (the grid has N+1 points)."""
        return self.alpha.shape[0] - 1

    @property
    def fingerprint(self) -> str:
        """A short hash of alpha, sigma and timesteps; latents record it to refuse other grids.
        A path other than 'gaussian' is hashed too and prefixes it ('flow-...'), so a latent of
        another path is refused by name even on equal numbers."""
        d = hashlib.sha256()
        for arr in (self.alpha, self.sigma, self.timesteps if self.timesteps is not None else np.zeros(0)):
            d.update(np.ascontiguousarray(arr, dtype="<f8").tobytes())
            d.update(b"|")
        if self.field_mix is not None:
            for arr in self.field_mix:
                d.update(np.ascontiguousarray(arr, dtype="<f8").tobytes())
                d.update(b"|")
        if self.path == "gaussian" and self.field_mix is None:  # unchanged: saved latents stay valid
            return d.hexdigest()[:16]
        d.update(self.path.encode())
        return f"{self.path}-{d.hexdigest()[:16]}"

    def timestep(self, i: int) -> float:
        """Model timestep at index i (NaN if none); the index itself when no timesteps were given."""
        return float(i) if self.timesteps is None else float(self.timesteps[i])

    def __len__(self) -> int:
        return self.alpha.shape[0]

    def __repr__(self) -> str:
        return (
            f"Grid(N={self.N}, sigmabar={self.sigmabar[0]:.4g}..{self.sigmabar[-1]:.4g}, "
            f"fingerprint={self.fingerprint})"
        )
