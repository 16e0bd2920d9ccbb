"""Zero-stable members of lower-order BELM families (free parameters), at uniform steps.

One free parameter c (order 2k-3): rho(z; c) = (z - 1) r(z; c). A zero of r can reach the unit
circle only where r(z; c) and its reciprocal z^n r(1/z; c) share a zero, i.e. where the resultant
R(c) = Res_z(r, z^n r(1/z)) vanishes (this includes z = +-1). Between consecutive real zeros of
R the number of zeros inside the disk is constant, so one exact verdict at a rational point per
open interval, plus one at each critical value, decides the whole real line. The verdicts
are exact (:mod:`.rootcond`) at rational points; an irrational critical value is checked with
50-digit root finding and reported as such.

Several free parameters: the family is sampled on a rational grid with exact verdicts; the best
zero-stable member found (smallest |error constant|, C_{p+1}/sigma(1) as everywhere, :mod:`.relation`)
is a witness, not an optimum.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Sequence

import sympy as sp

from .derive import BELMDerivation, derive_belm
from .rootcond import Z
from .stability import is_zero_stable

__all__ = ["FamilyResult", "zero_stable_family", "search_zero_stable"]


@dataclass
class FamilyResult:
    """Outcome of the search over one BELM family (k, order)."""

    k: int
    order: int
    params: tuple[sp.Symbol, ...]
    rho: sp.Expr
    error_constant: sp.Expr
    exact: bool
    exists: bool
    best: dict | None = None
    best_constant: sp.Expr | None = None
    lines: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.exists

    def __str__(self) -> str:
        head = (f"{self.k}-step BELM, order {self.order}, free {', '.join(map(str, self.params))}: "
                f"rho(z) = {sp.factor(self.rho)}, error constant C_(p+1)/sigma(1) = {self.error_constant}")
        verdict = ("zero-stable members exist" if self.exists else
                   "NO zero-stable member" + (" (proved: exact criterion on every interval and critical value)"
                                               if self.exact else " found on the search grid"))
        out = [head, f"  => {verdict}"]
        if self.best is not None:
            out.append(f"  best: {self.best}, error constant {self.best_constant}")
        out += [f"  {line}" for line in self.lines]
        return "\n".join(out)


def _family(d: BELMDerivation) -> tuple[sp.Expr, sp.Expr]:
    """rho and the error constant of the family at equal steps, in its free parameters (the model's)."""
    return d.relation.rho(), d.error_constant


def _verdict(d: BELMDerivation, values: dict) -> bool:
    return bool(is_zero_stable(d, params=values))


def _sample_points(roots_iv: list[tuple[sp.Rational, sp.Rational]]) -> list[sp.Rational]:
    """Rational points strictly between and beyond isolating intervals."""
    if not roots_iv:
        return [sp.Integer(0)]
    pts = [roots_iv[0][0] - 1]
    for (_, b1), (a2, _) in zip(roots_iv, roots_iv[1:]):
        pts.append((b1 + a2) / 2)
    pts.append(roots_iv[-1][1] + 1)
    return pts


def _one_parameter(d: BELMDerivation) -> FamilyResult:
    (c,) = d.params
    rho, const = _family(d)
    r = sp.Poly(sp.quo(sp.Poly(rho, Z), sp.Poly(Z - 1, Z)), Z)
    n = r.degree()
    rstar = sp.Poly(sp.expand(Z**n * r.as_expr().subs(Z, 1 / Z)), Z)
    R = sp.Poly(sp.resultant(r.as_expr(), rstar.as_expr(), Z), c)
    lines = [f"critical values: real zeros of R(c) = Res_z(r, r*) = {sp.factor(R.as_expr())}"]
    sqf = sp.Poly(sp.sqf_part(R.as_expr()), c)
    ivs = sorted(sqf.intervals(), key=lambda t: t[0][0])
    ivs = [(sp.Rational(a), sp.Rational(b)) for (a, b), _ in ivs]
    real_roots = sorted(sqf.real_roots(), key=lambda x: float(x))
    exact = True
    zs_intervals: list[tuple[Any, Any]] = []
    zs_points: list[Any] = []
    pts = _sample_points(ivs)
    bounds = [-sp.oo] + real_roots + [sp.oo]
    for j, pt in enumerate(pts):
        ok = _verdict(d, {c: pt})
        lines.append(f"  c in ({bounds[j]}, {bounds[j + 1]}): sample c = {pt}: {'zero-stable' if ok else 'not zero-stable'}")
        if ok:
            zs_intervals.append((bounds[j], bounds[j + 1]))
    for x in real_roots:
        if x.is_Rational:
            ok = _verdict(d, {c: x})
            how = "exact"
        else:
            exact = False
            rts = sp.Poly(r.as_expr().subs(c, sp.N(x, 60)), Z).nroots(n=50)
            ok = all(abs(z) < 1 - sp.Float("1e-40") for z in rts)
            how = "numerical, 50 digits"
        lines.append(f"  c = {x}: {'zero-stable' if ok else 'not zero-stable'} ({how})")
        if ok:
            zs_points.append(x)
    exists = bool(zs_intervals or zs_points)
    best = best_c = None
    if exists:
        cands: list[tuple[Any, bool]] = [(p, True) for p in zs_points]
        for lo, hi in zs_intervals:
            for e in (lo, hi):
                if e.is_finite:
                    cands.append((e, e in zs_points))
            z0 = sp.solve(sp.numer(sp.together(const)), c)
            cands += [(z, True) for z in z0 if z.is_real and (lo < z < hi)]
        val = [(abs(const.subs(c, p)), p, attained) for p, attained in cands]
        if val:
            v, p, attained = min(val, key=lambda t: float(t[0]))
            best = {str(c): p, "attained": attained}
            best_c = const.subs(c, p)
        if zs_intervals:
            lines.append(f"  zero-stable for c in {zs_intervals}" + (f" and at {zs_points}" if zs_points else ""))
    return FamilyResult(d.k, d.order, d.params, rho, const, exact, exists, best, best_c, lines)


def _progress(iterable, total: int, desc: str, progress: bool | None):
    """tqdm bar on stderr; progress=None shows it only on a terminal (tqdm's disable=None)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="member" if "grid" in desc else "family",
                disable=None if progress is None else not progress, leave=False)


def _grid_search(d: BELMDerivation, values: Sequence[sp.Rational], progress: bool | None = None) -> FamilyResult:
    rho, const = _family(d)
    found, both = [], []
    skipped = 0
    combos = itertools.product(values, repeat=len(d.params))
    for combo in _progress(combos, len(values) ** len(d.params), f"grid {d.k}-step order {d.order}", progress):
        sub = dict(zip(d.params, combo))
        cval = const.subs(sub)
        if sp.simplify(d.uniform().subs(sub).a[-1]) == 0 or not cval.is_finite:
            continue  # a_k = 0: not invertible (or sigma(1) = 0: not consistent)
        if cval == 0:
            skipped += 1  # order > p: belongs to the next family
            continue
        v = is_zero_stable(d, params=sub)
        if v:
            member = (abs(cval), {str(p): x for p, x in sub.items()})
            found.append(member)
            if v.both_directions:
                both.append(member)
    lines = [f"grid: each of {', '.join(map(str, d.params))} in {{{', '.join(map(str, values))}}} "
             f"({len(values) ** len(d.params)} members, exact verdict each, {skipped} of higher order skipped); "
             f"{len(found)} zero-stable, {len(both)} zero-stable in both directions (all roots on |z| = 1)"]
    if both:
        vb, bb = min(both, key=lambda t: float(t[0]))
        lines.append(f"best zero-stable in both directions: {bb}, error constant "
                     f"{const.subs({sp.Symbol(k_): x for k_, x in bb.items()})}")
    if not found:
        return FamilyResult(d.k, d.order, d.params, rho, const, False, False, None, None, lines)
    v, best = min(found, key=lambda t: float(t[0]))
    best_c = const.subs({sp.Symbol(k_): x for k_, x in best.items()})
    return FamilyResult(d.k, d.order, d.params, rho, const, False, True, best, best_c, lines)


DEFAULT_GRID = tuple(sp.Rational(n, 4) for n in range(-4, 5))


def zero_stable_family(d: BELMDerivation, grid: Sequence[sp.Rational] = DEFAULT_GRID,
                       progress: bool | None = None) -> FamilyResult:
    """Search a derived family: exact over the whole line for one parameter, a grid otherwise.

    ``progress``: a tqdm bar over the grid members (None: only on a terminal)."""
    if not d.params:
        raise ValueError("the derivation has no free parameters; use is_zero_stable")
    return _one_parameter(d) if len(d.params) == 1 else _grid_search(d, grid, progress)


def search_zero_stable(k: int, orders: Sequence[int] | None = None, progress: bool | None = None) -> list[FamilyResult]:
    """The lower-order k-step BELM families, from order 2k-3 down to k-1, searched in turn.

    Slow for k = 4 (a minute or more); ``progress`` shows tqdm bars over the families and the
    grid members on stderr (None: only when stderr is a terminal, False: never)."""
    orders = list(orders) if orders is not None else list(range(2 * k - 3, k - 2, -1))
    return [zero_stable_family(derive_belm(k, p), progress=progress)
            for p in _progress(orders, len(orders), f"{k}-step BELM families", progress)]
