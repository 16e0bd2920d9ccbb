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
the noise end completes its last entry in :meth:`StableBelm.close`. Derivation and measurements:
docs/precision.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, MutableMapping, NamedTuple

from .context import StepContext
from .entries import Entry
from .errors import MethodError
from .forms import (Form, Stable, StateProbes, Stepped, TwoStepTables, check_two_step_belm,
                    two_step_tables)
from .methods import LinearMultistep

__all__ = ["StableEntry", "StableBelm", "StableRun", "stable_shear"]


class StableEntry(NamedTuple):
    """Point n of the stable form: the network's view x_n = s_n xbar_n, the state xbar_n, and
    v_{n+1} (None above the noise end, and while an inversion's point n is open)."""

    x: Any
    xbar: Any
    v: Any


@dataclass(frozen=True)
class StableRun:
    """The per-run state of mode 'stable': the grid's shear tables, and the arrays the run's steps made.

    A step may update v and xbar in place (when ``ctx.may_overwrite``: nobody outside the run sees its
    entries) only if the run made them: a start entry's arrays belong to the caller (a latent being
    continued, the noise) and are never written. ``made`` holds the ids of the v and xbar arrays the
    steps produced; an entry's parts are either those or the start window's, which are alive before the
    run begins, so an id of a freed array reused later can never name a caller's array here."""

    tables: TwoStepTables
    made: set = field(default_factory=set)

    def owns(self, v: Any, xbar: Any) -> bool:
        return v is not None and id(v) in self.made and id(xbar) in self.made

    def mark(self, *arrays: Any) -> None:
        self.made.update(map(id, arrays))


def stable_shear(ctx: StepContext, eps: Any, c: float, v: Any, xbar: Any, w: float, s: float,
                 in_place: bool = False) -> tuple[Any, Any, Any]:
    """The arithmetic of one step of mode 'stable' (:mod:`linmultistep.stable`), either direction:

        v' = -v + c eps   (c eps when v is None: the starter),   xbar' = xbar + w v',   x' = s xbar'

    (sampling: w = -w_i; inverting: w = +w_n). ``c``, ``w``, ``s`` are float64 host numbers from the
    run's :class:`TwoStepTables`. A backend may do it in one call (a method ``stable_shear(eps, c, v,
    xbar, w, s)``, the torch and numpy backends: fewer temporaries and one Python call instead of
    three); it must give the bits of the composition below, which every other backend runs.
    ``in_place``: the caller owns v and xbar (made by its run, seen by no one else, not needed after
    this step), so a backend with ``stable_shear_`` (the same step, v and xbar overwritten) may reuse
    them: the same bits with two arrays fewer per step."""
    if in_place and v is not None:
        fused_ = getattr(ctx.backend, "stable_shear_", None)
        if fused_ is not None:
            return v, xbar, fused_(eps, c, v, xbar, w, s)
    fused = getattr(ctx.backend, "stable_shear", None)
    if fused is not None:
        return fused(eps, c, v, xbar, w, s)
    v = ctx.lincomb([c], [eps]) if v is None else ctx.lincomb([-1.0, c], [v, eps])
    xbar = ctx.lincomb([1.0, w], [xbar, v])
    return v, xbar, ctx.lincomb([s], [xbar])


