"""Linear multistep relations as symbolic objects, their Taylor order conditions and local error.

A k-step relation (BELM paper eq. 12, Wang et al. 2024, arXiv 2410.07273) produces the new
point i-1 from the points i..i-1+k:

    xbar_{i-1} = sum_{j=1..k} a_j xbar_{i-1+j} + sum_{j=0..k} b_j h_{i-1+j} f_{i-1+j},   f = d xbar / d sigmabar.

With tau_j = h_i + ... + h_{i-2+j} the distance (in sigmabar) of point i-1+j from the new point
(tau_0 = 0), a Taylor expansion of a smooth exact solution about the new point gives the local
truncation error (LTE, paper Definition 1)

    T = xbar(new) - [right-hand side] = sum_q C_q x^{(q)}(new),
    C_q = [q == 0] - sum_j a_j tau_j^q / q! - sum_j b_j h_{i-1+j} tau_j^{q-1} / (q-1)!.

The relation has order p when C_0 = ... = C_p = 0 identically in the step sizes; then
T = C_{p+1} x^{(p+1)} + O(h^{p+2}): the LTE is O(h^{p+1}) and C_{p+1} is its leading factor.
The b_0 term (implicit methods only) carries h_{i-1}, the step below the new point; for a
variable-step analysis it gets its own symbol, at uniform steps it is h like every other step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import sympy as sp

__all__ = [
    "LMRelation",
    "LocalError",
    "step_symbols",
    "relation_from_rule",
    "relation_from_method",
    "order_condition",
    "local_error",
]

H = sp.Symbol("h", positive=True)  # the common step at uniform steps


def step_symbols(k: int) -> list[sp.Symbol]:
    """h_i, h_{i+1}, ..., h_{i+k-1} as positive sympy symbols (names h_i, h_i1, h_i2, ...)."""
    return [sp.Symbol("h_i" if j == 0 else f"h_i{j}", positive=True) for j in range(k)]


H_PREV = sp.Symbol("h_im1", positive=True)  # h_{i-1}: only multiplies b_0 (implicit methods)


def _exact(x: Any) -> sp.Expr:
    """A rule's output as an exact sympy number: floats become the rational they store exactly."""
    if isinstance(x, float):
        return sp.Rational(x)
    return sp.sympify(x)


@dataclass(frozen=True)
class LMRelation:
    """One step of a k-step LM method: a = [a_1..a_k], b = [b_0..b_k] (sympy), in step symbols ``h``.

    ``h`` = [h_i..h_{i+k-1}]; ``h_prev`` multiplies b_0. ``params`` lists symbols that are
    free parameters of a family (they must be given values before a numeric verdict).
    """

    a: tuple[sp.Expr, ...]
    b: tuple[sp.Expr, ...]
    h: tuple[sp.Symbol, ...]
    h_prev: sp.Symbol = H_PREV
    label: str = "LM"
    params: tuple[sp.Symbol, ...] = field(default=())

    def __post_init__(self) -> None:
        k = len(self.h)
        if len(self.a) != k or len(self.b) != k + 1:
            raise ValueError(f"{self.label}: a k-step relation needs {k} a's and {k + 1} b's (b_0..b_k), "
                             f"got {len(self.a)} and {len(self.b)}")

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

    def uniform(self) -> "LMRelation":
        """The same relation with every step equal to the symbol h (h_{i-1} included)."""
        sub = {s: H for s in (*self.h, self.h_prev)}
        return LMRelation(
            tuple(sp.cancel(sp.sympify(x).subs(sub)) for x in self.a),
            tuple(sp.cancel(sp.sympify(x).subs(sub)) for x in self.b),
            tuple([H] * self.k), H, self.label, self.params,
        )

    def subs(self, values: dict) -> "LMRelation":
        """Give values to free parameters (or steps)."""
        vals = {sp.sympify(k_): _exact(v) for k_, v in values.items()}
        params = tuple(p for p in self.params if p not in vals)
        return LMRelation(
            tuple(sp.cancel(sp.sympify(x).subs(vals)) for x in self.a),
            tuple(sp.cancel(sp.sympify(x).subs(vals)) for x in self.b),
            self.h, self.h_prev, self.label, params,
        )

    @property
    def is_uniform(self) -> bool:
        return all(s == H for s in self.h)

    @property
    def explicit(self) -> bool:
        return sp.simplify(self.b[0]) == 0

    @property
    def backward_explicit(self) -> bool:
        return sp.simplify(self.b[-1]) == 0 and sp.simplify(self.a[-1]) != 0


