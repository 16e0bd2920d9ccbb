"""The one symbolic model of a linear multistep method: a variable-step k-step relation.

A k-step relation (BELM paper eq. 12, Wang et al. 2024, arXiv 2410.07273) produces the new
point i-1 from the points i..i-1+k, with coefficients that are functions of the step sizes:

    xbar_{i-1} = sum_{j=1..k} a_j xbar_{i-1+j} + sum_{j=0..k} b_j h_{i-1+j} f_{i-1+j},   f = d xbar / d sigmabar.

Everything the analysis says about a method is read from this one object (:class:`LMRelation`):

* **Order conditions.** With tau_j = h_i + ... + h_{i-2+j} the distance (in sigmabar) of point
  i-1+j from the new point (tau_0 = 0), Taylor expansion of a smooth exact solution about the
  new point gives the local truncation error (LTE, paper Definition 1)

      T = xbar(new) - [right-hand side] = sum_q C_q xbar^{(q)}(new),
      C_q = [q == 0] - sum_j a_j tau_j^q / q! - sum_j b_j h_{i-1+j} tau_j^{q-1} / (q-1)!.

  The relation has order p when C_0 = ... = C_p = 0 identically in the step sizes; then
  T = C_{p+1} xbar^{(p+1)} + O(h^{p+2}) (:meth:`LMRelation.local_error`). The b_0 term (implicit
  methods only) carries h_{i-1}, the step below the new point (its own symbol).
* **Fixed-coefficient views.** At a constant step ratio r = h_i / h_{i+1} (r = 1: equal steps),
  in units of the newest step, h_{i+j} = r^{-j} and h_{i-1} = r (:meth:`LMRelation.fixed`).
  The relation then is the classical method (Hairer, Norsett & Wanner, *Solving ODEs I*, III.2)

      sum_j alpha_j y_{n+j} = h sum_j beta_j f_{n+j},    alpha_k = 1,

  written in the direction of travel t = -sigmabar (y' = dy/dt, h > 0):
  alpha_{k-j} = -a_j, beta_{k-j} = -b_j h_{i-1+j} / h_i, nodes s_{k-j} = -tau_j / h_i.
  rho(z) = sum_j alpha_j z^j = z^k - sum_j a_j z^{k-j}, sigma(z) = sum_j beta_j z^j.
  :class:`linmultistep.analysis.lmm.LinearMultistepMethod` is this view as an object.
* **Zero-stability** (root condition on rho, exact, :mod:`.rootcond`), in the direction of travel
  and for the recurrence run backwards (inversion); **convergence** = consistency +
  zero-stability (Dahlquist).
* **Classical families** built from Lagrange weights on the (symbolic) nodes tau_j:
  :func:`adams` (Adams-Bashforth / Adams-Moulton) and :func:`bdf`.

The error-constant convention (the only one quoted in the docs; :meth:`LMRelation.error_constant`):
at equal steps, in the direction of travel, the LTE of the method normalised to alpha_k = 1 is
tau = C_{p+1} h^{p+1} y^{(p+1)}(t) + O(h^{p+2}), and the **error constant** is

    C = C_{p+1} / sigma(1)                      (HNW III.2; Lambert calls C_{p+1} the
                                                 error constant, HNW's C is independent of scaling)

so that the global error of a convergent method is y(t) - y_n = C h^p e(t) + O(h^{p+1}) with
e' = f_y e + y^{(p+1)}, e(t_0) = 0. Textbook values: AB2 5/12, trapezoid -1/12, BDF k -1/(k+1),
leapfrog (= O-BELM at equal steps) 1/6. Since y^{(q)}(t) = (-1)^q xbar^{(q)}(sigmabar), the
relation's own C_q (in sigmabar) and HNW's differ by (-1)^q: C = (-1)^{p+1} C_{p+1}^{relation} / sigma(1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Sequence

import numpy as np
import sympy as sp

from .rootcond import RootCondition, Z, root_condition

__all__ = [
    "LMRelation",
    "LocalError",
    "ZeroStability",
    "Convergence",
    "H",
    "H_PREV",
    "step_symbols",
    "exact_number",
    "relation_from_rule",
    "relation_from_method",
    "as_relation",
    "order_condition",
    "local_error",
    "lagrange_basis",
    "adams",
    "bdf",
]

H = sp.Symbol("h", positive=True)  # the common step at uniform steps
H_PREV = sp.Symbol("h_im1", positive=True)  # h_{i-1}: only multiplies b_0 (implicit methods)
_TAU = sp.Symbol("tau")


def step_symbols(k: int) -> list[sp.Symbol]:
    """h_i, h_{i+1}, ..., h_{i+k-1} as positive sympy symbols (names h_i, h_i1, h_i2, ...)."""
    return [sp.Symbol("h_i" if j == 0 else f"h_i{j}", positive=True) for j in range(k)]


def exact_number(x: Any) -> sp.Rational:
    """x as an exact rational. A float becomes the simplest rational that rounds to the same
    float64 (so 0.1 -> 1/10 and 1/3 in float -> 1/3), never a different float; a sympy Float
    likewise. Irrational or symbolic input raises ValueError."""
    if isinstance(x, (int, np.integer, sp.Rational, Fraction)):
        return sp.Rational(x)
    if isinstance(x, (float, np.floating, sp.Float)):
        f = float(x)
        if not math.isfinite(f):
            raise ValueError(f"not a finite number: {x!r}")
        for den in (10**3, 10**6, 10**9, 10**12):
            q = Fraction(f).limit_denominator(den)
            if float(q) == f:
                return sp.Rational(q.numerator, q.denominator)
        return sp.Rational(f)  # the float's own exact value
    e = sp.nsimplify(sp.sympify(x)) if not isinstance(x, sp.Basic) else sp.simplify(x)
    if not e.is_Rational:
        raise ValueError(f"coefficient {x!r} is not a rational number; exact analysis needs rationals")
    return sp.Rational(e)


def _exact(x: Any) -> sp.Expr:
    """A rule's output as an exact sympy expression: floats (also inside expressions) become rationals."""
    if isinstance(x, (float, np.floating)):
        return exact_number(x)
    e = sp.sympify(x)
    floats = e.atoms(sp.Float)
    return e.xreplace({f: exact_number(f) for f in floats}) if floats else e