class StableBelm(Form):
    """A 2-step BELM (O-BELM, BDIA(gamma), belm(k=2)) in the shear form of the module docstring, in the
    arrays' own dtype: the default mode of O-BELM and BDIA(gamma=1).

    The state is (xbar, v), updated by the two shears; the network sees x = s xbar, rounded once,
    which never feeds back into the state (holding x itself instead would add a rounding by
    s_{i-1}/s_i and its inverse to every step: measured 1.5-3x larger errors).
    """

    mode_spec = Stable()

    def __init__(self, method: LinearMultistep, mode: Stable = Stable()) -> None:
        self.method = check_two_step_belm(method, "stable")
        self.mode_spec = mode

    @property
    def base(self) -> LinearMultistep:
        """The method underneath (its coefficients)."""
        return self.method  # type: ignore[return-value]

    # --- the two steps ----------------------------------------------------------------------------
    def forward(self, ctx: StepContext, run: StableRun, n: int, window: MutableMapping[int, Entry]) -> Stepped:
        """Sampling step i -> i-1 (i = n + 1), from the entry above only:

            v_i = -v_{i+1} + c_i eps(x_i),   xbar_{i-1} = xbar_i - w_i v_i,   x_{i-1} = s_{i-1} xbar_{i-1}

        with w_i = a_{i,2} w_{i+1} (w_N = h_N^2) and c_i = -b_{i,1} h_i / w_i (O-BELM: w_i = h_i^2,
        c_i = (h_i + h_{i+1}) / (h_i h_{i+1})). From a point with nothing above it (the noise end, or a
        mid-way start) the starter, one DDIM step: v_{i+1} = 0, c_start_i = -b^{DDIM}_1 h_i / w_i.
        Source: BELM (Wang et al. 2024) eq. 12 with the rounding-free shear rewriting of docs/precision.md.
        In place (``ctx.may_overwrite``, arrays the run made: :class:`StableRun`) the same numbers are
        written over the entry above's v and xbar, which no later step reads.
        """
        t, i = run.tables, n + 1
        above = window[i]
        starter = len(window) < 2
        c = t.c_start[i] if starter else t.c[i]
        in_place = ctx.may_overwrite and run.owns(above.v, above.xbar)
        v, xbar, x = stable_shear(ctx, ctx.slope(i, above.x), c, above.v, above.xbar, -t.w[i], t.s[n], in_place)
        run.mark(v, xbar)
        if xbar is above.xbar:  # updated in place: the entry above holds point n's numbers, keep only its x
            window[i] = StableEntry(above.x, None, None)
        return Stepped(StableEntry(x, xbar, v), self.method.starter.spec if starter else self.spec, True)

    def backward(self, ctx: StepContext, run: StableRun, n: int, window: MutableMapping[int, Entry]) -> Stepped:
        """Inversion step n-1 -> n, the sampling step's two shears undone in reverse order:

            v_n = -v_{n-1} + c_{n-1} eps(x_{n-1})    completes the open point n-1 (its v_n)
            xbar_n = xbar_{n-1} + w_n v_n,  x_n = s_n xbar_n    (point n is open: v_{n+1} needs eps(x_n))

        exact, for any rounding of eps, because each shear adds to one variable a term of the other only.
        From the data end (no point below n-1) the starter's guess, DDIM inversion, is approximate:
        v_n = c_start_n eps(x_{n-1} at point n's time).
        """
        t = run.tables
        below = window[n - 1]
        starter = len(window) < 2
        if starter:
            v, xbar, x = stable_shear(ctx, ctx.evaluate(below.x, n), t.c_start[n], None, below.xbar, t.w[n], t.s[n])
            run.mark(v, xbar)
        elif below.v is None and 0 < n - 1 < t.N:  # open: complete it with the network output at n-1
            v_in = window[n - 2].v  # v_{n-1}: its entry n-2 leaves the window after this step
            in_place = ctx.may_overwrite and run.owns(v_in, below.xbar)
            v, xbar, x = stable_shear(ctx, ctx.slope(n - 1, below.x), t.c[n - 1], v_in, below.xbar, t.w[n], t.s[n],
                                      in_place)
            run.mark(v, xbar)
            if xbar is below.xbar:  # updated in place: point n-1 keeps its x and its completed v only
                window[n - 1] = StableEntry(below.x, None, v)
                return Stepped(StableEntry(x, xbar, None), self.spec, True)
        else:
            v = below.v
            xbar = ctx.lincomb([1.0, t.w[n]], [below.xbar, v])
            x = ctx.lincomb([t.s[n]], [xbar])
            run.mark(xbar)  # (v is the start entry's: the caller's)
        window[n - 1] = below._replace(v=v)
        return Stepped(StableEntry(x, xbar, None), self.method.starter.spec if starter else self.spec, not starter)

    # --- the run around them -------------------------------------------------------------------------
    def begin(self, ctx: StepContext, direction: str, window: Mapping[int, Any],
              metadata: Mapping[str, Any] | None = None) -> tuple[StableRun, dict[int, Entry]]:
        """The grid's tables, and the start window as entries: a plain array x_m becomes (x_m, x_m / s_m,
        None); adjacent plain arrays (solve's warm_start) get v_{m+1} = (xbar_{m+1} - xbar_m) / w_{m+1}."""
        t = two_step_tables(self.base, ctx)
        out: dict[int, StableEntry] = {}
        for m, e in window.items():
            if isinstance(e, StableEntry):
                out[m] = e
                continue
            if isinstance(e, tuple) and len(e) != 1:
                raise MethodError(f"mode 'stable' cannot start from the entry at grid index {m} ({type(e).__name__})")
            x = e[0] if isinstance(e, tuple) else e
            out[m] = StableEntry(x, ctx.lincomb([1.0 / t.s[m]], [x]), None)
        for m in sorted(out, reverse=True):
            if m + 1 in out and not isinstance(window[m], StableEntry):
                w = t.w[m + 1]
                out[m] = out[m]._replace(v=ctx.lincomb([1.0 / w, -1.0 / w], [out[m + 1].xbar, out[m].xbar]))
        return StableRun(t), out

    def close(self, ctx: StepContext, run: StableRun, n: int, window: MutableMapping[int, Entry]) -> None:
        """An inversion stopped at n < N: complete point n, v_{n+1} = -v_n + c_n eps(x_n)."""
        e = window[n]
        if e.v is None and 0 < n < run.tables.N and n - 1 in window:
            window[n] = e._replace(v=ctx.lincomb([-1.0, run.tables.c[n]], [window[n - 1].v, ctx.slope(n, e.x)]))

    def probes(self, ctx: StepContext, run: StableRun) -> StateProbes:
        # every shear adds to xbar (or v, which then adds to xbar) with coefficient 1, so a NaN or infinity
        # in xbar stays; x = s xbar cannot overflow where xbar is finite when s <= 1 (diffusion grids)
        return "due" if float(run.tables.s.max()) <= 1.0 else "every"
