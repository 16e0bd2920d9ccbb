"""What runs: a method in a mode (a *form*), and the modes as typed values.

A :class:`~linmultistep.methods.Method` is a coefficient rule (or EDICT); how its steps are
computed is the mode, a frozen dataclass with its options:

- :class:`Recurrence` -- the LM recurrence itself (:class:`RecurrenceForm`, steps in methods.py);
- :class:`Stable` -- the well-conditioned shear form of a 2-step BELM (:mod:`linmultistep.stable`);
- :class:`Bits` ``(data_bound, eps_bound)`` -- its bit-exact int64 form (:mod:`linmultistep.fixedpoint`).

A mode is a string only where it is stored or typed (a latent's ``mode`` field, the CLI):
``str(mode)`` writes it and :func:`linmultistep.modes.parse_mode` reads it, nowhere else.

A :class:`Form` is what :mod:`linmultistep.stepping` runs. It owns everything that belongs to
the mode: the per-run state (diffrax's ``solver_state``: :meth:`Form.begin` returns it, a
:class:`~linmultistep.stepping.Run` holds it and passes it into every step), the entries of its
windows, and what a run records in its latent. Each form's :meth:`Form.forward` (one sampling
step) and :meth:`Form.backward` (one inversion step) are the whole arithmetic of a step in that
mode, starter included, with the formula in the docstring.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, ContextManager, Literal, Mapping, MutableMapping, NamedTuple, Union

import numpy as np

from .context import StepContext
from .entries import Entry
from .errors import MethodError
from .guards import rounding_growth_check, sampler_checks
from .methods import PROBES, LinearMultistep, Method, MethodSpec

__all__ = [
    "Recurrence", "Stable", "Bits", "Mode", "DEFAULT_DATA_BOUND", "DEFAULT_EPS_BOUND",
    "Form", "RecurrenceForm", "Stepped", "StateProbes", "as_form",
    "TwoStepTables", "two_step_tables", "check_two_step_belm",
]

#: how a run watches its states for NaN and infinity (:meth:`Form.probes`)
StateProbes = Literal["every", "due", "none"]

DEFAULT_DATA_BOUND = 64.0  # mode 'bits': |x| at the start of a run (pixels in [-1, 1], VAE latents, noise)
DEFAULT_EPS_BOUND = 64.0  # mode 'bits': |eps| from the network (noise predictions are O(1))


# --- the modes ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recurrence:
    """The LM recurrence itself, in the arrays' dtype."""

    name = "recurrence"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Stable:
    """The shear form of a 2-step BELM in the arrays' dtype (docs/precision.md)."""

    name = "stable"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Bits:
    """The shear form in int64 fixed point: round trips exact to the last bit. ``data_bound`` bounds
    |x| of the array a run starts from, ``eps_bound`` the network's |eps|; both fix the fixed-point
    scales, are checked during the run and are part of the identity a latent records."""

    data_bound: float = DEFAULT_DATA_BOUND
    eps_bound: float = DEFAULT_EPS_BOUND
    name = "bits"

    def __post_init__(self) -> None:
        for key in ("data_bound", "eps_bound"):
            val = getattr(self, key)
            if isinstance(val, bool) or not isinstance(val, (int, float, np.floating, np.integer)) \
                    or not math.isfinite(val) or not val > 0:
                raise MethodError(f"{key} must be a positive finite number, got {val!r}", argument=key)
            object.__setattr__(self, key, float(val))

    def __str__(self) -> str:
        if self.data_bound == DEFAULT_DATA_BOUND and self.eps_bound == DEFAULT_EPS_BOUND:
            return "bits"
        return f"bits(data_bound={self.data_bound!r}, eps_bound={self.eps_bound!r})"


#: a mode: what :func:`linmultistep.modes.parse_mode` returns
Mode = Union[Recurrence, Stable, Bits]


# --- what a step returns and what a form is ----------------------------------------------------------
class Stepped(NamedTuple):
    """One step's result: the new entry, the method (or starter) that made it, and whether the step is
    exact (False for an approximate inverse step, DDIM inversion)."""

    entry: Entry
    by: MethodSpec
    exact: bool


