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

import numpy as np
from dataclasses import dataclass, field
from typing import Any, ContextManager, Mapping, MutableMapping, NamedTuple

from . import fixedkernels
from .context import StepContext
from .entries import Entry
from .errors import FixedPointRangeError, MethodError, NondeterministicNetworkError, NonFiniteError
from .forms import (
    DEFAULT_DATA_BOUND,
    DEFAULT_EPS_BOUND,
    Bits,
    Form,
    StateProbes,
    Stepped,
    TwoStepTables,
    check_two_step_belm,
    two_step_tables,
)
from .methods import LinearMultistep

__all__ = [
    "FixedEntry", "FixedPointBelm", "BitsRun", "FixedPointRun", "FixedPointScales", "fixed_point_scales",
    "DEFAULT_DATA_BOUND", "DEFAULT_EPS_BOUND", "DIGESTS_KEY",
]

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
class BitsRun:
    """The per-run state of mode 'bits': tables, scales, and the determinism bookkeeping."""

    tables: TwoStepTables
    scales: FixedPointScales
    unchecked: bool  # the first network input of an inversion is still to be evaluated twice
    digests: dict[int, Any] = field(default_factory=dict)  # grid index -> checksum(dV) (lazy)
    expected: dict[int, list[int]] = field(default_factory=dict)  # from the latent being reconstructed (per row)


FixedPointRun = BitsRun  # the earlier name


