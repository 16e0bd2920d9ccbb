"""The well-conditioned floating form of a 2-step BELM (mode ``'stable'``).

A 2-step BELM relation (paper eq. 12 with b_{i,0} = b_{i,2} = 0, consistent: a_{i,1} + a_{i,2} = 1)

    xbar_{i-1} = a_{i,1} xbar_i + a_{i,2} xbar_{i+1} + b_{i,1} h_i epsbar_i

is, in the differences u_i = xbar_i - xbar_{i-1},

    u_i = -a_{i,2} u_{i+1} - b_{i,1} h_i epsbar_i.

Run backwards the recurrence divides by a_{i,2} at every step (O-BELM: h_{i+1}^2 / h_i^2), and
rounding errors are multiplied by prod 1/a_{i,2}. Scaling the differences by weights with
w_i = a_{i,2} w_{i+1} (anchored at w_N = h_N^2) removes the factor: with v_i = u_i / w_i,

    v_i = -v_{i+1} + c_i epsbar_i,      c_i = -b_{i,1} h_i / w_i,
    xbar_{i-1} = xbar_i - w_i v_i,

and both directions are two shears with unit coefficients (the inverse undoes them in reverse
order). For O-BELM w_i = h_i^2 and c_i = (h_i + h_{i+1}) / (h_i h_{i+1}); for BDIA(gamma)
w_i = gamma^{N-i} h_N^2, so for gamma < 1 the weights span gamma^{-N}: the form moves the
problem into the range of v but cannot remove it (the inverse map itself amplifies by 1/gamma).

The starter (one DDIM step from a point with nothing above it, or its approximate inverse) fits
the same form with v_{i+1} = 0: v_i = c^start_i epsbar_i, c^start_i = -b^{starter}_1 h_i / w_i.

Entries are :class:`StableEntry` (x_n, xbar_n, v_{n+1}): the state is (xbar_n, v_{n+1}), v being
the difference that led *down* to point n, so that a sampling step only reads the entry above
it; x_n = s_n xbar_n is the network's view (model coordinates), derived, never fed back.
The top entry has v = None (nothing above it). An inversion step n makes xbar_n and leaves the
entry *open* (v_{n+1} needs the network at x_n); step n+1 completes it with that output first,
so a step consumes the model output at its start, like a sampling step. A run that stops before
the noise end completes its last entry in :meth:`~Method.close`. Derivation and measurements:
docs/precision.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, MutableMapping, NamedTuple

import numpy as np

from .context import StepContext
from .entries import Entry
from .errors import MethodError
from .methods import PROBES, LinearMultistep, Method, StateProbes

__all__ = ["StableEntry", "StableBelm", "TwoStepForm", "TwoStepTables", "two_step_tables", "check_two_step_belm"]


class StableEntry(NamedTuple):
    """Point n of the stable form: the network's view x_n = s_n xbar_n, the state xbar_n, and
    v_{n+1} (None above the noise end)."""

    x: Any
    xbar: Any
    v: Any


@dataclass(frozen=True)
class TwoStepTables:
    """float64 host coefficients of the shear form on one grid (index 0..N).

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


def check_two_step_belm(method: Method, mode: str) -> LinearMultistep:
    """Refuse (MethodError) anything but a consistent 2-step BELM started by a one-step a=[1] method."""
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
    """Weights and coefficients of the shear form (module docstring) for the context's grid."""
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