def _is_number(x: Any) -> bool:
    return not sp.sympify(x).free_symbols


def _first_nonzero(rel: "LMRelation", qmax: int) -> tuple[int, sp.Expr]:
    for q in range(qmax + 1):
        c = rel.order_condition(q)
        if c != 0:
            return q, c
    raise ValueError(f"{rel.label}: all order conditions up to q = {qmax} vanish (exact for polynomials)")


@dataclass(frozen=True)
class LMRelation:
    """One step of a k-step LM method: a = [a_1..a_k], b = [b_0..b_k] (sympy), in the steps ``h``.

    ``h`` = [h_i..h_{i+k-1}] (symbols, or numbers for a fixed-coefficient view); ``h_prev``
    multiplies b_0. ``params`` lists symbols that are free parameters of a family (they must be
    given values before a zero-stability verdict). See the module docstring for the conventions.
    """

    a: tuple[sp.Expr, ...]
    b: tuple[sp.Expr, ...]
    h: tuple[Any, ...]
    h_prev: Any = H_PREV
    label: str = "LM"
    params: tuple[sp.Symbol, ...] = field(default=())

    def __post_init__(self) -> None:
        k = len(self.h)
        if len(self.a) != k or len(self.b) != k + 1:
            raise ValueError(f"{self.label}: a k-step relation needs {k} a's and {k + 1} b's (b_0..b_k), "
                             f"got {len(self.a)} and {len(self.b)}")

    # --- structure -------------------------------------------------------------------------
    @property
    def k(self) -> int:
        return len(self.h)

    @property
    def taus(self) -> list[sp.Expr]:
        """tau_0 = 0, tau_j = h_i + ... + h_{i-2+j}: distance of point i-1+j from the new point."""
        out: list[sp.Expr] = [sp.Integer(0)]
        for j in range(self.k):
            out.append(out[-1] + self.h[j])
        return out

    def step(self, j: int) -> sp.Expr:
        """h_{i-1+j}, the step that multiplies b_j."""
        return self.h_prev if j == 0 else self.h[j - 1]

    @property
    def explicit(self) -> bool:
        return sp.simplify(self.b[0]) == 0

    @property
    def backward_explicit(self) -> bool:
        return sp.simplify(self.b[-1]) == 0 and sp.simplify(self.a[-1]) != 0

    @property
    def is_fixed(self) -> bool:
        """The steps are numbers: a fixed-coefficient view (in units of h)."""
        return all(_is_number(s) for s in (*self.h, self.h_prev))

    @property
    def is_uniform(self) -> bool:
        return all(s == H for s in self.h)

    def _replace(self, a, b, h=None, h_prev=None, label=None, params=None) -> "LMRelation":
        return LMRelation(tuple(a), tuple(b), tuple(self.h if h is None else h),
                          self.h_prev if h_prev is None else h_prev, self.label if label is None else label,
                          tuple(self.params if params is None else params))

    def subs(self, values: dict) -> "LMRelation":
        """Give values to free parameters (or steps)."""
        vals = {sp.sympify(k_): _exact(v) for k_, v in values.items()}
        params = tuple(p for p in self.params if p not in vals)
        return self._replace([sp.cancel(sp.sympify(x).subs(vals)) for x in self.a],
                             [sp.cancel(sp.sympify(x).subs(vals)) for x in self.b], params=params)

    # --- order conditions and the local truncation error ------------------------------------
    def order_condition(self, q: int, simplify: bool = True) -> sp.Expr:
        """C_q = [q==0] - sum_j a_j tau_j^q/q! - sum_j b_j h_{i-1+j} tau_j^(q-1)/(q-1)!  (factored unless simplify=False)."""
        taus = self.taus
        c: sp.Expr = sp.Integer(1 if q == 0 else 0)
        for j in range(1, self.k + 1):
            c -= self.a[j - 1] * taus[j] ** q / sp.factorial(q)
        if q >= 1:
            for j in range(0, self.k + 1):
                c -= self.b[j] * self.step(j) * taus[j] ** (q - 1) / sp.factorial(q - 1)
        return sp.factor(sp.cancel(c)) if simplify else c

    def order(self, qmax: int | None = None) -> int:
        """Largest p with C_0 = ... = C_p = 0 identically in the steps (ValueError if C_0 != 0)."""
        q, c = _first_nonzero(self, qmax if qmax is not None else 2 * self.k + 3)
        if q == 0:
            raise ValueError(f"{self.label} is not consistent: C_0 = {c} != 0 (sum of a_j is not 1)")
        return q - 1

    def local_error(self, qmax: int | None = None) -> "LocalError":
        """Order p at variable steps, the leading LTE term C_{p+1} (in sigmabar), and at equal
        steps the order and the error constant (module docstring)."""
        qmax = qmax if qmax is not None else 2 * self.k + 3
        q, c = _first_nonzero(self, qmax)
        if q == 0:
            raise ValueError(f"{self.label} is not consistent: C_0 = {c} != 0 (sum of a_j is not 1)")
        try:
            uniform = self.fixed()
            uorder: int | None = uniform.order(qmax)
            try:
                const: sp.Expr | None = uniform.error_constant()
            except ValueError:
                const = None
        except ValueError:
            uorder, const = None, None
        return LocalError(self.label, q - 1, c, const, uorder)

    # --- fixed-coefficient views: equal steps or a constant step ratio ------------------------
    def uniform(self) -> "LMRelation":
        """The same relation with every step equal to the symbol h (h_{i-1} included)."""
        sub = {s: H for s in (*self.h, self.h_prev) if isinstance(s, sp.Symbol)}
        return self._replace([sp.cancel(sp.sympify(x).subs(sub)) for x in self.a],
                             [sp.cancel(sp.sympify(x).subs(sub)) for x in self.b], h=[H] * self.k, h_prev=H)

    def fixed(self, ratio: Any = 1) -> "LMRelation":
        """The relation at a constant step ratio r = h_i / h_{i+1} (r = 1: equal steps), in units of
        the newest step: h_{i+j} = r^{-j}, h_{i-1} = r. A relation whose steps are already numbers
        is returned as it is (ratio must then be 1). The coefficients must no longer depend on the
        steps (they may on parameters such as a symbolic gamma)."""
        r = exact_number(ratio)
        if self.is_fixed:
            if r != 1:
                raise ValueError(f"{self.label} already has fixed steps {list(self.h)}; no ratio applies")
            return self
        if r <= 0:
            raise ValueError(f"step ratio must be positive, got {ratio!r}")
        sub: dict = {}
        for s, v in [(self.h_prev, r)] + [(s, r ** (-j)) for j, s in enumerate(self.h)]:
            if s == H:  # the uniform symbol h is the unit; it cannot carry a ratio
                if r != 1:
                    raise ValueError(f"{self.label} has equal steps by construction; it has no step ratio {r}")
                v = sp.Integer(1)
            if isinstance(s, sp.Symbol):
                if sub.get(s, v) != v:
                    raise ValueError(f"{self.label} has equal steps by construction; it has no step ratio {r}")
                sub[s] = v
        a = [sp.cancel(sp.sympify(x).subs(sub)) for x in self.a]
        b = [sp.cancel(sp.sympify(x).subs(sub)) for x in self.b]
        steps = [sp.sympify(s).subs(sub) for s in self.h]
        step_syms = {s for s in (*self.h, self.h_prev, H) if isinstance(s, sp.Symbol)}
        free = set().union(*[c.free_symbols for c in (*a, *b, *steps)]) & step_syms
        if free:
            what = "equal steps" if r == 1 else f"step ratio {r}"
            raise ValueError(f"{self.label}: coefficients at {what} still contain {sorted(map(str, free))}; "
                             "not a fixed-coefficient method there")
        return self._replace(a, b, h=steps, h_prev=sp.sympify(self.h_prev).subs(sub))

    def classical(self, ratio: Any = 1) -> tuple[list[sp.Expr], list[sp.Expr], list[sp.Expr]]:
        """(alpha_0..alpha_k, beta_0..beta_k, nodes s_0..s_k) of the fixed view, lowest index first,
        alpha_k = 1, in the direction of travel (module docstring)."""
        f = self.fixed(ratio)
        k, taus = f.k, f.taus
        alpha = [sp.Integer(0)] * (k + 1)
        beta = [sp.Integer(0)] * (k + 1)
        alpha[k] = sp.Integer(1)
        for j in range(1, k + 1):
            alpha[k - j] = -f.a[j - 1]
        for j in range(k + 1):
            beta[k - j] = sp.cancel(-f.b[j] * f.step(j))
        nodes = [-taus[k - m] for m in range(k + 1)]
        return alpha, beta, nodes

    def rho(self, ratio: Any = 1) -> sp.Expr:
        """First characteristic polynomial rho(z) = z^k - sum_j a_j z^{k-j} of the fixed view."""
        f = self.fixed(ratio)
        return sp.expand(Z ** f.k - sum(f.a[j - 1] * Z ** (f.k - j) for j in range(1, f.k + 1)))

    def sigma(self, ratio: Any = 1) -> sp.Expr:
        """Second characteristic polynomial sigma(z) = -sum_j b_j h_{i-1+j} z^{k-j} (units of h_i)."""
        f = self.fixed(ratio)
        return sp.expand(-sum(f.b[j] * f.step(j) * Z ** (f.k - j) for j in range(f.k + 1)))

    def lte_constant(self, ratio: Any = 1, order: int | None = None) -> sp.Expr:
        """C_{p+1} of the fixed view in the direction of travel (alpha_k = 1): the LTE there is
        C_{p+1} h^{p+1} y^{(p+1)}(t) + O(h^{p+2}). ``order`` fixes p (for a family with parameters)."""
        f = self.fixed(ratio)
        p = f.order() if order is None else int(order)
        return sp.factor((-1) ** (p + 1) * f.order_condition(p + 1))

    def error_constant(self, ratio: Any = 1, order: int | None = None) -> sp.Expr:
        """THE error constant C = C_{p+1} / sigma(1) (HNW III.2) of the fixed view (module docstring).

        Equal steps by default; ``order`` fixes p (a family whose members may have higher order)."""
        f = self.fixed(ratio)
        s1 = sp.simplify(f.sigma().subs(Z, 1))
        if s1 == 0:
            raise ValueError(f"{self.label}: sigma(1) = 0, the method is not consistent; no error constant")
        return sp.factor(sp.cancel(f.lte_constant(order=order) / s1))

    # --- zero-stability and convergence -----------------------------------------------------
    def zero_stability(self, ratio: Any = 1) -> "ZeroStability":
        """Exact root condition on rho of the fixed view, in both directions of travel."""
        f = self.fixed(ratio)
        if f.params:
            raise ValueError(f"{self.label} has free parameters {list(map(str, f.params))}; give them values "
                             "(params={...}) or use linmultistep.analysis.search_zero_stable for the family")
        rho = f.rho()
        if rho.free_symbols - {Z}:
            raise ValueError(f"{self.label}: rho(z) = {rho} has symbolic coefficients "
                             f"{sorted(map(str, rho.free_symbols - {Z}))}; give them values first")
        ak = sp.simplify(f.a[-1])
        inv = None
        if ak != 0:
            inv = root_condition(sp.expand(sp.cancel(Z ** f.k * rho.subs(Z, 1 / Z) / (-ak))))
        return ZeroStability(self.label, rho, root_condition(rho), inv)

    def convergence(self) -> "Convergence":
        """Dahlquist's equivalence at equal steps: convergent iff consistent and zero-stable."""
        zs = self.zero_stability()
        f = self.fixed()
        try:
            order = f.order()
        except ValueError:
            order = 0
        reasons = [f"consistent of order {order} at uniform steps (LTE O(h^{order + 1}))" if order >= 1
                   else "not consistent (order 0)"]
        reasons.append("zero-stable: root condition holds" if zs else
                       "not zero-stable: " + "; ".join(zs.sampling.reasons))
        if zs and order >= 1:
            reasons.append(f"hence convergent with global error O(h^{order})")
        return Convergence(self.label, order, zs, reasons)

    def view(self, ratio: Any = 1, name: str | None = None):
        """The fixed-coefficient method object (:class:`.lmm.LinearMultistepMethod`) at this ratio."""
        from .lmm import LinearMultistepMethod

        return LinearMultistepMethod.from_relation(self, ratio, name=name)


