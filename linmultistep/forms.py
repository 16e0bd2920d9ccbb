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

The starter (one DDIM step, or its approximate inverse at the data end) fits the same form with
v_{N+1} = 0: v_N = c_top epsbar_N, c_top = -b^{starter}_1 h_N / w_N.

Entries are :class:`StableEntry` (x_n, xbar_n, v_{n+1}): the state is (xbar_n, v_{n+1}), v being
the difference that led *down* to point n, so that a sampling step only reads the entry above
it; x_n = s_n xbar_n is the network's view (model coordinates), derived, never fed back.
The top entry of an inversion has v = None (nothing above the noise end). Derivation and
measurements: docs/precision.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple

import numpy as np

from .errors import MethodError, NonFiniteError
from .methods import LinearMultistep, Method, _PROBES

if TYPE_CHECKING:  # pragma: no cover
    from .integrator import StepContext

__all__ = ["StableEntry", "StableBelm", "TwoStepTables", "two_step_tables", "check_two_step_belm"]


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
    BELM relations, ``c_top`` of the starter step N -> N-1, ``c_bot`` of the approximate starter
    inverse 0 -> 1; ``s[m]`` the stored-coordinate scales.
    """

    N: int
    w: np.ndarray
    c: np.ndarray
    c_top: float
    c_bot: float
    s: np.ndarray


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
    for p in _PROBES:
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


def two_step_tables(method: LinearMultistep, ctx: "StepContext") -> TwoStepTables:
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
    _, b_top = method.starter.coefficients(h[N : N + 1])
    _, b_bot = method.starter.coefficients(h[1:2])
    s = np.array([ctx.scale(m) for m in range(N + 1)])
    return TwoStepTables(N, w, c, float(-b_top[1] * h[N] / w[N]), float(-b_bot[1] * h[1] / w[1]), s)


class _FormBase(Method):
    """Shared plumbing of the 'stable' and 'bits' forms of a 2-step BELM ``base``."""

    k = 2
    nfe_per_step = 1
    _memo_key = "two_step_form"

    def __init__(self, base: LinearMultistep) -> None:
        self.base = check_two_step_belm(base, self.mode)
        self.starter = _Starter(self)

    @property
    def spec(self):  # type: ignore[override]
        return self.base.spec

    @property
    def order(self) -> int | None:
        return self.base.order

    def tables(self, ctx: "StepContext") -> TwoStepTables:
        return ctx.memo[self._memo_key]

    def begin(self, ctx: "StepContext", window: dict[int, Any], direction: str) -> dict[int, Any]:
        ctx.memo[self._memo_key] = two_step_tables(self.base, ctx)
        return window

    def array_from_entry(self, entry: Any) -> Any:
        return entry[0] if isinstance(entry, tuple) else entry

    def exact_backward(self, ctx: "StepContext", n: int) -> bool:
        return True

    def with_mode(self, mode: str, **options: Any) -> Method:
        if mode == self.mode and not options:
            return self
        return self.base.with_mode(mode, **options)

    # the two directions, i.e. the relation of point i in shear form; the starter reuses them
    def down(self, ctx: "StepContext", i: int, above: Any, c: float) -> Any:  # pragma: no cover
        raise NotImplementedError

    def up(self, ctx: "StepContext", n: int, below: Any, start_c: float | None) -> Any:  # pragma: no cover
        raise NotImplementedError

    def forward(self, ctx: "StepContext", n: int, window: Mapping[int, Any]) -> Any:
        i = n + 1
        return self.down(ctx, i, window[i], self.tables(ctx).c[i])

    def backward(self, ctx: "StepContext", n: int, window: Mapping[int, Any]) -> Any:
        return self.up(ctx, n, window[n - 1], None)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec} mode={self.mode!r}>"


class _Starter(Method):
    """The starter step in shear form: DDIM N -> N-1 (v_{N+1} = 0) and its approximate inverse 0 -> 1."""

    k = 1
    nfe_per_step = 1
    starter = None

    def __init__(self, parent: _FormBase) -> None:
        self.parent = parent
        self.mode = parent.mode

    @property
    def spec(self):  # type: ignore[override]
        return self.parent.base.starter.spec

    def exact_backward(self, ctx: "StepContext", n: int) -> bool:
        return False

    def forward(self, ctx: "StepContext", n: int, window: Mapping[int, Any]) -> Any:
        t = self.parent.tables(ctx)
        if n + 1 != t.N:
            raise MethodError(f"the starter of {self.parent.spec} runs only from the noise end, not from {n + 1}")
        return self.parent.down(ctx, n + 1, window[n + 1], t.c_top)

    def backward(self, ctx: "StepContext", n: int, window: Mapping[int, Any]) -> Any:
        t = self.parent.tables(ctx)
        if n != 1:
            raise MethodError(f"the starter inverse of {self.parent.spec} runs only from the data end, not to {n}")
        return self.parent.up(ctx, n, window[0], t.c_bot)


class StableBelm(_FormBase):
    """A 2-step BELM in the shear form of the module docstring, in the arrays' own dtype.

    The state is (xbar, v), updated by the two shears; the network sees x = s xbar, rounded
    once, which never feeds back into the state (holding x itself instead would add a
    rounding by s_{i-1}/s_i and its inverse to every step: measured 1.5-3x larger errors).
    """

    mode = "stable"

    def entry_from_array(self, x: Any) -> Any:
        return x  # converted in begin(), which knows the grid's scales

    def begin(self, ctx: "StepContext", window: dict[int, Any], direction: str) -> dict[int, Any]:
        super().begin(ctx, window, direction)
        t = self.tables(ctx)
        out = {}
        for m, e in window.items():
            if isinstance(e, tuple) and not isinstance(e, StableEntry):
                raise MethodError(f"mode 'stable' cannot start from the entry at grid index {m} ({type(e).__name__})")
            out[m] = e if isinstance(e, StableEntry) else StableEntry(e, ctx.lincomb([1.0 / t.s[m]], [e]), None)
        # adjacent plain arrays (solve's warm_start): v_{m+1} = (xbar_{m+1} - xbar_m) / w_{m+1}
        for m in sorted(out, reverse=True):
            if m + 1 in out and not isinstance(window[m], StableEntry):
                w = t.w[m + 1]
                out[m] = out[m]._replace(v=ctx.lincomb([1.0 / w, -1.0 / w], [out[m + 1].xbar, out[m].xbar]))
        return out

    def _entry(self, ctx: "StepContext", m: int, xbar: Any, v: Any) -> StableEntry:
        return StableEntry(ctx.lincomb([self.tables(ctx).s[m]], [xbar]), xbar, v)

    def _eps(self, ctx: "StepContext", m: int, x: Any, direction: str, cached: bool = True) -> Any:
        """The network at point m; a non-finite answer to a non-finite state is blamed on rounding growth."""
        try:
            return ctx.slope(m, x) if cached else ctx.evaluate(x, m)
        except NonFiniteError:
            if ctx.backend.all_finite(x):
                raise
            raise NonFiniteError(
                f"the state became NaN or infinite at grid index {m} ({ctx.describe(m)}) in a {direction} step "
                f"of {self.spec}: rounding errors grew past the floating-point range (docs/precision.md)"
            ) from None

    def down(self, ctx: "StepContext", i: int, above: StableEntry, c: float) -> StableEntry:
        """Point i-1 from point i: v_i = -v_{i+1} + c_i eps_i, xbar_{i-1} = xbar_i - w_i v_i."""
        eps = self._eps(ctx, i, above.x, "forward")
        v = ctx.lincomb([c], [eps]) if above.v is None else ctx.lincomb([-1.0, c], [above.v, eps])
        return self._entry(ctx, i - 1, ctx.lincomb([1.0, -self.tables(ctx).w[i]], [above.xbar, v]), v)

    def up(self, ctx: "StepContext", n: int, below: StableEntry, start_c: float | None) -> StableEntry:
        """Point n from point n-1: xbar_n = xbar_{n-1} + w_n v_n, then v_{n+1} = -v_n + c_n eps_n.

        ``start_c`` (starter only): v_1 = c_bot eps(x_0 at point 1's time), the DDIM-inversion guess.
        """
        t = self.tables(ctx)
        v_n = below.v if start_c is None else ctx.lincomb([start_c], [self._eps(ctx, n, below.x, "backward", False)])
        entry = self._entry(ctx, n, ctx.lincomb([1.0, t.w[n]], [below.xbar, v_n]), None)
        if n == t.N:
            return entry
        eps = self._eps(ctx, n, entry.x, "backward")
        return entry._replace(v=ctx.lincomb([-1.0, t.c[n]], [v_n, eps]))