class TwoStepForm(Method):
    """What the 'stable' and 'bits' forms of a 2-step BELM ``base`` share: the identity of the base,
    the starter, the open entries of an inversion, and the two shears ``down`` / ``up`` that the
    subclasses define on their own entry types."""

    k = 2
    nfe_per_step = 1
    mode = "form"
    above_field = "v"  # the entry's part that links it to the point above (v_{n+1}; 'V' in mode 'bits')

    def __init__(self, base: LinearMultistep) -> None:
        self.base = check_two_step_belm(base, self.mode)
        self.starter = _Starter(self)

    @property
    def spec(self):  # type: ignore[override]
        return self.base.spec

    @property
    def order(self) -> int | None:
        return self.base.order

    @property
    def plan_key(self) -> Any:
        return ("form", self.base.plan_key)

    def tables(self, ctx: StepContext) -> TwoStepTables:
        return ctx.prepared.tables

    def grid_tables(self, ctx: StepContext) -> TwoStepTables:
        """The shear tables of the context's grid (computed once per grid, see StepContext.plan)."""
        return ctx.plan(self, "tables", 0, lambda c, _: two_step_tables(self.base, c))

    def exact_backward(self, ctx: StepContext, n: int) -> bool:
        return True

    # the subclass's shears on its own entries
    def down(self, ctx: StepContext, i: int, above: Any, c: float) -> Any:  # pragma: no cover
        """Point i-1 from point i (sampling) with slope coefficient c (c_i, or c_start_i from a top entry)."""
        raise NotImplementedError

    def up(self, ctx: StepContext, n: int, below: Any) -> Any:  # pragma: no cover
        """Point n from the COMPLETE point n-1 (its v is v_n): the new entry is open unless n = N."""
        raise NotImplementedError

    def completed(self, ctx: StepContext, n: int, entry: Any, v_n: Any) -> Any:  # pragma: no cover
        """The open entry at n with its v_{n+1} = -v_n + c_n eps(x_n)."""
        raise NotImplementedError

    def started(self, ctx: StepContext, n: int, below: Any) -> Any:  # pragma: no cover
        """The point n-1 (no point below it in the run) with v_n of the starter's inverse guess."""
        raise NotImplementedError

    def is_open(self, n: int, entry: Any, N: int) -> bool:
        """An inversion's entry whose link to the point above awaits the network output at n."""
        return getattr(entry, self.above_field) is None and 0 < n < N

    def _complete_below(self, ctx: StepContext, n: int, window: MutableMapping[int, Entry]) -> Any:
        below = window[n - 1]
        if self.is_open(n - 1, below, self.tables(ctx).N):
            link = getattr(window[n - 2], self.above_field)
            below = window[n - 1] = self.completed(ctx, n - 1, below, link)
        return below

    def close(self, ctx: StepContext, n: int, window: MutableMapping[int, Entry]) -> None:
        if self.is_open(n, window[n], self.tables(ctx).N) and n - 1 in window:
            window[n] = self.completed(ctx, n, window[n], getattr(window[n - 1], self.above_field))

    def forward(self, ctx: StepContext, n: int, window: MutableMapping[int, Entry]) -> Entry:
        i = n + 1
        return self.down(ctx, i, window[i], self.tables(ctx).c[i])

    def backward(self, ctx: StepContext, n: int, window: MutableMapping[int, Entry]) -> Entry:
        return self.up(ctx, n, self._complete_below(ctx, n, window))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec} mode={self.mode!r}>"


class _Starter(Method):
    """The starter step in shear form: DDIM i -> i-1 from a point with nothing above (v_{i+1} = 0),
    and its approximate inverse n-1 -> n from a point with nothing below."""

    k = 1
    nfe_per_step = 1
    starter = None

    def __init__(self, parent: TwoStepForm) -> None:
        self.parent = parent
        self.mode = parent.mode

    @property
    def spec(self):  # type: ignore[override]
        return self.parent.base.starter.spec

    @property
    def plan_key(self) -> Any:
        return ("starter", self.parent.plan_key)

    def exact_backward(self, ctx: StepContext, n: int) -> bool:
        return False

    def forward(self, ctx: StepContext, n: int, window: MutableMapping[int, Entry]) -> Entry:
        return self.parent.down(ctx, n + 1, window[n + 1], self.parent.tables(ctx).c_start[n + 1])

    def backward(self, ctx: StepContext, n: int, window: MutableMapping[int, Entry]) -> Entry:
        below = window[n - 1] = self.parent.started(ctx, n, window[n - 1])
        return self.parent.up(ctx, n, below)


@dataclass
class TwoStepRun:
    """The per-run data of mode 'stable': the grid's shear tables."""

    tables: TwoStepTables


