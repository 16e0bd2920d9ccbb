"""Modes at the public boundary: the one place that turns what a user or a file says (a method
name or object, a mode string or object, options) into the :class:`~linmultistep.forms.Form`
that runs.

A mode is a typed value (:class:`~linmultistep.forms.Recurrence`, :class:`~linmultistep.forms.Stable`,
:class:`~linmultistep.forms.Bits` with its bounds); a mode *string* -- 'stable', 'bits', or the
'bits(data_bound=64.0, eps_bound=256.0)' a latent records -- is read by :func:`parse_mode` and
nowhere else. :func:`resolve_mode` is the one resolution used by the core's entry points, the
diffusers pipeline, the schedulers and the CLI; the method classes never import this module.

>>> from linmultistep import get_method
>>> from linmultistep.modes import in_mode, default_mode, mode_names, parse_mode
>>> mode_names()
['bits', 'recurrence', 'stable']
>>> default_mode(get_method("obelm")), default_mode(get_method("bdia", gamma=0.5))
('stable', 'recurrence')
>>> parse_mode("bits(eps_bound=256)")
Bits(data_bound=64.0, eps_bound=256.0)
>>> in_mode(get_method("obelm"), "bits", eps_bound=256).mode
'bits(data_bound=64.0, eps_bound=256.0)'
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

from .entries import Coupled, Point
from .errors import MethodError
from .fixedpoint import FixedEntry, FixedPointBelm
from .forms import Bits, Form, Mode, Recurrence, RecurrenceForm, Stable, check_two_step_belm
from .methods import Edict, Method, get_method
from .stable import StableBelm, StableEntry

__all__ = ["ModeInfo", "Mode", "register_mode", "get_mode", "mode_names", "parse_mode", "in_mode", "resolve_mode",
           "default_mode", "base_method", "entry_type", "Recurrence", "Stable", "Bits"]


@dataclass(frozen=True)
class ModeInfo:
    """A registered mode: ``kind`` (its typed class, built from the options of a mode string), ``build(base,
    mode)`` the form that computes ``base`` in it, ``entry`` the entry type of its windows (None: the
    method's own, Point or Coupled), ``reason(base)`` None when it applies to ``base``, else why not."""

    name: str
    kind: type
    build: Callable[[Method, Any], Form]
    entry: type | None
    reason: Callable[[Method], "str | None"]
    summary: str


_MODES: dict[str, ModeInfo] = {}


def register_mode(info: ModeInfo) -> None:
    """Add a mode (a mode string ``name`` or ``name(key=value, ...)`` selects it)."""
    _MODES[info.name] = info


def mode_names() -> list[str]:
    return sorted(_MODES)


def parse_mode(mode: "str | Mode", **options: Any) -> Mode:
    """The typed mode of a mode string ('stable', 'bits', 'bits(data_bound=8.0, eps_bound=256.0)') or of a
    mode object, with keyword ``options`` applied (the one parser of mode strings)."""
    if not isinstance(mode, str):
        if type(mode) in {info.kind for info in _MODES.values()}:
            return _with_options(mode, options, str(mode))
        raise MethodError(f"mode must be a string such as 'stable' (or linmultistep.forms.Stable(), Bits(...)), "
                          f"got {mode!r} ({type(mode).__name__})")
    text = mode.strip()
    name, paren, args = text.partition("(")
    name = name.strip()
    if name not in _MODES:
        raise MethodError(f"unknown mode {mode!r}; available: {', '.join(repr(m) for m in mode_names())}")
    parsed: dict[str, Any] = {}
    if paren:
        if not args.endswith(")"):
            raise MethodError(f"mode {mode!r} is not of the form name(key=value, ...)")
        for item in filter(None, (a.strip() for a in args[:-1].split(","))):
            key, eq, val = (p.strip() for p in item.partition("="))
            if not eq:
                raise MethodError(f"option {item!r} of mode {mode!r} is not key=value")
            try:
                parsed[key] = float(val)
            except ValueError:
                raise MethodError(f"bad value {val!r} for {key} in mode {mode!r}") from None
    return _with_options(_MODES[name].kind(), {**parsed, **options}, mode)


def _with_options(mode: Any, options: Mapping[str, Any], text: str) -> Any:
    if not options:
        return mode
    fields = getattr(type(mode), "__dataclass_fields__", {})
    unknown = sorted(set(options) - set(fields))
    if unknown:
        if not fields:
            raise MethodError(f"mode {text!r} takes no options, got {unknown}")
        raise MethodError(f"unknown option(s) {unknown} for mode {text!r}; it takes {sorted(fields)}")
    return replace(mode, **options)


def get_mode(mode: "str | Mode") -> ModeInfo:
    """The registered mode of a mode string or object ('bits(data_bound=..., eps_bound=...)' -> bits)."""
    return _MODES[parse_mode(mode).name]


def base_method(method: "Method | Form") -> Method:
    """The method underneath a mode's form (the method itself when given one)."""
    return method.method if isinstance(method, Form) else method


def entry_type(mode: "str | Mode", method: Method | None = None) -> type:
    """The entry type a window of this mode holds (EDICT in mode 'recurrence': Coupled)."""
    got = get_mode(mode).entry
    if got is not None:
        return got
    return Coupled if isinstance(base_method(method), Edict) else Point  # type: ignore[arg-type]


def _as_method(method: "str | Method | Form") -> Method:
    return base_method(method) if isinstance(method, Form) else get_method(method)


def in_mode(method: "str | Method | Form", mode: "str | Mode", **options: Any) -> Form:
    """``method`` computed in ``mode`` (a mode object, or a string such as 'stable', 'bits' or a latent's
    recorded 'bits(data_bound=64.0, eps_bound=256.0)'); options are the mode's keyword options."""
    base = _as_method(method)
    typed = parse_mode(mode, **options)
    if isinstance(method, Form) and method.mode_spec == typed:
        return method
    info = _MODES[typed.name]
    why = info.reason(base)
    if why is not None:
        raise MethodError(f"{base.spec} has no mode {str(typed)!r}: {why}")
    return info.build(base, typed)


def default_mode(method: "str | Method | Form") -> str:
    """The mode a run takes when nothing asks for another: 'stable' for the 2-step BELMs with
    a_{i,2} = 1 on equal steps (O-BELM, BDIA(gamma=1), consistent belm(k=2) rules of that kind),
    'recurrence' otherwise (BDIA(gamma < 1), EDICT, DDIM, k != 2); a form's own mode if not 'recurrence'.

    Measured (benchmarks/precision_table.py, docs/precision.md; O-BELM, SD schedule, 3 seeds):
    the stable form's float32/float16 round trip is 1.5-100x more accurate than the
    recurrence's on a Gaussian problem at 10-500 steps, and 0.8-11x (median about 1.6x) on a
    random MLP, worse only at 20-50 steps in float32 on two of three seeds (0.77-0.95x).
    """
    if isinstance(method, Form) and not isinstance(method, RecurrenceForm):
        return method.mode
    m = _as_method(method)
    if _MODES["stable"].reason(m) is not None:
        return "recurrence"
    # a_2 != 1 on equal steps (BDIA gamma < 1): the inverse map itself expands by 1/a_2 per step,
    # which no form cures, and the stable form's weights prod a_2 would only move that growth
    # into the range of v (float16/float32 overflow on long grids even when just sampling)
    a, _ = m.coefficients([1.0, 1.0])  # type: ignore[attr-defined]
    return "stable" if abs(a[1] - 1.0) <= 1e-12 else "recurrence"


def resolve_mode(
    method: "str | Method | Form",
    mode: "str | Mode | None" = None,
    latent_mode: "str | None" = None,
    options: Mapping[str, Any] | None = None,
) -> Form:
    """The form a run uses (resolved once, at the public entry). The mode is, first that applies:
    ``mode``; a form's own mode if not 'recurrence'; the mode a latent recorded (``latent_mode``);
    :func:`default_mode`."""
    if options is not None and not isinstance(options, Mapping):
        raise MethodError(f"mode options must be a dict such as {{'eps_bound': 256}}, got {options!r}")
    if mode is None:
        if isinstance(method, Form) and not isinstance(method, RecurrenceForm):
            mode = method.mode_spec
        elif latent_mode is not None:
            mode = latent_mode
        else:
            mode = default_mode(method)
    return in_mode(method, mode, **dict(options or {}))


# --- the three modes ----------------------------------------------------------------------------------
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


register_mode(ModeInfo("recurrence", Recurrence, lambda m, mode: RecurrenceForm(m), None, lambda m: None,
                       "the LM recurrence itself"))
register_mode(ModeInfo("stable", Stable, StableBelm, StableEntry, _two_step_reason("stable"),
                       "the shear form of a 2-step BELM in the arrays' dtype (docs/precision.md)"))
register_mode(ModeInfo("bits", Bits, FixedPointBelm, FixedEntry, _two_step_reason("bits"),
                       "the shear form in int64 fixed point: round trips exact to the last bit"))