@dataclass(frozen=True)
class LocalError:
    """Order p of a relation and its leading LTE term C_{p+1} xbar^{(p+1)} (LTE = O(h^{p+1})).

    ``leading`` is C_{p+1} in the step sizes (derivative in sigmabar, the relation's own form);
    ``uniform_order`` and ``error_constant`` (C_{p+1}/sigma(1), the one convention of the module
    docstring) are those of the same relation at equal steps (None where undefined).
    """

    label: str
    order: int
    leading: sp.Expr
    error_constant: sp.Expr | None
    uniform_order: int | None

    @property
    def lte_order(self) -> int:
        return self.order + 1

    def leading_term(self) -> sp.Expr:
        return self.leading * sp.Symbol(f"x^({self.order + 1})")

    def __str__(self) -> str:
        s = (f"{self.label}: order {self.order}, LTE = ({sp.factor(self.leading)}) x^({self.order + 1})"
             f" + O(h^{self.order + 2})")
        if self.uniform_order is not None:
            s += f"; uniform steps: order {self.uniform_order}, error constant C_(p+1)/sigma(1) = {self.error_constant}"
        return s


@dataclass
class ZeroStability:
    """Verdict of zero-stability at uniform steps: truthy exactly when zero-stable (direction of
    travel). ``inversion`` is the same verdict for the recurrence run backwards (None if a_k = 0)."""

    label: str
    rho: sp.Expr
    sampling: RootCondition
    inversion: RootCondition | None

    def __bool__(self) -> bool:
        return bool(self.sampling)

    @property
    def both_directions(self) -> bool:
        return bool(self.sampling) and bool(self.inversion)

    def __str__(self) -> str:
        roots = ", ".join(_fmt_root(r) for r in self.sampling.roots())
        lines = [f"{self.label}: {'zero-stable' if self else 'NOT zero-stable'} at uniform steps",
                 f"  rho(z) = {sp.factor(self.rho)}   roots: {roots}"]
        lines += [f"  - {r}" for r in self.sampling.reasons]
        if self.inversion is None:
            lines.append("  inversion: a_k = 0, cannot run backwards")
        else:
            lines.append(f"  inversion direction (reciprocal polynomial): "
                         f"{'zero-stable' if self.inversion else 'NOT zero-stable'}")
            lines += [f"  - {r}" for r in self.inversion.reasons]
        return "\n".join(lines)