class StableBelm(TwoStepForm):
    """A 2-step BELM in the shear form of the module docstring, in the arrays' own dtype.

    The state is (xbar, v), updated by the two shears; the network sees x = s xbar, rounded
    once, which never feeds back into the state (holding x itself instead would add a
    rounding by s_{i-1}/s_i and its inverse to every step: measured 1.5-3x larger errors).
    """

    mode = "stable"

    def prepare(self, ctx: StepContext, direction: str, window: Mapping[int, Entry]) -> TwoStepRun:
        return TwoStepRun(self.grid_tables(ctx))

    def state_probes(self, ctx: StepContext) -> StateProbes:
        # every shear adds to xbar (or v, which then adds to xbar) with coefficient 1, so a NaN or infinity
        # in xbar stays; x = s xbar cannot overflow where xbar is finite when s <= 1 (diffusion grids)
        return "due" if float(self.tables(ctx).s.max()) <= 1.0 else "every"

    def entry_from_array(self, x: Any) -> Any:
        raise MethodError("mode 'stable' builds its entries from arrays when a run starts (it needs the grid's scales)")

    def enter(self, ctx: StepContext, window: dict[int, Any]) -> dict[int, Entry]:
        t = self.tables(ctx)
        out: dict[int, StableEntry] = {}
        for m, e in window.items():
            if isinstance(e, StableEntry):
                out[m] = e
                continue
            if isinstance(e, tuple) and len(e) != 1:
                raise MethodError(f"mode 'stable' cannot start from the entry at grid index {m} ({type(e).__name__})")
            x = e[0] if isinstance(e, tuple) else e
            out[m] = StableEntry(x, ctx.lincomb([1.0 / t.s[m]], [x]), None)
        # adjacent plain arrays (solve's warm_start): v_{m+1} = (xbar_{m+1} - xbar_m) / w_{m+1}
        for m in sorted(out, reverse=True):
            if m + 1 in out and not isinstance(window[m], StableEntry):
                w = t.w[m + 1]
                out[m] = out[m]._replace(v=ctx.lincomb([1.0 / w, -1.0 / w], [out[m + 1].xbar, out[m].xbar]))
        return out

    def _entry(self, ctx: StepContext, m: int, xbar: Any, v: Any) -> StableEntry:
        return StableEntry(ctx.lincomb([self.tables(ctx).s[m]], [xbar]), xbar, v)

    def down(self, ctx: StepContext, i: int, above: StableEntry, c: float) -> StableEntry:
        """Point i-1 from point i: v_i = -v_{i+1} + c_i eps_i, xbar_{i-1} = xbar_i - w_i v_i."""
        eps = ctx.slope(i, above.x)
        v = ctx.lincomb([c], [eps]) if above.v is None else ctx.lincomb([-1.0, c], [above.v, eps])
        return self._entry(ctx, i - 1, ctx.lincomb([1.0, -self.tables(ctx).w[i]], [above.xbar, v]), v)

    def up(self, ctx: StepContext, n: int, below: StableEntry) -> StableEntry:
        """Point n from point n-1: xbar_n = xbar_{n-1} + w_n v_n (v_{n+1} follows at the next step)."""
        return self._entry(ctx, n, ctx.lincomb([1.0, self.tables(ctx).w[n]], [below.xbar, below.v]), None)

    def completed(self, ctx: StepContext, n: int, entry: StableEntry, v_n: Any) -> StableEntry:
        """v_{n+1} = -v_n + c_n eps(x_n)."""
        eps = ctx.slope(n, entry.x)
        return entry._replace(v=ctx.lincomb([-1.0, self.tables(ctx).c[n]], [v_n, eps]))

    def started(self, ctx: StepContext, n: int, below: StableEntry) -> StableEntry:
        """v_n = c_start_n eps(x_{n-1} at point n's time): the DDIM-inversion guess."""
        eps = ctx.evaluate(below.x, n)
        return below._replace(v=ctx.lincomb([self.tables(ctx).c_start[n]], [eps]))
