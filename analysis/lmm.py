"""Linear multistep methods as objects (nodepy style): rho, sigma, order, error constant, stability.

A k-step method in the classical form (Hairer, Norsett & Wanner, *Solving ODEs I*, III.2;
Lambert, *Numerical Methods for ODE Systems*, ch. 3)

    sum_{j=0..k} alpha_j y_{n+j} = h sum_{j=0..k} beta_j f_{n+j},      alpha_k = 1,

is the fixed-coefficient view of the one symbolic model, :class:`.relation.LMRelation` (a
variable-step relation at equal steps, or at a constant step ratio): every object here holds
its relation (``.relation``), and its order, error constant, rho, sigma and zero-stability are
read from it (conventions, including THE error constant C_{p+1}/sigma(1), in :mod:`.relation`).
What only this view adds is absolute stability: applied to y' = lambda y the method becomes the
recurrence with characteristic polynomial rho(zeta) - z sigma(zeta), z = h lambda; the
absolute-stability region is the set of z where that polynomial satisfies the root condition,
and its boundary lies on the boundary locus z(theta) = rho(e^{i theta}) / sigma(e^{i theta}).

A variable-step rule of the core (:func:`linmultistep.get_method`) becomes such a method at a
constant step ratio r = h_i / h_{i+1} (newest step over the one before, in the direction of
travel) with :meth:`LinearMultistepMethod.from_method`: its coefficients are then constant,
the nodes s_j are the actual (non-uniform) positions, and h is the newest step h_i. Order,
error constant and zero-stability at that ratio are exact (zero-stability at a constant ratio
is Grigorieff's criterion); the absolute-stability region at r != 1 is that of the recurrence
with the coefficients frozen and z = h_i lambda (exact only at r = 1, where steps are equal).

Examples (the classical truths the tests also check):

    >>> from linmultistep.analysis.lmm import adams_bashforth, bdf, leapfrog
    >>> ab2 = adams_bashforth(2)
    >>> ab2
    <LinearMultistepMethod AB2: k=2, order 2>
    >>> ab2.rho, ab2.sigma
    (zeta**2 - zeta, 3*zeta/2 - 1/2)
    >>> ab2.order(), ab2.error_constant()
    (2, 5/12)
    >>> [(round(lo, 9), round(hi, 9)) for lo, hi in ab2.real_stability_intervals()]
    [(-1.0, 0.0)]
    >>> bool(bdf(2).is_zero_stable()), bdf(2).is_A_stable(), bdf(3).is_A_stable()
    (True, True, False)
    >>> bool(bdf(7).is_zero_stable())
    False
    >>> leapfrog().is_absolutely_stable([0.5j, 1j, -0.01 + 0.5j]).tolist()
    [True, False, False]

A catalogue method of the core at a step ratio (O-BELM at equal steps is the leapfrog rule):

    >>> from linmultistep.analysis.lmm import LinearMultistepMethod
    >>> ob = LinearMultistepMethod.from_method("obelm", ratio=1)
    >>> ob.alpha == leapfrog().alpha and ob.beta == leapfrog().beta
    True
    >>> ob2 = LinearMultistepMethod.from_method("obelm", ratio=2)
    >>> ob2.order(), bool(ob2.is_zero_stable())
    (2, False)
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import sympy as sp

from . import relation as model
from .relation import LMRelation, exact_number
from .rootcond import RootCondition, Z, _palindromic_reduced, root_condition

__all__ = [
    "LinearMultistepMethod",
    "ZETA",
    "adams_bashforth",
    "adams_moulton",
    "bdf",
    "leapfrog",
    "exact_number",
]

ZETA = sp.Symbol("zeta")  # variable of rho and sigma (z is reserved for h lambda)


def _relation_of(alpha: Sequence[sp.Expr], beta: Sequence[sp.Expr], nodes: Sequence[sp.Expr], name: str) -> LMRelation:
    """The model of sum alpha_j y_{n+j} = h sum beta_j f_{n+j} (alpha_k = 1) on nodes s_j, in units of h:
    a_j = -alpha_{k-j}, b_j h_{i-1+j} = -beta_{k-j}, steps tau_j - tau_{j-1} with tau_j = s_k - s_{k-j}
    (the inverse of :meth:`.relation.LMRelation.classical`; h_{i-1} = 1)."""
    k = len(alpha) - 1
    taus = [nodes[k] - nodes[k - j] for j in range(k + 1)]
    steps = [taus[j] - taus[j - 1] for j in range(1, k + 1)]
    if any(s <= 0 for s in steps):
        raise ValueError(f"{name}: nodes must increase towards the new point, got {list(nodes)}")
    a = tuple(-alpha[k - j] for j in range(1, k + 1))
    b = (-beta[k],) + tuple(-beta[k - j] / steps[j - 1] for j in range(1, k + 1))
    return LMRelation(a, b, tuple(steps), sp.Integer(1), name)


class LinearMultistepMethod:
    """sum_j alpha_j y_{n+j} = h sum_j beta_j f_{n+j} with exact rational coefficients (module docstring).

    ``alpha``, ``beta``: k+1 numbers each, lowest index first (nodepy's order); normalised so
    that alpha_k = 1. ``nodes``: positions s_0..s_k of the points in units of h (default 0..k).
    """

    def __init__(self, alpha: Sequence[Any], beta: Sequence[Any], name: str = "LMM",
                 nodes: Sequence[Any] | None = None, step_ratio: Any = None, source: Any = None,
                 relation: LMRelation | None = None) -> None:
        if len(alpha) != len(beta) or len(alpha) < 2:
            raise ValueError(f"alpha and beta need the same length k+1 >= 2, got {len(alpha)} and {len(beta)}")
        al = [exact_number(a) for a in alpha]
        be = [exact_number(b) for b in beta]
        if al[-1] == 0:
            raise ValueError(f"{name}: alpha_k (the coefficient of the new point) is 0")
        self.alpha = tuple(a / al[-1] for a in al)
        self.beta = tuple(b / al[-1] for b in be)
        k = len(al) - 1
        self.nodes = tuple(exact_number(s) for s in nodes) if nodes is not None else tuple(sp.Integer(j) for j in range(k + 1))
        if len(self.nodes) != k + 1:
            raise ValueError(f"{name}: {k + 1} nodes needed, got {len(self.nodes)}")
        self.name = name
        self.step_ratio = step_ratio
        self.source = source
        #: the one model this method is a view of (built from alpha, beta, nodes if not given)
        self.relation = relation if relation is not None else _relation_of(self.alpha, self.beta, self.nodes, name)

    @classmethod
    def from_relation(cls, rel: LMRelation, ratio: Any = 1, name: str | None = None,
                      source: Any = None) -> "LinearMultistepMethod":
        """The view of a relation at equal steps (ratio 1) or at a constant step ratio r = h_i / h_{i+1}."""
        r = exact_number(ratio)
        f = rel.fixed(r)
        alpha, beta, nodes = f.classical()
        label = name or (rel.label + ("" if r == 1 else f" at step ratio {r}"))
        return cls(alpha, beta, name=label, nodes=nodes, step_ratio=r, source=source, relation=f)

    # --- structure ----------------------------------------------------------------------
    @property
    def k(self) -> int:
        """Number of steps."""
        return len(self.alpha) - 1

    @property
    def rho(self) -> sp.Expr:
        """First characteristic polynomial rho(zeta) = sum_j alpha_j zeta^j (from the model)."""
        return self.relation.rho().subs(Z, ZETA)

    @property
    def sigma(self) -> sp.Expr:
        """Second characteristic polynomial sigma(zeta) = sum_j beta_j zeta^j (from the model)."""
        return self.relation.sigma().subs(Z, ZETA)

    def characteristic_polynomials(self) -> tuple[np.poly1d, np.poly1d]:
        """(rho, sigma) as numpy poly1d in float64 (as nodepy returns them)."""
        return (np.poly1d([float(a) for a in reversed(self.alpha)]),
                np.poly1d([float(b) for b in reversed(self.beta)]))

    @property
    def explicit(self) -> bool:
        """beta_k = 0."""
        return self.beta[-1] == 0

    @property
    def uniform(self) -> bool:
        return all(s - self.nodes[0] == j for j, s in enumerate(self.nodes))

    # --- accuracy and zero-stability: read from the model ---------------------------------------
    def order_condition(self, q: int) -> sp.Rational:
        """C_q = sum_j alpha_j s_j^q / q! - sum_j beta_j s_j^(q-1) / (q-1)! with the nodes s_j measured
        from the new point (= (-1)^q times the model's C_q; C_0 = rho(1))."""
        return sp.nsimplify((-1) ** q * self.relation.order_condition(q))

    def order(self, qmax: int | None = None) -> int:
        """Largest p with C_0 = ... = C_p = 0 (0 if not consistent)."""
        try:
            return self.relation.order(qmax)
        except ValueError:  # C_0 != 0
            return 0

    def lte_constant(self) -> sp.Rational:
        """C_{p+1}: the local truncation error is C_{p+1} h^{p+1} y^{(p+1)} + O(h^{p+2}) (alpha_k = 1)."""
        return self.relation.lte_constant()

    def error_constant(self) -> sp.Rational:
        """THE error constant C_{p+1} / sigma(1) (HNW III.2): AB2 5/12, trapezoid -1/12, BDF k -1/(k+1)."""
        return self.relation.error_constant()

    def zero_stability(self) -> RootCondition:
        """Exact root condition on rho (truthy when zero-stable); see :func:`.rootcond.root_condition`."""
        return self.relation.zero_stability().sampling

    def is_zero_stable(self) -> RootCondition:
        """Alias of :meth:`zero_stability` (nodepy's name)."""
        return self.zero_stability()

    # --- absolute stability -------------------------------------------------------------------
    def stability_polynomial_roots(self, z: Any) -> np.ndarray:
        """Roots of rho - z sigma for each z (shape z.shape + (k,)); inf where the degree drops."""
        z = np.asarray(z, dtype=np.complex128)
        al = np.array([float(a) for a in self.alpha])
        be = np.array([float(b) for b in self.beta])
        c = al[None, :] - z.reshape(-1, 1) * be[None, :]  # coefficients of zeta^0..zeta^k per z
        lead = c[:, -1]
        ok = np.abs(lead) > 1e-14 * np.abs(c).max(axis=1)
        k = self.k
        comp = np.zeros((c.shape[0], k, k), dtype=np.complex128)
        comp[:, 0, :] = -c[:, -2::-1] / np.where(ok, lead, 1.0)[:, None]
        if k > 1:
            comp[:, 1:, :-1] = np.eye(k - 1)
        roots = np.linalg.eigvals(comp)
        roots[~ok] = np.inf  # a root escaped to infinity (e.g. z = 1/beta_k)
        return roots.reshape(z.shape + (k,))

    def is_absolutely_stable(self, z: Any, tol: float = 1e-9) -> np.ndarray:
        """Root condition of rho - z sigma, numerically: all roots in |zeta| <= 1 + tol and those
        within tol of the circle pairwise apart (a double root on the circle is unstable)."""
        roots = self.stability_polynomial_roots(z)
        mag = np.abs(roots)
        inside = np.all(mag <= 1 + tol, axis=-1)
        near = np.abs(mag - 1) <= max(tol, 1e-7)
        sep = np.ones(inside.shape, dtype=bool)
        if self.k > 1:
            d = np.abs(roots[..., :, None] - roots[..., None, :])
            both = near[..., :, None] & near[..., None, :] & ~np.eye(self.k, dtype=bool)
            sep = ~np.any(both & (d < 1e-6), axis=(-1, -2))
        return inside & sep

    def boundary_locus(self, n: int = 2001) -> np.ndarray:
        """z(theta) = rho(e^{i theta}) / sigma(e^{i theta}) at n angles in [0, 2 pi] (inf at zeros of sigma)."""
        w = np.exp(1j * np.linspace(0.0, 2 * np.pi, n))
        r, s = self.characteristic_polynomials()
        with np.errstate(divide="ignore", invalid="ignore"):
            z = r(w) / s(w)
        return np.where(np.isfinite(z), z, np.inf)

    def stability_grid(self, bounds: Sequence[float] | None = None, n: int = 201) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(Re z, Im z, stable) on an n x n grid over bounds = (re_min, re_max, im_min, im_max)."""
        bounds = bounds or self.default_bounds()
        x = np.linspace(bounds[0], bounds[1], n)
        y = np.linspace(bounds[2], bounds[3], n)
        X, Y = np.meshgrid(x, y)
        return X, Y, self.is_absolutely_stable(X + 1j * Y)

    def default_bounds(self) -> tuple[float, float, float, float]:
        """A box around the finite part of the boundary locus (at most 10 wide), with a margin."""
        z = self.boundary_locus(721)
        z = z[np.isfinite(z) & (np.abs(z) < 10)]
        if z.size == 0:
            return (-3.0, 3.0, -3.0, 3.0)
        re, im = z.real, z.imag
        m = max(0.25, 0.15 * max(np.ptp(re), np.ptp(im)))
        ext = max(abs(im).max(), 0.5) + m
        return (float(re.min() - m), float(re.max() + m), -float(ext), float(ext))

    def real_stability_intervals(self, n: int = 4001) -> list[tuple[float, float]]:
        """Maximal real intervals of z in the absolute-stability region (may be unbounded).

        Candidates for their ends are the real points of the boundary locus (theta in [0, pi],
        located by sign changes of Im z(theta) and refined by bisection); between consecutive
        candidates the verdict is constant and decided at the midpoint.
        """
        r, s = self.characteristic_polynomials()

        def zf(t: float) -> complex:
            w = complex(math.cos(t), math.sin(t))
            sw = s(w)
            return complex(r(w) / sw) if sw != 0 else complex("inf")

        th = np.linspace(0.0, np.pi, n)
        vals = np.array([zf(t) for t in th])
        cands = {float(v.real) for v in vals[[0, -1]] if np.isfinite(v)}
        im = vals.imag
        for j in range(n - 1):
            if not (np.isfinite(vals[j]) and np.isfinite(vals[j + 1])):
                continue
            if im[j] == 0 and 0 < j:
                cands.add(float(vals[j].real))
            elif im[j] * im[j + 1] < 0:
                lo, hi = th[j], th[j + 1]
                for _ in range(60):
                    mid = 0.5 * (lo + hi)
                    if np.sign(zf(mid).imag) == np.sign(zf(lo).imag):
                        lo = mid
                    else:
                        hi = mid
                v = zf(0.5 * (lo + hi))
                if abs(v.real) < 1e12:
                    cands.add(float(v.real))
        pts = sorted(cands)
        edges = [-math.inf] + pts + [math.inf]
        out: list[tuple[float, float]] = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            mid = (lo + hi) / 2 if math.isfinite(lo) and math.isfinite(hi) else (
                (hi - 1 - abs(hi)) if math.isfinite(hi) else (lo + 1 + abs(lo)) if math.isfinite(lo) else 0.0)
            if bool(self.is_absolutely_stable(mid)):
                if out and out[-1][1] == lo:
                    out[-1] = (out[-1][0], hi)
                else:
                    out.append((lo, hi))
        return out

    def is_A_stable(self) -> bool:
        """Exact A-stability: the region contains Re z < 0.

        Criterion (maximum principle for Re z(zeta) on |zeta| > 1): sigma of full degree k and
        satisfying the root condition (no pole of z(zeta) outside the disk, none repeated on the
        circle) and Re(rho/sigma) >= 0 on |zeta| = 1. The last is E(theta) = Re(rho(w) sigma(1/w)) >= 0,
        a palindromic Laurent polynomial, i.e. a polynomial G in x = w + 1/w on [-2, 2], checked
        exactly (sign changes = real zeros of odd multiplicity, counted by Sturm sequences); a
        numerical check on rings just outside the circle corroborates the verdict.
        """
        if self.beta[-1] == 0 or not root_condition(self.sigma.subs(ZETA, Z)):
            return False
        k = self.k
        # w^k E(w) with E(w) = (rho(w) sigma(1/w) + rho(1/w) sigma(w)) / 2: palindromic, degree 2k
        rho_w, sig_w = self.rho.subs(ZETA, Z), self.sigma.subs(ZETA, Z)
        e = sp.expand((rho_w * sig_w.subs(Z, 1 / Z) + rho_w.subs(Z, 1 / Z) * sig_w) * Z**k / 2)
        P = sp.Poly(e, Z)
        if P.is_zero:  # Re z = 0 on the whole circle: only the exterior can decide
            return self._right_half_plane_outside_disk()
        G = _palindromic_reduced(sp.Poly([0] * (2 * k + 1 - len(P.all_coeffs())) + P.all_coeffs(), Z))
        x = G.gen
        odd = sp.Integer(1)
        for fac, mult in sp.sqf_list(G.as_expr())[1]:
            if mult % 2:
                odd *= fac
        oddp = sp.Poly(odd, x)
        if oddp.degree() > 0 and oddp.count_roots(-2, 2) - (oddp.eval(-2) == 0) - (oddp.eval(2) == 0) > 0:
            return False  # E changes sign on the circle
        sign = None
        for t in (sp.Rational(1, 3), sp.Rational(-5, 7), sp.Rational(3, 2), sp.Integer(2), sp.Integer(-2)):
            v = G.eval(t)
            if v != 0:
                sign = bool(v > 0)
                break
        if sign is False:
            return False
        return self._right_half_plane_outside_disk()

    def _right_half_plane_outside_disk(self) -> bool:
        """Corroboration on rings |zeta| = 1 + d outside the disk: Re(rho/sigma) >= 0 there. It
        catches what the boundary test cannot see: a simple zero of sigma on the circle whose
        neighbourhood outside the disk is mapped to Re z < 0."""
        r, s = self.characteristic_polynomials()
        th = np.linspace(0.0, 2 * np.pi, 1441)
        for rad in (1.0 + 1e-6, 1.0 + 1e-3, 1.05, 1.5, 3.0, 30.0):
            w = rad * np.exp(1j * th)
            with np.errstate(divide="ignore", invalid="ignore"):
                z = r(w) / s(w)
            z = z[np.isfinite(z)]
            if np.any(z.real < -1e-9 * np.maximum(1.0, np.abs(z))):
                return False
        return True

    # --- plotting ---------------------------------------------------------------------------
    def plot_stability_region(self, bounds: Sequence[float] | None = None, n: int = 301, ax: Any = None,
                              color: str = "tab:blue", filled: bool = True, title: str | None = None,
                              legend: bool = True):
        """The absolute-stability region (grid check of the root condition, shaded) and the
        boundary locus (line) in the z = h lambda plane; returns the matplotlib Figure."""
        from matplotlib.figure import Figure

        if ax is None:
            fig = Figure(figsize=(5, 4.5), layout="constrained")
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        bounds = bounds or self.default_bounds()
        X, Y, S = self.stability_grid(bounds, n)
        if filled and S.any():
            ax.contourf(X, Y, S.astype(float), levels=[0.5, 1.5], colors=[color], alpha=0.35)
        z = self.boundary_locus()
        zf = np.where(np.isfinite(z), z, np.nan)
        ax.plot(zf.real, zf.imag, color=color, lw=1.2, label="boundary locus rho/sigma on |zeta| = 1")
        ax.axhline(0, color="0.6", lw=0.6)
        ax.axvline(0, color="0.6", lw=0.6)
        ax.set_xlim(bounds[0], bounds[1])
        ax.set_ylim(bounds[2], bounds[3])
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel(r"Re $h\lambda$")
        ax.set_ylabel(r"Im $h\lambda$")
        ax.set_title(title or f"{self.name}: absolute-stability region (shaded)")
        if legend:
            ax.legend(fontsize="small", loc="upper left")
        return fig

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_method(cls, method: Any, ratio: Any = 1, **params: Any) -> "LinearMultistepMethod":
        """A catalogue method (or its name) as a fixed-coefficient method at step ratio r = h_i / h_{i+1}.

        With h_i = 1 the steps are h_{i+j} = r^{-j}. The core's relation (BELM paper eq. 12)
        xbar_{i-1} = sum_j a_j xbar_{i-1+j} + sum_j b_j h_{i-1+j} f_{i-1+j}, f = d xbar / d sigmabar,
        travels towards smaller sigmabar, so y' = dy/ds with s = -sigmabar, and
        alpha_{k-j} = -a_j, beta_{k-j} = -b_j h_{i-1+j} / h_i (b_0 multiplies h_{i-1} = r h_i).
        Coefficients come from the rule evaluated on exact rationals when it allows that,
        otherwise from the float64 ``coefficients(h)`` (see :func:`exact_number`).
        """
        from linmultistep import get_method
        from linmultistep.methods import LinearMultistep

        m = get_method(method, **params) if isinstance(method, str) else method
        if not isinstance(m, LinearMultistep):
            raise TypeError(f"{m!r} is not a linear multistep method (EDICT is not; use analysis.is_zero_stable)")
        r = exact_number(ratio)
        if r <= 0:
            raise ValueError(f"step ratio must be positive, got {ratio!r}")
        k = m.k
        hs = [r ** (-j) for j in range(k)]
        a_f, b_f = m.coefficients([float(x) for x in hs])
        label = f"{m.spec}"
        try:  # the rule on exact rationals: the model's relation at this ratio
            rel = model.relation_from_rule(m.rule, k, label=label, steps=hs, h_prev=r)
            if not (np.allclose([float(x) for x in rel.a], a_f, rtol=1e-12, atol=1e-14)
                    and np.allclose([float(x) for x in rel.b], b_f, rtol=1e-12, atol=1e-14)):
                raise ValueError("exact and float64 coefficients differ")
            how = "rule (exact)"
        except Exception:  # a rule that needs floats: recover rationals from the float64 coefficients
            rel = LMRelation(tuple(exact_number(float(x)) for x in a_f), tuple(exact_number(float(x)) for x in b_f),
                             tuple(hs), r, label)
            how = "float64 coefficients"
        alpha, beta, nodes = rel.classical()
        return cls(alpha, beta, name=label + ("" if r == 1 else f" at step ratio {r}"), nodes=nodes, step_ratio=r,
                   source=f"{m.spec} via {how}", relation=rel)

    def __repr__(self) -> str:
        return f"<LinearMultistepMethod {self.name}: k={self.k}, order {self.order()}>"

    def __str__(self) -> str:
        lines = [f"{self.name}: {self.k}-step {'explicit' if self.explicit else 'implicit'} linear multistep method",
                 f"  rho(zeta)   = {self.rho}", f"  sigma(zeta) = {self.sigma}"]
        if not self.uniform:
            lines.append(f"  nodes s_j   = {list(self.nodes)}  (units of the newest step)")
        p = self.order()
        lines.append(f"  order {p}, error constant C_{p + 1}/sigma(1) = "
                     + (str(self.error_constant()) if sum(self.beta) != 0 else "undefined (sigma(1) = 0)"))
        lines.append(f"  zero-stable: {'yes' if self.zero_stability() else 'no'}")
        return "\n".join(lines)


# --- classical families: the model's Lagrange-weight constructions at equal steps -----------------
def adams_bashforth(k: int) -> LinearMultistepMethod:
    """k-step Adams-Bashforth: y_{n+k} - y_{n+k-1} = h sum_{j<k} beta_j f_{n+j} (:func:`.relation.adams`)."""
    return model.adams(k, steps=[1] * k).view(name=f"AB{k}")


def adams_moulton(k: int) -> LinearMultistepMethod:
    """k-step Adams-Moulton (order k+1; k = 1 is the trapezoidal rule) (:func:`.relation.adams`)."""
    return model.adams(k, implicit=True, steps=[1] * k).view(name=f"AM{k}")


def bdf(k: int) -> LinearMultistepMethod:
    """k-step backward differentiation formula (:func:`.relation.bdf`), normalised to alpha_k = 1."""
    return model.bdf(k, steps=[1] * k).view(name=f"BDF{k}")


def leapfrog() -> LinearMultistepMethod:
    """Explicit midpoint (leapfrog): y_{n+2} - y_n = 2 h f_{n+1}."""
    return LinearMultistepMethod([-1, 0, 1], [0, 2, 0], name="leapfrog")