def _fmt_root(r: complex) -> str:
    if abs(r.imag) < 1e-12:
        return f"{r.real:.4g}"
    return f"{r.real:.4g}{r.imag:+.4g}j"


@dataclass
class Convergence:
    """Convergence at uniform steps = consistency (order >= 1) + zero-stability; says why."""

    label: str
    order: int
    zero_stability: ZeroStability
    reasons: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.order >= 1 and bool(self.zero_stability)

    def __str__(self) -> str:
        head = f"{self.label}: {'convergent' if self else 'NOT convergent'} at uniform steps"
        return "\n".join([head] + [f"  - {r}" for r in self.reasons])


# --- building relations ---------------------------------------------------------------------------
def relation_from_rule(rule: Callable[[Sequence[Any]], tuple[Sequence[Any], Sequence[Any]]], k: int,
                       label: str = "LM", params: Sequence[sp.Symbol] = (), steps: Sequence[Any] | None = None,
                       h_prev: Any = H_PREV) -> LMRelation:
    """Evaluate a plain-arithmetic coefficient rule (linmultistep.rules convention) on step symbols,
    or on the given exact ``steps`` (a fixed-coefficient view; then give ``h_prev`` too)."""
    h = list(steps) if steps is not None else step_symbols(k)
    a_raw, b_raw = rule(h)
    a = tuple(sp.cancel(_exact(x)) for x in a_raw)
    b = tuple(sp.cancel(_exact(x)) for x in b_raw)
    return LMRelation(a, b, tuple(h), h_prev, label, tuple(params))