class Form:
    """A method computed in a mode: what :func:`linmultistep.stepping.step` runs.

    ``method`` is the catalogue method (its coefficients), ``mode_spec`` the typed mode; ``mode`` is
    the string a latent records (``str(mode_spec)``). The run-level hooks have no-op defaults.
    """

    method: Method
    mode_spec: Any

    # identity, read off the method
    @property
    def mode(self) -> str:
        return str(self.mode_spec)

    @property
    def spec(self) -> MethodSpec:
        return self.method.spec

    @property
    def name(self) -> str:
        return self.method.spec.name

    @property
    def k(self) -> int:
        return self.method.k

    @property
    def nfe_per_step(self) -> int:
        return self.method.nfe_per_step

    @property
    def order(self) -> "int | None":
        return getattr(self.method, "order", None)

    @property
    def starter(self) -> "Method | None":
        return self.method.starter

    def chain(self) -> list[Method]:
        """The method followed by its starters, longest window first."""
        return self.method.chain()

    def exact_backward(self, ctx: StepContext, n: int) -> bool:
        """Whether the method's inversion step producing n is exact (from the coefficients)."""
        return self.method.exact_backward(ctx, n)

    # the run
    def check_run(self, ctx: StepContext, direction: str, window: Mapping[int, Any]) -> None:
        """Warnings the method's coefficients predict for this run, before it starts (PrecisionWarning)."""
        if direction == "forward" and len(window) == 1 and max(window) == len(ctx.h) - 1:
            # once per method and grid (the checks warn at most once per method and grid anyway; their
            # products over the grid's coefficients were most of a short run's set-up time)
            ctx.plan(("sampler checked", _plan_key(self.method)), _sampler_checked, self.method, ctx)

    def begin(self, ctx: StepContext, direction: str, window: Mapping[int, Any],
              metadata: Mapping[str, Any] | None = None) -> tuple[Any, dict[int, Entry]]:
        """(this run's state, the start window as this form's entries). ``metadata``: what the latent
        being continued recorded (:meth:`records`)."""
        raise NotImplementedError

    def forward(self, ctx: StepContext, state: Any, n: int, window: MutableMapping[int, Entry]) -> Stepped:
        """The sampling step producing point n from the points above it."""
        raise NotImplementedError

    def backward(self, ctx: StepContext, state: Any, n: int, window: MutableMapping[int, Entry]) -> Stepped:
        """The inversion step producing point n from the points below it (may complete the open entry
        at n-1 in ``window``, the run's own dict)."""
        raise NotImplementedError

    def close(self, ctx: StepContext, state: Any, n: int, window: MutableMapping[int, Entry]) -> None:
        """Complete the entry at n of an inversion that stopped before the noise end."""

    def records(self, ctx: StepContext, state: Any) -> dict[str, Any]:
        """What the run records in its latent besides the window (mode 'bits': per-step digests)."""
        return {}

    def guard(self, ctx: StepContext) -> ContextManager[Any]:
        """A context the run's steps execute in (mode 'bits': deterministic kernels)."""
        return contextlib.nullcontext()

    def probes(self, ctx: StepContext, state: Any) -> StateProbes:
        """How the run watches its states for NaN and infinity (the final window is always checked
        exactly): ``'every'`` state probed; ``'due'`` only the state before each read (a non-finite state
        stays non-finite); ``'none'``: finite by construction."""
        return "every"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec} mode={self.mode!r}>"


