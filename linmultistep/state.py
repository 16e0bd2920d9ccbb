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

from .entries import Coupled, Entry, Point, entry_parts
from .errors import LatentMismatchError
from .methods import Method, MethodSpec
from .modes import get_mode

__all__ = ["State", "Latent"]


@dataclass(frozen=True)
class State:
    """A window of consecutive grid points (paper indices) with the identity of its run.

    ``window`` maps grid index -> entry (:mod:`linmultistep.entries`: ``.x`` is the array the
    network sees there). ``nfe`` counts the network evaluations spent producing it.
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
        for i, e in self.window.items():
            if not isinstance(e, tuple) or getattr(e, "_fields", None) is None:
                raise TypeError(f"the window entry at grid index {i} is a {type(e).__name__}, not an entry "
                                "(linmultistep.entries: Point(x), Coupled(x, y), StableEntry, FixedEntry)")

    def __repr__(self) -> str:
        x = self.x
        shape = tuple(getattr(x, "shape", ()))
        dtype = str(getattr(x, "dtype", type(x).__name__)).replace("torch.", "")
        model = self.metadata.get("model") if isinstance(self.metadata, Mapping) else None
        extra = f", model={model!r}" if model else ""
        return (f"State({self.method}, mode={self.mode!r}, points={sorted(self.window)}, shape={shape}, "
                f"dtype={dtype}, nfe={self.nfe}, grid={self.fingerprint}{extra})")

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
        return self.window[self.hi].x

    def as_edit(self) -> "State":
        """This latent without its reconstruction checks (mode 'bits': the increment ``dV`` its first
        sampling step must recompute bit for bit, and the per-step digests): sampling it with another
        prompt, guidance or network is an edit, whose network outputs differ from the inversion's by design."""
        from dataclasses import replace

        from .fixedpoint import DIGESTS_KEY

        window = {i: (e._replace(dV=None) if "dV" in e._fields else e) for i, e in self.window.items()}
        return replace(self, window=window, metadata={k: v for k, v in self.metadata.items() if k != DIGESTS_KEY})

    def named_arrays(self) -> dict[str, Any]:
        """Flat {name: array}: 'field[i]' for every known part of every entry ('x[i]'; 'y[i]' for
        EDICT; 'xbar[i]', 'v[i]' in mode 'stable'; 'X[i]', 'V[i]', 'dV[i]' in mode 'bits')."""
        out: dict[str, Any] = {}
        for i in sorted(self.window, reverse=True):
            for name, arr in entry_parts(self.window[i]):
                out[f"{name}[{i}]"] = arr
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
        """The inverse of :meth:`named_arrays` (e.g. after loading a file): entries are rebuilt as the
        mode's entry type (Point or Coupled in mode 'recurrence')."""
        parts: dict[int, dict[str, Any]] = {}
        for key, arr in named.items():
            m = _NAME.match(key)
            if m is None:
                raise ValueError(f"array name {key!r} is not of the form 'part[index]'")
            parts.setdefault(int(m.group(2)), {})[m.group(1)] = arr
        mode_entry = get_mode(mode).entry
        window: dict[int, Entry] = {}
        for i, p in parts.items():
            if mode_entry is not None:
                kind = mode_entry
            else:
                kind = Coupled if set(p) == {"x", "y"} else Point
            unknown = set(p) - set(kind._fields)
            if unknown or "x" not in p:
                raise ValueError(f"parts {sorted(p)} at index {i} do not belong to mode {mode!r} "
                                 f"(expected {list(kind._fields)})")
            window[i] = kind(*(p.get(f) for f in kind._fields))
        return cls(window, method, fingerprint, mode, nfe, dict(metadata or {}))

    def check_method(self, method: Method) -> None:
        """Raise LatentMismatchError unless ``method`` (in any mode) is the one that produced this state."""
        if self.method != method.spec:
            raise LatentMismatchError(
                f"this latent was produced by {self.method} and cannot be continued with {method.spec}; "
                f"use the method it was inverted with"
            )

    def check_compatible(self, method: Method, fingerprint: str, N: int | None = None) -> None:
        """Raise LatentMismatchError unless this state belongs to ``method`` on this grid and mode, and
        its window is complete: k consecutive points, every part the mode needs (with ``N``, the grid's
        noise end, where the part above -- v, V -- is absent by design)."""
        self.check_method(method)
        if self.fingerprint != fingerprint:
            raise LatentMismatchError(
                f"this latent belongs to grid {self.fingerprint}, not to grid {fingerprint} "
                "(different schedule, number of steps or spacing)"
            )
        if self.mode != method.mode:
            raise LatentMismatchError(f"this latent was computed in mode {self.mode!r}, not {method.mode!r}")
        if len(self.window) != method.k:
            raise LatentMismatchError(
                f"this latent holds grid points {sorted(self.window)}, but {method.spec} continues from its last "
                f"{method.k} consecutive points: the latent is incomplete"
            )
        for i, e in self.window.items():
            for name, part in zip(e._fields, e):
                optional = name == "dV" or (name in ("v", "V") and (i == N or i == self.hi))
                if part is None and not optional:
                    raise LatentMismatchError(f"this latent lacks part {name!r} of grid point {i}: it is incomplete "
                                              "and cannot be continued exactly")


_NAME = re.compile(r"^(\w+)\[(\d+)\]$")


#: In diffusion terms the state returned by :func:`linmultistep.invert` is the latent.
Latent = State
