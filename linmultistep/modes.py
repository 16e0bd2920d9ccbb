"""Modes as layers over a method: the one place that knows them.

A mode is how a method's steps are computed: 'recurrence' (the LM recurrence itself),
'stable' (the well-conditioned shear form of a 2-step BELM, :mod:`linmultistep.forms`) or
'bits' (its bit-exact fixed-point form, :mod:`linmultistep.fixedpoint`). Each registered
:class:`Mode` says how to wrap a method, which entry type its windows hold, and whether it
applies to a method; :func:`resolve_mode` is the one resolution used by the core, the diffusers
pipeline, the schedulers and the CLI. The method classes never import this module.

>>> from linmultistep import get_method
>>> from linmultistep.modes import in_mode, default_mode, mode_names
>>> mode_names()
['bits', 'recurrence', 'stable']
>>> default_mode(get_method("obelm")), default_mode(get_method("bdia", gamma=0.5))
('stable', 'recurrence')
>>> in_mode(get_method("obelm"), "bits", eps_bound=256).mode
'bits(data_bound=64.0, eps_bound=256.0)'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .entries import Coupled, Point
from .errors import MethodError
from .fixedpoint import FixedEntry, FixedPointBelm
from .forms import StableBelm, StableEntry, TwoStepForm, check_two_step_belm
from .methods import Edict, Method, get_method

__all__ = ["Mode", "register_mode", "get_mode", "mode_names", "in_mode", "resolve_mode", "default_mode",
           "base_method", "entry_type"]


@dataclass(frozen=True)
class Mode:
    """A registered mode.

    ``wrap(base, mode_string, options)`` returns the base method computed in this mode;
    ``entry`` is the entry type of its windows (None: the base method's own, Point or Coupled);
    ``reason(base)`` is None when the mode applies to ``base``, else why it does not.
    """

    name: str
    wrap: Callable[[Method, str, dict], Method]
    entry: type | None
    reason: Callable[[Method], "str | None"]
    summary: str


_MODES: dict[str, Mode] = {}


def register_mode(mode: Mode) -> None:
    """Add a mode (a mode string ``name`` or ``name(options)`` selects it)."""
    _MODES[mode.name] = mode


def mode_names() -> list[str]:
    return sorted(_MODES)


def get_mode(mode: str) -> Mode:
    """The registered mode of a mode string ('bits(data_bound=..., eps_bound=...)' -> 'bits')."""
    if not isinstance(mode, str):
        raise MethodError(f"mode must be a string such as 'stable', got {mode!r} ({type(mode).__name__})")
    name = mode.split("(", 1)[0].strip()
    if name not in _MODES:
        raise MethodError(f"unknown mode {mode!r}; available: {', '.join(repr(m) for m in mode_names())}")
    return _MODES[name]


def base_method(method: Method) -> Method:
    """The method underneath a mode's wrapper (the method itself in mode 'recurrence')."""
    return method.base if isinstance(method, TwoStepForm) else method


def entry_type(mode: str, method: Method | None = None) -> type:
    """The entry type a window of this mode holds (EDICT: Coupled)."""
    got = get_mode(mode).entry
    if got is not None:
        return got
    return Coupled if isinstance(method, Edict) else Point


def in_mode(method: "str | Method", mode: str, **options: Any) -> Method:
    """``method`` computed in ``mode`` (a mode string, e.g. 'stable', 'bits' or a latent's recorded
    'bits(data_bound=64.0, eps_bound=256.0)'); options are the mode's keyword options."""
    base = base_method(get_method(method))
    if mode == getattr(method, "mode", None) and not options and isinstance(method, Method):
        return method
    spec = get_mode(mode)
    why = spec.reason(base)
    if why is not None:
        raise MethodError(f"{base.spec} has no mode {mode!r}: {why}")
    return spec.wrap(base, mode, dict(options))


def default_mode(method: "str | Method") -> str:
    """The mode a run takes when nothing asks for another: 'stable' for the 2-step BELMs with
    a_{i,2} = 1 on equal steps (O-BELM, BDIA(gamma=1), consistent belm(k=2) rules of that kind),
    'recurrence' otherwise (BDIA(gamma < 1), EDICT, DDIM, k != 2).

    Measured (benchmarks/precision_table.py, docs/precision.md; O-BELM, SD schedule, 3 seeds):
    the stable form's float32/float16 round trip is 1.5-100x more accurate than the
    recurrence's on a Gaussian problem at 10-500 steps, and 0.8-11x (median about 1.6x) on a
    random MLP, worse only at 20-50 steps in float32 on two of three seeds (0.77-0.95x).
    """
    m = get_method(method)
    if m.mode != "recurrence":
        return m.mode
    if _MODES["stable"].reason(m) is not None:
        return "recurrence"
    # a_2 != 1 on equal steps (BDIA gamma < 1): the inverse map itself expands by 1/a_2 per step,
    # which no form cures, and the stable form's weights prod a_2 would only move that growth
    # into the range of v (float16/float32 overflow on long grids even when just sampling)
    a, _ = m.coefficients([1.0, 1.0])
    return "stable" if abs(a[1] - 1.0) <= 1e-12 else "recurrence"


def resolve_mode(
    method: "str | Method",
    mode: str | None = None,
    latent_mode: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Method:
    """The method a run uses. The mode is, first that applies: ``mode``; a method object's own mode
    if not 'recurrence'; the mode a latent recorded (``latent_mode``); :func:`default_mode`."""
    if options is not None and not isinstance(options, Mapping):
        raise MethodError(f"mode options must be a dict such as {{'eps_bound': 256}}, got {options!r}")
    m = get_method(method)
    if mode is None:
        if m.mode != "recurrence":
            mode = m.mode
        elif latent_mode is not None:
            mode = latent_mode
        else:
            mode = default_mode(m)
    if options and get_mode(mode).name == "recurrence":
        raise MethodError(f"mode {mode!r} takes no options, got {sorted(options)}")
    return in_mode(m, mode, **dict(options or {}))


# --- the three modes ----------------------------------------------------------------------
def _recurrence_reason(m: Method) -> "str | None":
    return None


def _wrap_recurrence(m: Method, mode: str, options: dict) -> Method:
    if mode != "recurrence":
        raise MethodError(f"mode 'recurrence' takes no options, got {mode!r}")
    if options:
        raise MethodError(f"mode 'recurrence' takes no options, got {sorted(options)}")
    return m


def _two_step_reason(name: str) -> Callable[[Method], "str | None"]:
    def reason(m: Method) -> "str | None":
        if isinstance(m, Edict):
            return ("EDICT's mixing step x <- p x' + (1-p) y' contracts by p, so its inverse amplifies rounding by "
                    "about 1/p^2 per step in any floating form, and a bit-exact form would need about N log2(1/p) "
                    "extra bits per state (docs/precision.md); use O-BELM or BDIA(gamma=1)")
        try:
            check_two_step_belm(m, name)
        except MethodError as exc:
            return str(exc)
        return None

    return reason


def _wrap_stable(m: Method, mode: str, options: dict) -> Method:
    if mode != "stable" or options:
        raise MethodError(f"mode 'stable' takes no options, got {mode!r} {sorted(options)}")
    return StableBelm(m)  # type: ignore[arg-type]


def _wrap_bits(m: Method, mode: str, options: dict) -> Method:
    return FixedPointBelm.from_mode(m, mode, **options)  # type: ignore[arg-type]


register_mode(Mode("recurrence", _wrap_recurrence, None, _recurrence_reason, "the LM recurrence itself"))
register_mode(Mode("stable", _wrap_stable, StableEntry, _two_step_reason("stable"),
                   "the shear form of a 2-step BELM in the arrays' dtype (docs/precision.md)"))
register_mode(Mode("bits", _wrap_bits, FixedEntry, _two_step_reason("bits"),
                   "the shear form in int64 fixed point: round trips exact to the last bit"))