class RecurrenceForm(Form):
    """Mode 'recurrence': the method's own steps (:meth:`LinearMultistep.forward` / ``backward``, EDICT's),
    the starters making the first k-1 steps."""

    mode_spec = Recurrence()

    def __init__(self, method: Method) -> None:
        if isinstance(method, Form):
            raise MethodError(f"{method!r} is already a method in a mode")
        self.method = method
        self._chain = method.chain()

    def _pick(self, have: int) -> Method:
        for m in self._chain:
            if m.k <= have:
                return m
        raise MethodError(f"no method in the starter chain of {self.spec} can step from {have} point(s)")

    def check_run(self, ctx: StepContext, direction: str, window: Mapping[int, Any]) -> None:
        super().check_run(ctx, direction, window)
        if direction == "backward" and window:
            rounding_growth_check(self.method, ctx, _first_array(window), self.mode)

    def begin(self, ctx: StepContext, direction: str, window: Mapping[int, Any],
              metadata: Mapping[str, Any] | None = None) -> tuple[None, dict[int, Entry]]:
        return None, self.method.enter(ctx, dict(window))

    def forward(self, ctx: StepContext, state: None, n: int, window: MutableMapping[int, Entry]) -> Stepped:
        m = self._pick(len(window))
        return Stepped(m.forward(ctx, n, window), m.spec, True)

    def backward(self, ctx: StepContext, state: None, n: int, window: MutableMapping[int, Entry]) -> Stepped:
        m = self._pick(len(window))
        exact = m.exact_backward(ctx, n)
        return Stepped(m.backward(ctx, n, window), m.spec, exact)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RecurrenceForm) and other.method is self.method

    def __hash__(self) -> int:
        return hash((RecurrenceForm, id(self.method)))


def _sampler_checked(method: Method, ctx: StepContext) -> bool:
    sampler_checks(method, ctx)
    return True


def _plan_key(method: Method) -> Any:
    """The key of a method's plans: its coefficient rules (:func:`_rules_key`: the rule objects themselves,
    free to compute for the fresh method object every ``sample("obelm", ...)`` builds), else its
    ``plan_key`` (a digest of the rule's values)."""
    key = _rules_key(method)
    return ("rules", key) if key is not None else method.plan_key


def as_form(method: "Method | Form") -> Form:
    """A form as it is; a plain method in mode 'recurrence' (what a method object means by itself)."""
    if isinstance(method, Form):
        return method
    if not isinstance(method, Method):
        raise TypeError(f"expected a linmultistep Method or a method in a mode, got {type(method).__name__}")
    return RecurrenceForm(method)


def _first_array(window: Mapping[int, Any]) -> Any:
    """An array of a start window (entries or plain arrays)."""
    e = next(iter(window.values()))
    return e[0] if isinstance(e, tuple) else e


# --- the shear form shared by modes 'stable' and 'bits' -------------------------------------------------
@dataclass(frozen=True)
class TwoStepTables:
    """float64 host coefficients of the shear form (:mod:`linmultistep.stable`) on one grid (index 0..N).

    ``w[i]`` (i = 1..N) weights of the differences, ``c[i]`` (i = 1..N-1) slope coefficients of the
    BELM relations, ``c_start[i]`` (i = 1..N) of the starter step i -> i-1 (and its approximate
    inverse i-1 -> i); ``s[m]`` the stored-coordinate scales.
    """

    N: int
    w: np.ndarray
    c: np.ndarray
    c_start: np.ndarray
    s: np.ndarray

    @property
    def c_top(self) -> float:
        """The starter's coefficient at the noise end (sampling starts there)."""
        return float(self.c_start[self.N])

    @property
    def c_bot(self) -> float:
        """The starter inverse's coefficient at the data end (inversion starts there)."""
        return float(self.c_start[1])


#: the coefficient rules check_two_step_belm accepted (the probes are pure functions of the rules)
_TWO_STEP_OK: "dict[tuple, bool]" = {}
_TWO_STEP_OK_SIZE = 64


def check_two_step_belm(method: Method, mode: str) -> LinearMultistep:
    """Refuse (MethodError) anything but a consistent 2-step BELM started by a one-step a=[1] method.

    An accepted method is remembered by its coefficient rules (the method's and its starter's rule
    objects, k and parameters), so that resolving the mode at every call of ``sample`` does not probe
    the rules again; a refused one is checked (and its reason worded) every time."""
    key = _rules_key(method)
    if key is not None and key in _TWO_STEP_OK:
        return method  # type: ignore[return-value]
    _check_two_step_belm(method, mode)
    if key is not None:
        if len(_TWO_STEP_OK) >= _TWO_STEP_OK_SIZE:
            _TWO_STEP_OK.pop(next(iter(_TWO_STEP_OK)))
        _TWO_STEP_OK[key] = True
    return method  # type: ignore[return-value]