def relation_from_method(method: Any) -> LMRelation:
    """The symbolic relation of a catalogue LinearMultistep (its ``rule`` evaluated on symbols)."""
    from linmultistep.methods import LinearMultistep

    if not isinstance(method, LinearMultistep):
        raise TypeError(f"{method!r} is not a coefficient-rule (LinearMultistep) method")
    return relation_from_rule(method.rule, method.k, label=str(method.spec))


def as_relation(x: Any, k: int | None = None, params: dict | None = None) -> LMRelation:
    """The model of ``x``: an LMRelation, anything carrying one (a derivation, a LinearMultistepMethod),
    a catalogue LinearMultistep, or a coefficient rule (give ``k``); ``params`` are substituted."""
    from linmultistep.methods import LinearMultistep

    if isinstance(x, LMRelation):
        rel = x
    elif isinstance(getattr(x, "relation", None), LMRelation):
        rel = x.relation
    elif isinstance(x, LinearMultistep):
        rel = relation_from_method(x)
    elif callable(x):
        if k is None:
            raise ValueError("a coefficient rule needs k, the number of steps the rule takes")
        rel = relation_from_rule(x, k)
    else:
        raise TypeError(f"cannot analyse {x!r}: give an LMRelation, a derivation, a LinearMultistep(Method) "
                        "or a rule with k")
    return rel.subs(params) if params else rel