class FixedPointBelm(Form):
    """A 2-step BELM in int64 fixed point: round trips exact to the last bit (module docstring).

    ``mode`` (:class:`~linmultistep.forms.Bits`) holds ``data_bound`` (|x| of the array a run starts
    from: data for inversion, noise for sampling) and ``eps_bound`` (the network's |eps|); both are
    checked during the run and a latent records them in its mode ('bits' for the defaults).
    """

    def __init__(self, method: LinearMultistep, mode: "Bits | None" = None, *,
                 data_bound: float = DEFAULT_DATA_BOUND, eps_bound: float = DEFAULT_EPS_BOUND) -> None:
        self.mode_spec = mode if mode is not None else Bits(data_bound, eps_bound)
        self.method = check_two_step_belm(method, "bits")

    @property
    def base(self) -> LinearMultistep:
        """The method underneath (its coefficients)."""
        return self.method  # type: ignore[return-value]

    @property
    def data_bound(self) -> float:
        return self.mode_spec.data_bound

    @property
    def eps_bound(self) -> float:
        return self.mode_spec.eps_bound

    # --- the two steps ----------------------------------------------------------------------------
    def forward(self, ctx: StepContext, run: BitsRun, n: int, window: MutableMapping[int, Entry]) -> Stepped:
        """Sampling step i -> i-1 (i = n + 1), the stable form's two shears on integers, one fused pass:

            V_i = -V_{i+1} + q(c_i eps(x_i) 2^Sv),   X_{i-1} = X_i - q(w_i V_i 2^(Sx-Sv)),   x_{i-1} = s_{i-1} X_{i-1} 2^-Sx

        (q: round half to even; the starter from a point with nothing above: V_{i+1} = 0, c_start_i).
        Checked: |eps| <= eps_bound; the increment against the one the inversion kept (``dV`` of the
        latent's last-but-one point) and against the latent's per-step checksums (deferred).
        """
        t, i = run.tables, n + 1
        above = window[i]
        starter = len(window) < 2
        c = t.c_start[i] if starter else t.c[i]
        if above.V is None and abs(c) > abs(t.c_top) + abs(t.c_bot):
            raise FixedPointRangeError(
                f"mode 'bits' cannot start sampling at grid index {i}: its starter coefficient {c:.4g} exceeds the "
                f"bound {abs(t.c_top) + abs(t.c_bot):.4g} that fixed the scales (start at the noise end)"
            )
        eps = self._eps(ctx, run, i, above.x)
        checksum = above.V is not None and i in run.expected
        out = self._shear(ctx, run, i, eps, c, above.V, above.X, i, -1, above.x, above.dV is not None, checksum)
        if above.dV is not None and not ctx.backend.equal(out.dV, above.dV):
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
        return Stepped(FixedEntry(out.x, out.X, out.V, None), self.method.starter.spec if starter else self.spec, True)

    def backward(self, ctx: StepContext, run: BitsRun, n: int, window: MutableMapping[int, Entry]) -> Stepped:
        """Inversion step n-1 -> n: complete the open point n-1 and make point n in one fused pass,

            V_n = -V_{n-1} + q(c_{n-1} eps(x_{n-1}) 2^Sv),   X_n = X_{n-1} + q(w_n V_n 2^(Sx-Sv)),

        the sampling step's integers subtracted back: exact to the last bit. The increment q(.) and its
        checksum are kept (the latent's ``dV`` and ``bits_digests``). From the data end the starter's
        guess (approximate): V_n = q(c_start_n eps(x_{n-1} at point n's time) 2^Sv).
        """
        t, be = run.tables, ctx.backend
        below = window[n - 1]
        if len(window) < 2:  # the starter's guess, then the X shear
            eps = self._eps(ctx, run, n, below.x, cached=False)
            below = window[n - 1] = below._replace(V=self._increment(ctx, run, n, eps, t.c_start[n], None)[0])
        elif below.V is None and 0 < n - 1 < t.N:  # the open point: both shears fused
            eps = self._eps(ctx, run, n - 1, below.x)
            out = self._shear(ctx, run, n - 1, eps, t.c[n - 1], window[n - 2].V, below.X, n, 1, below.x, True, True)
            run.digests[n - 1] = out.digest
            window[n - 1] = below._replace(V=out.V, dV=out.dV)
            return Stepped(FixedEntry(out.x, out.X, None, None), self.spec, True)
        X = be.int_lincomb([1, 1], [below.X, self._shift(run, n, below.V, be)])
        entry = FixedEntry(be.dequantize(X, t.s[n] * 2.0**-run.scales.Sx, below.x), X, None, None)
        starter = len(window) < 2
        return Stepped(entry, self.method.starter.spec if starter else self.spec, not starter)

    # --- the run around them -------------------------------------------------------------------------
    def begin(self, ctx: StepContext, direction: str, window: Mapping[int, Any],
              metadata: Mapping[str, Any] | None = None) -> tuple[BitsRun, dict[int, Entry]]:
        """The tables and scales (refused when the grid cannot be held bit-exactly), the latent's recorded
        checksums, and the start window on the fixed-point grid (|x| <= data_bound checked)."""
        t = two_step_tables(self.base, ctx)
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
        run = BitsRun(t, sc, unchecked=direction == "backward")
        recorded = (metadata or {}).get(DIGESTS_KEY)
        if recorded:
            run.expected = {int(k): list(map(int, v)) for k, v in dict(recorded).items()}
        return run, self._enter(ctx, run, window)

    def _enter(self, ctx: StepContext, run: BitsRun, window: Mapping[int, Any]) -> dict[int, Entry]:
        t, sc, be = run.tables, run.scales, ctx.backend
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
                X = be.int_lincomb([1, -1], [above.X, self._shift(run, m + 1, V, be)])
                out[m] = FixedEntry(be.dequantize(X, t.s[m] * 2.0**-sc.Sx, out[m].x), X, V, None)
        return out

    def close(self, ctx: StepContext, run: BitsRun, n: int, window: MutableMapping[int, Entry]) -> None:
        """An inversion stopped at n < N: complete point n, V_{n+1} = -V_n + q(c_n eps(x_n) 2^Sv), with its
        increment and checksum recorded."""
        e = window[n]
        if e.V is None and 0 < n < run.tables.N and n - 1 in window:
            V, dV = self._increment(ctx, run, n, self._eps(ctx, run, n, e.x), run.tables.c[n], window[n - 1].V)
            run.digests[n] = ctx.backend.checksum(dV)
            window[n] = e._replace(V=V, dV=dV)

    def records(self, ctx: StepContext, run: BitsRun) -> dict[str, Any]:
        if not run.digests:
            return {}
        keys = sorted(run.digests)
        values = ctx.backend.read([run.digests[k] for k in keys])
        return {DIGESTS_KEY: {str(k): list(map(int, v)) for k, v in zip(keys, values)}}

    def guard(self, ctx: StepContext) -> ContextManager[Any]:
        return ctx.backend.deterministic()

    def probes(self, ctx: StepContext, run: BitsRun) -> StateProbes:
        # x = s X 2^-Sx is finite for every int64 X in float32/float64, and each x is either the next network
        # input (its output is range-checked, a NaN fails the check) or the run's last point (checked exactly
        # by finish); a float16 x that overflows feeds an inf to the network, whose output fails the check
        return "none"

    # --- the network, bounded and checked -----------------------------------------------------------
    def _eps(self, ctx: StepContext, run: BitsRun, m: int, x: Any, cached: bool = True) -> Any:
        """eps(x_m); the first call of an inversion is made twice and compared bitwise."""
        eps = ctx.slope(m, x) if cached else ctx.evaluate(x, m)
        if run.unchecked:
            run.unchecked = False
            again = ctx.evaluate(x, m)
            if not ctx.backend.equal(eps, again):
                if not ctx.backend.all_finite(eps):  # NaN != NaN: name the NaN, not the network's determinism
                    raise NonFiniteError(
                        f"the network returned NaN or infinity at grid index {m} ({ctx.describe(m)}) for a finite "
                        "input; the run stopped and nothing you passed in was changed")
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

        def error(_: Any) -> Exception:
            big = be.max_abs(eps)
            if not math.isfinite(big):  # NaN or infinity: the network's fault, not the bound's
                return NonFiniteError(
                    f"the network returned NaN or infinity at grid index {m} ({ctx.describe(m)}) for a finite "
                    "input; the run stopped and nothing you passed in was changed")
            return FixedPointRangeError(
                f"|eps| = {big:.4g} at grid index {m} ({ctx.describe(m)}) exceeds eps_bound = "
                f"{self.eps_bound:g} that fixes the fixed-point scale; pass a larger eps_bound "
                "(mode_options={'eps_bound': ...})")

        if over is None:
            ctx.watch_bound(m, be.max_abs_lazy(eps), self.eps_bound, error)
        else:
            ctx.watch_bound(m, over, 0, error)

    def _increment(self, ctx: StepContext, run: BitsRun, m: int, eps: Any, c: float, V: Any) -> tuple[Any, Any]:
        """(q(c eps 2^Sv) - V, the increment), |eps| <= eps_bound watched (composed: once per run)."""
        dV = ctx.backend.quantize(eps, c * 2.0 ** run.scales.Sv)
        self._watch_eps(ctx, m, eps, None)
        return (dV if V is None else ctx.backend.int_lincomb([-1, 1], [V, dV])), dV

    def _shear(self, ctx: StepContext, run: BitsRun, m: int, eps: Any, c: float, V: Any, X: Any, step: int,
               sign: int, like: Any, keep: bool, digest: bool = False) -> fixedkernels.Sheared:
        """One fused step (:func:`linmultistep.fixedkernels.shear`): V' = q(c eps_m 2^Sv) - V, then
        X_to = X + sign q(w_step V' 2^(Sx-Sv)) and its view x_to, to = step (inverting) or step - 1
        (sampling); |eps| <= eps_bound watched."""
        sc, to = run.scales, (step if sign > 0 else step - 1)
        out = fixedkernels.shear(
            ctx.backend, eps, c * 2.0**sc.Sv, self.eps_bound, V, X, run.tables.w[step] * 2.0 ** (sc.Sx - sc.Sv), sign,
            run.tables.s[to] * 2.0**-sc.Sx, like, keep, digest)
        self._watch_eps(ctx, m, eps, out.over)
        return out

    @staticmethod
    def _shift(run: BitsRun, m: int, V: Any, be: Any) -> Any:
        """q(w_m V 2^(Sx-Sv)): the xbar increment of step m in X units."""
        return be.quantize(V, run.tables.w[m] * 2.0 ** (run.scales.Sx - run.scales.Sv))