def _rules_key(method: Method) -> "tuple | None":
    """What check_two_step_belm's verdict depends on, or None (not cached) for anything but a linear
    multistep method with a linear multistep starter (or none)."""
    if not isinstance(method, LinearMultistep):
        return None
    st = method.starter
    if st is not None and not isinstance(st, LinearMultistep):
        return None
    try:
        key = (type(method), method.rule, method.k, method.params,
               None if st is None else (type(st), st.rule, st.k, st.params, st.starter is None))
        hash(key)
    except TypeError:  # an unhashable rule or parameter: check every time
        return None
    return key


def _check_two_step_belm(method: Method, mode: str) -> LinearMultistep:
    if not isinstance(method, LinearMultistep) or method.k != 2:
        raise MethodError(
            f"mode {mode!r} exists for 2-step BELMs (O-BELM, BDIA, belm(k=2)); {method.spec} has "
            f"k = {getattr(method, 'k', '?')}"
        )
    if not (method.explicit and method.backward_explicit):
        raise MethodError(f"mode {mode!r} needs an exact (bidirectional explicit) method; {method.spec} is not one")
    st = method.starter
    if not isinstance(st, LinearMultistep) or st.k != 1:
        raise MethodError(f"mode {mode!r} needs a one-step starter; {method.spec} has {st}")
    for p in PROBES:
        a, _ = method.coefficients(p[:2])
        if abs(a[0] + a[1] - 1.0) > 1e-12:
            raise MethodError(
                f"mode {mode!r} needs a consistent method (a_1 + a_2 = 1); {method.spec} gives "
                f"a = {a.tolist()} for h = {p[:2].tolist()}"
            )
        a, b = st.coefficients(p[:1])
        if a[0] != 1.0 or b[0] != 0:
            raise MethodError(f"mode {mode!r} needs an explicit starter with a = [1]; {st.spec} has a = {a.tolist()}")
    return method


def two_step_tables(method: LinearMultistep, ctx: StepContext) -> TwoStepTables:
    """Weights and coefficients of the shear form for the context's grid, in float64 (computed once per
    grid and method: cached in the context's plans under the key (TwoStepTables, the method's rules))."""
    return ctx.plan((TwoStepTables, _plan_key(method)), _build_tables, method, ctx)


def _build_tables(method: LinearMultistep, ctx: StepContext) -> TwoStepTables:
    h = np.asarray(ctx.h, dtype=np.float64)
    N = h.shape[0] - 1
    w = np.zeros(N + 1)
    c = np.zeros(N + 1)
    w[N] = h[N] * h[N]
    for i in range(N - 1, 0, -1):
        a, b = method.coefficients(h[i : i + 2])
        w[i] = a[1] * w[i + 1]
        c[i] = -b[1] * h[i] / w[i] if w[i] != 0 else np.inf
    if not (np.isfinite(w[1:]).all() and (w[1:] > 0).all() and np.isfinite(c).all()):
        raise MethodError(
            f"{method.spec}: the weights w_i = prod a_{{i,2}} of the stable form leave the float64 range on this "
            f"grid (w from {w[1:].min():.3g} to {w[1:].max():.3g}); the inverse of this method amplifies "
            "rounding beyond any precision here (docs/precision.md)"
        )
    c_start = np.zeros(N + 1)
    for i in range(1, N + 1):
        _, b_st = method.starter.coefficients(h[i : i + 1])
        c_start[i] = -b_st[1] * h[i] / w[i]
    s = np.array([ctx.scale(m) for m in range(N + 1)])
    for arr in (w, c, c_start, s):
        arr.setflags(write=False)
    return TwoStepTables(N, w, c, c_start, s)