def order_condition(rel: LMRelation, q: int, simplify: bool = True) -> sp.Expr:
    """C_q of a relation (:meth:`LMRelation.order_condition`)."""
    return rel.order_condition(q, simplify)


def local_error(x: Any, k: int | None = None, qmax: int | None = None) -> LocalError:
    """Order and leading LTE term of a relation, a catalogue LinearMultistep or a rule (give k).

    The order is that at variable steps (identically in h_i..h_{i+k-1}); ``uniform_order`` and the
    error constant come from the same relation at equal steps.
    """
    return as_relation(x, k).local_error(qmax)


# --- classical families from Lagrange weights on the nodes tau_0..tau_k -----------------------------
def lagrange_basis(nodes: Sequence[Any], j: int, s: sp.Symbol = _TAU) -> sp.Expr:
    """L_j(s) = prod_{m != j} (s - t_m) / (t_j - t_m) on ``nodes``."""
    out = sp.Integer(1)
    for m, t in enumerate(nodes):
        if m != j:
            out *= (s - t) / (nodes[j] - t)
    return out


def _steps(k: int, steps: Sequence[Any] | None) -> tuple[list[Any], Any]:
    if steps is None:
        return step_symbols(k), H_PREV
    if len(steps) != k:
        raise ValueError(f"{k} steps needed, got {len(steps)}")
    return [exact_number(s) for s in steps], exact_number(steps[0])


