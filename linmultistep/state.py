"""The state an exact method leaves behind: enough to run back exactly.

For a k-step method that is the window of the last k points (for a 2-step BELM inverted
to the noise end, the pair (x_N, x_{N-1})); for EDICT the pair (x_N, y_N). The state also
records the method with its parameters, the fingerprint of the grid, and the mode, so that
continuing it with anything else is refused instead of silently giving garbage.
"""

from __future__ import annotations

import re
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

    @classmethod
    def from_named_arrays(
        cls,
        named: Mapping[str, Any],
        method: MethodSpec,
        fingerprint: str,
        mode: str = "recurrence",
        nfe: int = 0,
        metadata: Mapping[str, Any] | None = None,
    ) -> "State":
        """The inverse of :meth:`named_arrays` (e.g. after loading a file): entries are rebuilt as
        arrays, (x, y) tuples, or the named entries of mode 'stable' / 'bits'."""
        parts: dict[int, dict[str, Any]] = {}
        for key, arr in named.items():
            m = _NAME.match(key)
            if m is None:
                raise ValueError(f"array name {key!r} is not of the form 'part[index]'")
            parts.setdefault(int(m.group(2)), {})[m.group(1)] = arr
        entry_type = _entry_type(mode)
        window: dict[int, Any] = {}
        for i, p in parts.items():
            if entry_type is not None:
                unknown = set(p) - set(entry_type._fields)
                if unknown:
                    raise ValueError(f"parts {sorted(unknown)} at index {i} do not belong to mode {mode!r}")
                window[i] = entry_type(*(p.get(f) for f in entry_type._fields))
            elif set(p) == {"x"}:
                window[i] = p["x"]
            elif set(p) <= set("xyzw"):
                window[i] = tuple(p[c] for c in "xyzw" if c in p)
            else:
                raise ValueError(f"parts {sorted(p)} at index {i} do not belong to mode {mode!r}")
        return cls(window, method, fingerprint, mode, nfe, dict(metadata or {}))

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


_NAME = re.compile(r"^(\w+)\[(\d+)\]$")


def _entry_type(mode: str):
    """The named entry type of a mode (None for the recurrence's arrays and EDICT's tuples)."""
    if mode == "stable":
        from .forms import StableEntry

        return StableEntry
    if mode.startswith("bits"):
        from .fixedpoint import FixedEntry

        return FixedEntry
    return None


#: In diffusion terms the state returned by :func:`linmultistep.invert` is the latent.
Latent = State
