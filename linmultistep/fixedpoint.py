"""The bit-exact form of a 2-step BELM (mode ``'bits'``): integer shears on a fixed-point state.

The shear form of :mod:`linmultistep.forms` is held in int64 fixed point, X = round(xbar 2^Sx)
and V = round(v 2^Sv), and every increment is computed from the network in floating point
and rounded onto the grid (q(.) = round-half-even of the float64 product):

    sampling (point i -> i-1):  V_i = -V_{i+1} + q(c_i eps(x_i) 2^Sv),  X_{i-1} = X_i - q(w_i V_i 2^(Sx-Sv))
    inversion (point n-1 -> n): X_n = X_{n-1} + q(w_n V_n 2^(Sx-Sv)),    V_{n+1} = -V_n + q(c_n eps(x_n) 2^Sv)

with x_m = s_m X_m 2^-Sx cast to the network's dtype (each step, both shears and that cast, is one fused
pass: :func:`linmultistep.fixedkernels.shear`). Each update adds to one variable an
integer that depends only on the other, so its inverse subtracts the same integer: the round
trip is exact to the last bit whatever the network's precision, provided the network returns
identical outputs for identical inputs.

Scale choice (see :func:`fixed_point_scales`): with |data| <= D (``data_bound``) and
|eps| <= E (``eps_bound``), both checked at run time, every v on any run obeys
|v| <= Bv = E (c_top + c_bot + 2 sum_i |c_i|) and every xbar obeys
|xbar| <= Bx = D / min(s) + Bv sum_i w_i. Sx and Sv are the largest exponents with
Bx 2^Sx <= 2^62 and Bv 2^Sv <= 2^62, so nothing can overflow int64. The rounding moves a
trajectory by at most N 2^-(Sx+1) + N 2^-(Sv+1) sum_i w_i (in xbar); that bound must stay below
2^-30 D, else the grid is refused (BDIA(gamma < 1) needs about N log2(1/gamma) more bits).

Determinism: every step runs with the backend's deterministic kernels; an inversion evaluates
its first network input twice and compares bitwise; the latent keeps the quantised increment of
its last-but-one point, which the first step of sampling recomputes and compares, and a checksum
of the quantised increment of EVERY point (metadata ``bits_digests``), which sampling compares
step by step (deferred like the finite checks, naming the first grid index that differs). A
mismatch raises :class:`NondeterministicNetworkError` instead of returning a silently wrong result.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, ContextManager, Mapping, MutableMapping, NamedTuple

import numpy as np

from . import fixedkernels
from .context import StepContext
from .entries import Entry
from .errors import FixedPointRangeError, MethodError, NondeterministicNetworkError
from .forms import TwoStepForm, TwoStepTables
from .methods import LinearMultistep, StateProbes

__all__ = [
    "FixedEntry", "FixedPointBelm", "FixedPointRun", "FixedPointScales", "fixed_point_scales",
    "DEFAULT_DATA_BOUND", "DEFAULT_EPS_BOUND", "DIGESTS_KEY",
]

DEFAULT_DATA_BOUND = 64.0  # |x| at the start of a run: pixels in [-1, 1], VAE latents, Gaussian noise
DEFAULT_EPS_BOUND = 64.0  # |eps| from the network: noise predictions are O(1)
_INT_LIMIT_BITS = 62  # values stay below 2^62 so that one more increment cannot overflow int64
_TOLERANCE_BITS = 30  # rounding may move the trajectory by at most 2^-30 * data_bound
DIGESTS_KEY = "bits_digests"  # latent metadata: {grid index: [checksum of each batch row's quantised increment]}


class FixedEntry(NamedTuple):
    """Point n of the bit-exact form.

    ``x``: the network's view s_n X_n 2^-Sx (dtype of the input); ``X``: int64 fixed point of
    xbar_n; ``V``: int64 fixed point of v_{n+1} (None above the noise end); ``dV``: the quantised
    increment q(c_n eps(x_n) 2^Sv) an inversion computed at this point (None elsewhere), checked
    by the first sampling step.
    """

    x: Any
    X: Any
    V: Any
    dV: Any


@dataclass(frozen=True)
class FixedPointScales:
    """Binary exponents and the bounds that fixed them (module docstring)."""

    Sx: int
    Sv: int
    x_bound: float  # Bx
    v_bound: float  # Bv
    rounding_bound: float  # worst-case shift of xbar by rounding over the run
    tolerance: float  # allowed shift, 2^-30 * data_bound


def fixed_point_scales(t: TwoStepTables, data_bound: float, eps_bound: float) -> FixedPointScales:
    """Choose Sx, Sv for a grid's tables so that nothing overflows; refuse when resolution is lost."""
    N = t.N
    csum = float(np.abs(t.c[1:N]).sum())
    wsum = float(t.w[1:].sum())
    Bv = eps_bound * (abs(t.c_top) + abs(t.c_bot) + 2.0 * csum)
    Bx = data_bound / float(t.s.min()) + Bv * wsum
    if not (math.isfinite(Bv) and math.isfinite(Bx)):
        raise FixedPointRangeError(f"the fixed-point bounds are not finite (Bx = {Bx:.3g}, Bv = {Bv:.3g})")
    Sx = _INT_LIMIT_BITS - math.ceil(math.log2(Bx))
    Sv = _INT_LIMIT_BITS - math.ceil(math.log2(Bv)) if Bv > 0 else _INT_LIMIT_BITS
    rounding = N * 2.0 ** -(Sx + 1) + N * 2.0 ** -(Sv + 1) * wsum
    tol = 2.0**-_TOLERANCE_BITS * data_bound
    return FixedPointScales(Sx, Sv, Bx, Bv, rounding, tol)