def relation_from_rule(rule: Callable[[Sequence[Any]], tuple[Sequence[Any], Sequence[Any]]], k: int,
                       label: str = "LM", params: Sequence[sp.Symbol] = ()) -> LMRelation:
    """Evaluate a plain-arithmetic coefficient rule (linmultistep.rules convention) on symbols."""
    h = step_symbols(k)
    a_raw, b_raw = rule(h)
    a = tuple(sp.cancel(_exact(x)) for x in a_raw)
    b = tuple(sp.cancel(_exact(x)) for x in b_raw)
    return LMRelation(a, b, tuple(h), H_PREV, label, tuple(params))


def relation_from_method(method: Any) -> LMRelation:
    """The symbolic relation of a catalogue LinearMultistep (its ``rule`` evaluated on symbols)."""
    rule = getattr(method, "rule", None)
    if rule is None or not hasattr(method, "k"):
        raise TypeError(f"{method!r} is not a coefficient-rule (LinearMultistep) method")
    return relation_from_rule(rule, method.k, label=str(method.spec))


def order_condition(rel: LMRelation, q: int, simplify: bool = True) -> sp.Expr:
    """C_q = [q==0] - sum_j a_j tau_j^q/q! - sum_j b_j h_{i-1+j} tau_j^(q-1)/(q-1)!  (factored unless simplify=False)."""
    taus = rel.taus
    c: sp.Expr = sp.Integer(1 if q == 0 else 0)
    for j in range(1, rel.k + 1):
        c -= rel.a[j - 1] * taus[j] ** q / sp.factorial(q)
    if q >= 1:
        for j in range(0, rel.k + 1):
            c -= rel.b[j] * rel.step(j) * taus[j] ** (q - 1) / sp.factorial(q - 1)
    return sp.factor(sp.cancel(c)) if simplify else c


@dataclass(frozen=True)
class LocalError:
    """Order p of a relation and its leading LTE term C_{p+1} x^{(p+1)} (LTE = O(h^{p+1})).

    ``constant`` is the error constant at uniform steps: C_{p+1} = constant * h^{p+1};
    ``normalized_constant`` divides it by sigma(1) = -sum_j b_j (the classical normalisation,
    which makes constants of methods with differently scaled rho, sigma comparable).
    """

    label: str
    order: int
    leading: sp.Expr
    constant: sp.Expr | None
    normalized_constant: sp.Expr | None
    uniform_order: int | None

    @property
    def lte_order(self) -> int:
        return self.order + 1

    def leading_term(self) -> sp.Expr:
        return self.leading * sp.Symbol(f"x^({self.order + 1})")

    def __str__(self) -> str:
        s = (f"{self.label}: order {self.order}, LTE = ({sp.factor(self.leading)}) x^({self.order + 1})"
             f" + O(h^{self.order + 2})")
        if self.constant is not None:
            s += f"; uniform steps: order {self.uniform_order}, error constant {self.constant}"
        return s


def _first_nonzero(rel: LMRelation, qmax: int) -> tuple[int, sp.Expr]:
    for q in range(qmax + 1):
        c = order_condition(rel, q)
        if c != 0:
            return q, c
    raise ValueError(f"{rel.label}: all order conditions up to q = {qmax} vanish (exact for polynomials)")


def local_error(x: Any, k: int | None = None, qmax: int | None = None) -> LocalError:
    """Order and leading LTE term of a relation, a catalogue LinearMultistep or a rule (give k).

    The order is that at variable steps (identically in h_i..h_{i+k-1}); ``uniform_order`` and the
    error constant come from the same relation at equal steps.
    """
    if isinstance(x, LMRelation):
        rel = x
    elif hasattr(x, "rule") and hasattr(x, "k"):
        rel = relation_from_method(x)
    elif callable(x):
        if k is None:
            raise ValueError("local_error(rule) needs k, the number of steps the rule takes")
        rel = relation_from_rule(x, k)
    else:
        raise TypeError(f"cannot analyse {x!r}: give an LMRelation, a LinearMultistep or a rule with k")
    qmax = qmax if qmax is not None else 2 * rel.k + 3
    q, c = _first_nonzero(rel, qmax)
    if q == 0:
        raise ValueError(f"{rel.label} is not consistent: C_0 = {c} != 0 (sum of a_j is not 1)")
    order = q - 1
    uni = rel.uniform()
    try:
        uq, uc = _first_nonzero(uni, qmax)
        constant = sp.simplify(uc / H**uq)
        sigma1 = -sum(uni.b)
        norm = sp.simplify(constant / sigma1) if sigma1 != 0 else None
        uorder: int | None = uq - 1
    except ValueError:
        constant = norm = None
        uorder = None
    return LocalError(rel.label, order, c, constant, norm, uorder)
