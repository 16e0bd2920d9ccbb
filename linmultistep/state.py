"""The state an exact method leaves behind: enough to run back exactly.

For a k-step method that is the window of the last k points (for a 2-step BELM inverted
to the noise end, the pair (x_N, x_{N-1})); for EDICT the pair (x_N, y_N). The state also
records the method with its parameters, the fingerprint of the grid, and the mode, so that
continuing it with anything else is refused instead of silently giving garbage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import LatentMismatchError
from .methods import Method, MethodSpec

__all__ = ["State", "Latent"]


@dataclass(frozen=True)
class State:
    """A window of consecutive grid points (paper indices) with the identity of its run.

    ``window`` maps grid index -> entry (an array, or (x, y) for EDICT). ``nfe`` counts the
    network evaluations spent producing it.
    """

    window: Mapping[int, Any]
    method: MethodSpec
    fingerprint: str
    mode: str = "recurrence"
    nfe: int = 0
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        idx = sorted(self.window)
        if not idx or idx != list(range(idx[0], idx[-1] + 1)):
            raise ValueError(f"a state's window must be non-empty consecutive grid indices, got {idx}")

    @property
    def lo(self) -> int:
        """Lowest grid index in the window (where a sampling run continues)."""
        return min(self.window)

    @property
    def hi(self) -> int:
        """Highest grid index in the window (where an inversion run continues)."""
        return max(self.window)

    @property
    def x(self) -> Any:
        """The primary array at the window's noise-most point (x_N for an inverted latent)."""
        entry = self.window[self.hi]
        return entry[0] if isinstance(entry, tuple) else entry

    def named_arrays(self) -> dict[str, Any]:
        """Flat {name: array}: 'x[i]' per point, plus 'y[i]' for coupled (EDICT) entries and the
        field names of named entries ('v[i]'; 'X[i]', 'V[i]', 'dV[i]' in mode 'bits')."""
        out: dict[str, Any] = {}
        for i in sorted(self.window, reverse=True):
            entry = self.window[i]
            if isinstance(entry, tuple):
                # named entries (modes 'stable', 'bits') use their field names; absent parts are None
                names = getattr(entry, "_fields", "xyzw")
                for name, arr in zip(names, entry):
                    if arr is not None:
                        out[f"{name}[{i}]"] = arr
            else:
                out[f"x[{i}]"] = entry
        return out

    def check_compatible(self, method: Method, fingerprint: str) -> None:
        """Raise LatentMismatchError unless this state belongs to ``method`` on this grid and mode."""
        if self.method != method.spec:
            raise LatentMismatchError(
                f"this latent was produced by {self.method} and cannot be continued with {method.spec}; "
                f"use the method it was inverted with"
            )
        if self.fingerprint != fingerprint:
            raise LatentMismatchError(
                f"this latent belongs to grid {self.fingerprint}, not to grid {fingerprint} "
                "(different schedule, number of steps or spacing)"
            )
        if self.mode != method.mode:
            raise LatentMismatchError(f"this latent was computed in mode {self.mode!r}, not {method.mode!r}")


#: In diffusion terms the state returned by :func:`linmultistep.invert` is the latent.
Latent = State