@dataclass
class FixedPointRun:
    """The per-run data of mode 'bits': tables, scales, and the determinism bookkeeping."""

    tables: TwoStepTables
    scales: FixedPointScales
    unchecked: bool  # the first network input of an inversion is still to be evaluated twice
    digests: dict[int, Any] = field(default_factory=dict)  # grid index -> checksum(dV) (lazy)
    expected: dict[int, list[int]] = field(default_factory=dict)  # from the latent being reconstructed (per row)


class FixedPointBelm(TwoStepForm):
    """A 2-step BELM in int64 fixed point: round trips exact to the last bit (module docstring).

    ``data_bound`` bounds |x| of the array a run starts from (data for inversion, noise for
    sampling); ``eps_bound`` bounds the network's |eps|. Both are checked during the run and
    are part of the mode string ('bits' for the defaults), which a latent records.
    """

    above_field = "V"

    def __init__(
        self, base: LinearMultistep, data_bound: float = DEFAULT_DATA_BOUND, eps_bound: float = DEFAULT_EPS_BOUND
    ) -> None:
        for name, val in (("data_bound", data_bound), ("eps_bound", eps_bound)):
            if not (isinstance(val, (int, float)) and math.isfinite(val) and val > 0):
                raise MethodError(f"{name} must be a positive finite number, got {val!r}", argument=name)
        self.data_bound = float(data_bound)
        self.eps_bound = float(eps_bound)
        if self.data_bound == DEFAULT_DATA_BOUND and self.eps_bound == DEFAULT_EPS_BOUND:
            self.mode = "bits"
        else:
            self.mode = f"bits(data_bound={self.data_bound!r}, eps_bound={self.eps_bound!r})"
        super().__init__(base)

    _MODE = re.compile(r"^bits(?:\((.*)\))?$")

    @classmethod
    def from_mode(cls, base: LinearMultistep, mode: str, **options: Any) -> "FixedPointBelm":
        """Parse 'bits' or 'bits(data_bound=..., eps_bound=...)' (as a latent records it)."""
        m = cls._MODE.match(mode.replace(" ", ""))
        if m is None:
            raise MethodError(f"unknown mode {mode!r}; expected 'bits' or 'bits(data_bound=..., eps_bound=...)'")
        parsed: dict[str, float] = {}
        for item in filter(None, (m.group(1) or "").split(",")):
            key, _, val = item.partition("=")
            if key not in ("data_bound", "eps_bound"):
                raise MethodError(f"unknown option {key!r} in mode {mode!r}")
            try:
                parsed[key] = float(val)
            except ValueError:
                raise MethodError(f"bad value {val!r} for {key} in mode {mode!r}") from None
        return cls(base, **{**parsed, **options})

    # --- run set-up ---------------------------------------------------------------------
    def scales(self, ctx: StepContext) -> FixedPointScales:
        return ctx.prepared.scales

    def prepare(self, ctx: StepContext, direction: str, window: Mapping[int, Entry]) -> FixedPointRun:
        t = self.grid_tables(ctx)
        sc = fixed_point_scales(t, self.data_bound, self.eps_bound)
        if sc.rounding_bound > sc.tolerance:
            raise FixedPointRangeError(
                f"{self.spec} on this grid (N = {t.N}) does not fit int64 bit-exactly: with |x| <= {self.data_bound:g} "
                f"and |eps| <= {self.eps_bound:g}, xbar can reach {sc.x_bound:.3g} and v {sc.v_bound:.3g} "
                f"(about {math.log2(sc.x_bound * sc.v_bound):.0f} bits of range), leaving a rounding error of "
                f"{sc.rounding_bound:.3g} > {sc.tolerance:.3g}. The inverse of a method with a_(i,2) < 1 "
                "(BDIA gamma < 1) grows the state by N log2(1/a_2) bits; use fewer steps, gamma = 1, "
                "or tighter data_bound/eps_bound"
            )
        return FixedPointRun(t, sc, unchecked=direction == "backward")

    def state_probes(self, ctx: StepContext) -> StateProbes:
        # x = s X 2^-Sx is finite for every int64 X in float32/float64, and each x is either the next network
        # input (its output is range-checked, a NaN fails the check) or the run's last point (checked exactly
        # by finish); a float16 x that overflows feeds an inf to the network, whose output fails the check
        return "none"

    def guard(self, ctx: StepContext) -> ContextManager[Any]:
        return ctx.backend.deterministic()

    def latent_metadata(self, ctx: StepContext) -> dict[str, Any]:
        run: FixedPointRun = ctx.prepared
        if not run.digests:
            return {}
        keys = sorted(run.digests)
        values = ctx.backend.read([run.digests[k] for k in keys])
        return {DIGESTS_KEY: {str(k): list(map(int, v)) for k, v in zip(keys, values)}}

    def use_latent_metadata(self, ctx: StepContext, metadata: Mapping[str, Any]) -> None:
        recorded = metadata.get(DIGESTS_KEY)
        if recorded:
            ctx.prepared.expected = {int(k): list(map(int, v)) for k, v in dict(recorded).items()}

    def enter(self, ctx: StepContext, window: dict[int, Any]) -> dict[int, Entry]:
        t, sc, be = self.tables(ctx), self.scales(ctx), ctx.backend
        out: dict[int, FixedEntry] = {}
        for m, e in window.items():
            if isinstance(e, FixedEntry):
                out[m] = e
                continue
            if isinstance(e, tuple) and len(e) != 1:
                raise MethodError(f"mode {self.mode!r} cannot start from the entry at grid index {m} ({type(e).__name__})")
            x = e[0] if isinstance(e, tuple) else e
            big = be.max_abs(x)
            if not big <= self.data_bound:
                raise FixedPointRangeError(
                    f"|x| reaches {big:.4g} at grid index {m}, beyond data_bound = {self.data_bound:g} that fixes the "
                    "fixed-point scale; pass mode_options={'data_bound': ...} (linmultistep.in_mode(method, 'bits', "
                    "data_bound=...)) with a larger bound"
                )
            X = be.quantize(x, 2.0**sc.Sx / t.s[m])
            out[m] = FixedEntry(be.dequantize(X, t.s[m] * 2.0**-sc.Sx, x), X, None, None)
        # adjacent plain arrays (solve's warm_start): V_{m+1} from the difference, and X_m moved
        # by at most the rounding so that the shear relation between them holds exactly
        for m in sorted(out, reverse=True):
            if m + 1 in out and not isinstance(window[m], FixedEntry):
                above = out[m + 1]
                V = be.quantize(be.int_lincomb([1, -1], [above.X, out[m].X]), 2.0 ** (sc.Sv - sc.Sx) / t.w[m + 1])
                X = be.int_lincomb([1, -1], [above.X, self._shift(ctx, m + 1, V)])
                out[m] = FixedEntry(be.dequantize(X, t.s[m] * 2.0**-sc.Sx, out[m].x), X, V, None)
        return out

    def entry_from_array(self, x: Any) -> Any:
        raise MethodError("mode 'bits' builds its entries from arrays when a run starts (it needs the grid's scales)")

    # --- the network, bounded and checked -----------------------------------------------
    def _slope(self, ctx: StepContext, m: int, x: Any, cached: bool = True) -> Any:
        """eps(x_m); the first call of an inversion is made twice and compared bitwise."""
        run: FixedPointRun = ctx.prepared
        eps = ctx.slope(m, x) if cached else ctx.evaluate(x, m)
        if run.unchecked:
            run.unchecked = False
            again = ctx.evaluate(x, m)
            if not ctx.backend.equal(eps, again):
                raise NondeterministicNetworkError(
                    f"the network returned different outputs for the same input at grid index {m} "
                    f"({ctx.describe(m)}); mode 'bits' needs a deterministic network (torch: "
                    "linmultistep.backends.torch.use_deterministic, same device, same batch composition)"
                )
        return eps

    def _watch_eps(self, ctx: StepContext, m: int, eps: Any, over: Any) -> None:
        """Record |eps| <= eps_bound for the deferred checks (no host synchronisation per step; a NaN fails):
        ``over`` counts the elements beyond the bound where a fused increment counted them, else max|eps|
        is watched."""
        be = ctx.backend

        def error(_: Any) -> FixedPointRangeError:
            return FixedPointRangeError(
                f"|eps| = {be.max_abs(eps):.4g} at grid index {m} ({ctx.describe(m)}) exceeds eps_bound = "
                f"{self.eps_bound:g} that fixes the fixed-point scale; pass a larger eps_bound "
                "(mode_options={'eps_bound': ...})")

        if over is None:
            ctx.watch_bound(m, be.max_abs_lazy(eps), self.eps_bound, error)
        else:
            ctx.watch_bound(m, over, 0, error)

    def _increment(self, ctx: StepContext, m: int, eps: Any, c: float, V: Any) -> tuple[Any, Any]:
        """(q(c eps 2^Sv) - V, the increment), |eps| <= eps_bound watched (composed: once per run)."""
        dV = ctx.backend.quantize(eps, c * 2.0 ** self.scales(ctx).Sv)
        self._watch_eps(ctx, m, eps, None)
        return (dV if V is None else ctx.backend.int_lincomb([-1, 1], [V, dV])), dV

    def _shear(self, ctx: StepContext, m: int, eps: Any, c: float, V: Any, X: Any, step: int, sign: int, to: int,
               like: Any, keep: bool, digest: bool = False) -> fixedkernels.Sheared:
        """One fused step (:func:`linmultistep.fixedkernels.shear`): V' = q(c eps_m 2^Sv) - V, then
        X_to = X + sign q(w_step V' 2^(Sx-Sv)) and its view x_to; |eps| <= eps_bound watched."""
        sc = self.scales(ctx)
        out = fixedkernels.shear(
            ctx.backend, eps, c * 2.0**sc.Sv, self.eps_bound, V, X, self._shift_factor(ctx, step), sign,
            self.tables(ctx).s[to] * 2.0**-sc.Sx, like, keep, digest)
        self._watch_eps(ctx, m, eps, out.over)
        return out

    def _shift(self, ctx: StepContext, m: int, V: Any) -> Any:
        """q(w_m V 2^(Sx-Sv)): the xbar increment of step m in X units."""
        return ctx.backend.quantize(V, self._shift_factor(ctx, m))

    def _shift_factor(self, ctx: StepContext, m: int) -> float:
        sc = self.scales(ctx)
        return self.tables(ctx).w[m] * 2.0 ** (sc.Sx - sc.Sv)

    # --- the two shears ---------------------------------------------------------------------
    def down(self, ctx: StepContext, i: int, above: FixedEntry, c: float) -> FixedEntry:
        """Point i-1 from point i: V_i = -V_{i+1} + q(c_i eps_i), X_{i-1} = X_i - q(w_i V_i)."""
        be, t = ctx.backend, self.tables(ctx)
        run: FixedPointRun = ctx.prepared
        if above.V is None and abs(c) > abs(t.c_top) + abs(t.c_bot):
            raise FixedPointRangeError(
                f"mode 'bits' cannot start sampling at grid index {i}: its starter coefficient {c:.4g} exceeds the "
                f"bound {abs(t.c_top) + abs(t.c_bot):.4g} that fixed the scales (start at the noise end)"
            )
        eps = self._slope(ctx, i, above.x)
        checksum = above.V is not None and i in run.expected
        out = self._shear(ctx, i, eps, c, above.V, above.X, i, -1, i - 1, above.x, above.dV is not None, checksum)
        if above.dV is not None and not be.equal(out.dV, above.dV):
            raise NondeterministicNetworkError(
                f"the network's output at grid index {i} ({ctx.describe(i)}) differs from the one the inversion saw "
                "for the same input (another device, dtype, batch composition or a non-deterministic kernel); "
                "the reconstruction would not be exact"
            )
        if checksum:
            ctx.watch_equal(i, out.digest, run.expected[i], (
                f"the network's output at grid index {i} ({ctx.describe(i)}) differs from the one the inversion saw "
                "at that step (its checksum in the latent's bits_digests); the network drifted or is not "
                "deterministic, so the reconstruction would not be exact"))
        return FixedEntry(out.x, out.X, out.V, None)

    def up(self, ctx: StepContext, n: int, below: FixedEntry) -> FixedEntry:
        """Point n from the complete point n-1: X_n = X_{n-1} + q(w_n V_n) (V_{n+1} follows at the next step)."""
        be, sc = ctx.backend, self.scales(ctx)
        X = be.int_lincomb([1, 1], [below.X, self._shift(ctx, n, below.V)])
        return FixedEntry(be.dequantize(X, self.tables(ctx).s[n] * 2.0**-sc.Sx, below.x), X, None, None)

    def backward(self, ctx: StepContext, n: int, window: MutableMapping[int, Entry]) -> Entry:
        """Complete the open point n-1 and make point n in one fused pass:
        V_n = -V_{n-1} + q(c_{n-1} eps(x_{n-1})), X_n = X_{n-1} + q(w_n V_n)."""
        below = window[n - 1]
        if not self.is_open(n - 1, below, self.tables(ctx).N):
            return self.up(ctx, n, below)
        eps = self._slope(ctx, n - 1, below.x)
        out = self._shear(ctx, n - 1, eps, self.tables(ctx).c[n - 1], window[n - 2].V, below.X, n, 1, n, below.x,
                          True, True)
        ctx.prepared.digests[n - 1] = out.digest
        window[n - 1] = below._replace(V=out.V, dV=out.dV)
        return FixedEntry(out.x, out.X, None, None)

    def completed(self, ctx: StepContext, n: int, entry: FixedEntry, V_n: Any) -> FixedEntry:
        """V_{n+1} = -V_n + q(c_n eps(x_n)); the increment and its checksum are recorded (a run that stops
        below the noise end; the steps themselves complete the open point in :meth:`backward`)."""
        V, dV = self._increment(ctx, n, self._slope(ctx, n, entry.x), self.tables(ctx).c[n], V_n)
        ctx.prepared.digests[n] = ctx.backend.checksum(dV)
        return entry._replace(V=V, dV=dV)

    def started(self, ctx: StepContext, n: int, below: FixedEntry) -> FixedEntry:
        """V_n = q(c_start_n eps(x_{n-1} at point n's time)): the DDIM-inversion guess."""
        eps = self._slope(ctx, n, below.x, cached=False)
        return below._replace(V=self._increment(ctx, n, eps, self.tables(ctx).c_start[n], None)[0])
