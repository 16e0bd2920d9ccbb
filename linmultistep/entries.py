"""Window entries: what a run holds at one grid point.

Every entry is a NamedTuple whose first field ``x`` is the array the network sees at that
point (the protocol :class:`Entry`); the other fields are a form's own state:

- :class:`Point` ``(x,)`` -- the LM recurrence (mode 'recurrence');
- :class:`Coupled` ``(x, y)`` -- EDICT's coupled pair;
- ``StableEntry (x, xbar, v)`` -- the shear form (mode 'stable', :mod:`linmultistep.forms`);
- ``FixedEntry (x, X, V, dV)`` -- the bit-exact form (mode 'bits', :mod:`linmultistep.fixedpoint`).

A field may be None where it is not known (nothing above the noise end, an increment not
recorded); latent files store the fields that are not None under ``field[index]``.
"""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple, Protocol, runtime_checkable

__all__ = ["Entry", "Point", "Coupled", "entry_parts"]


@runtime_checkable
class Entry(Protocol):
    """A window entry: ``x`` is the network's view of the point; ``_fields`` names every part."""

    @property
    def x(self) -> Any: ...

    _fields: tuple[str, ...]


class Point(NamedTuple):
    """A point of the LM recurrence: the state is the array itself."""

    x: Any


class Coupled(NamedTuple):
    """EDICT's point: the coupled states (x, y)."""

    x: Any
    y: Any


def entry_parts(entry: Entry) -> Iterator[tuple[str, Any]]:
    """(field name, array) for every part of ``entry`` that is known (not None)."""
    for name, arr in zip(entry._fields, entry):
        if arr is not None:
            yield name, arr