def adams(k: int, implicit: bool = False, steps: Sequence[Any] | None = None) -> LMRelation:
    """Variable-step k-step Adams-Bashforth (order k) or, ``implicit``, Adams-Moulton (order k+1).

    xbar_{i-1} = xbar_i - integral_0^{tau_1} P(s) ds with P interpolating f at tau_1..tau_k (AB) or
    tau_0..tau_k (AM), i.e. b_j h_{i-1+j} = -integral_0^{tau_1} L_j(s) ds. ``steps``: numbers for a
    fixed view (default: the step symbols; equal steps: [1] * k, with h_{i-1} = h_i).
    """
    if int(k) != k or k < 1:
        raise ValueError(f"Adams methods need an integer k >= 1, got {k!r}")
    h, h_prev = _steps(k, steps)
    rel0 = LMRelation((sp.Integer(0),) * k, (sp.Integer(0),) * (k + 1), tuple(h), h_prev)
    taus = rel0.taus
    nodes = taus if implicit else taus[1:]
    w = [sp.integrate(sp.expand(lagrange_basis(nodes, j)), (_TAU, 0, taus[1])) for j in range(len(nodes))]
    b = [sp.Integer(0)] * (k + 1)
    for j, wj in enumerate(w):
        jj = j if implicit else j + 1
        b[jj] = sp.factor(-wj / rel0.step(jj))
    a = (sp.Integer(1),) + (sp.Integer(0),) * (k - 1)
    return LMRelation(a, tuple(b), tuple(h), h_prev, f"{'AM' if implicit else 'AB'}{k}")


def bdf(k: int, steps: Sequence[Any] | None = None) -> LMRelation:
    """Variable-step k-step BDF (order k): the interpolant of xbar at tau_0..tau_k has slope f at
    the new point, sum_j L_j'(0) xbar_{i-1+j} = f_{i-1}: a_j = -L_j'(0) / L_0'(0), b_0 h_{i-1} = 1 / L_0'(0)."""
    if int(k) != k or k < 1:
        raise ValueError(f"BDF needs an integer k >= 1, got {k!r}")
    h, h_prev = _steps(k, steps)
    taus = LMRelation((0,) * k, (0,) * (k + 1), tuple(h), h_prev).taus
    d = [sp.diff(lagrange_basis(taus, j), _TAU).subs(_TAU, 0) for j in range(k + 1)]
    a = tuple(sp.factor(-d[j] / d[0]) for j in range(1, k + 1))
    b = (sp.factor(1 / (d[0] * h_prev)),) + (sp.Integer(0),) * k
    return LMRelation(a, b, tuple(h), h_prev, f"BDF{k}")
