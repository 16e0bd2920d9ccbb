"""Methods as data: VSVF linear multistep methods by coefficient rule, and EDICT.

A method advances a *window* of consecutive grid points. In the paper's indexing the
method's own direction (sampling) goes from high to low index; ``forward(ctx, n, window)``
returns the entry at point n from points n+1..n+k, and ``backward(ctx, n, window)`` returns
the entry at point n from points n-k..n-1: exactly when the method is backward explicit,
approximately (the DDIM-inversion substitution) otherwise. These two are the arithmetic of
mode 'recurrence'; a method knows nothing of modes: the forms of :mod:`linmultistep.forms`
(:mod:`linmultistep.stable`, :mod:`linmultistep.fixedpoint`) compute the same relation in other
arithmetic from the method's coefficients.

Entries are arrays in stored coordinates x = s * xbar (s = alpha for diffusion, 1 for ODEs);
the scale is folded into the float64 coefficients, so the vector field always sees exactly
the stored array. EDICT's entries are pairs (x, y).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, MutableMapping, Sequence

import numpy as np

from . import generated_belm
from . import rules as _rules
from .context import StepContext
from .entries import Coupled, Entry, Point
from .errors import MethodError

__all__ = [
    "Method",
    "LinearMultistep",
    "Edict",
    "MethodSpec",
    "get_method",
    "ddim",
    "obelm",
    "bdia",
    "edict",
    "belm",
    "adams_bashforth",
    "available_methods",
    "rule_digest",
    "PROBES",
    "MAX_ADAMS_BASHFORTH_K",
]

# step-size vectors on which structural properties (explicit, backward explicit) are probed and
# from which a user rule's identity is computed
_PROBE_RNG = np.random.default_rng(20241009)
PROBES: tuple[np.ndarray, ...] = (
    np.ones(8), np.linspace(1.0, 2.5, 8), _PROBE_RNG.uniform(0.05, 3.0, 8), _PROBE_RNG.uniform(0.05, 3.0, 8)
)
for _p in PROBES:
    _p.setflags(write=False)

#: variable-step Adams-Bashforth coefficients come from Lagrange integrals whose cancellation grows
#: with k; beyond this they lose the float64 digits that order k needs
MAX_ADAMS_BASHFORTH_K = 12


@dataclass(frozen=True)
class MethodSpec:
    """The identity of a method: its name and parameters, recorded in every latent."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": dict(self.params)}

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params)
        return f"{self.name}({args})" if args else self.name


class Method:
    """Base class: a method's identity, its starter chain and its recurrence steps (mode 'recurrence').
    Nothing here knows of modes: a mode's form reads the method's coefficients.

    Attributes: ``k`` (points in the window), ``nfe_per_step`` (network calls per step),
    ``starter`` (method used while fewer than k points exist, or None), ``spec``.
    """

    k: int
    nfe_per_step: int
    starter: "Method | None"
    spec: MethodSpec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def plan_key(self) -> Any:
        """What determines this method's step coefficients on a grid (the key of cached step plans)."""
        return (type(self).__name__, self.spec)

    def chain(self) -> list["Method"]:
        """The method followed by its starters, longest window first."""
        out: list[Method] = []
        m: Method | None = self
        while m is not None:
            out.append(m)
            m = m.starter
        return out

    # entries <-> plain arrays at the ends of a run
    def entry_from_array(self, x: Any) -> Entry:
        return Point(x)

    def array_from_entry(self, entry: Entry) -> Any:
        return entry.x

    def enter(self, ctx: StepContext, window: dict[int, Any]) -> dict[int, Entry]:
        """Convert the start window (entries or plain arrays) into this method's entries."""
        return {m: e if isinstance(e, tuple) else self.entry_from_array(e) for m, e in window.items()}

    def inversion_growth_bits(self, h: Sequence[float]) -> float:
        """log2 of the factor by which the inverse recurrence amplifies rounding over the grid with step
        sizes ``h`` (0 when it does not grow): read off the coefficients."""
        return 0.0

    def exact_backward(self, ctx: StepContext, n: int) -> bool:
        raise NotImplementedError

    def forward(self, ctx: StepContext, n: int, window: MutableMapping[int, Entry]) -> Entry:
        """The entry at point n from points n+1..n+k (the method's own direction, sampling)."""
        raise NotImplementedError

    def backward(self, ctx: StepContext, n: int, window: MutableMapping[int, Entry]) -> Entry:
        """The entry at point n from points n-k..n-1 (inversion). May complete the open entry at n-1
        in ``window`` (the run's own dict) with the network output at n-1."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec} k={self.k}>"


@dataclass(frozen=True, repr=False, eq=False)
class LinearMultistep(Method):
    """A k-step VSVF linear multistep method given by its coefficient rule (paper eq. 12).

    ``rule(h)`` maps (h_i..h_{i+k-1}) to (a_{i,1..k}, b_{i,0..k}); see :mod:`linmultistep.rules`.
    Whether it is explicit (b_{i,0} = 0) or backward explicit (b_{i,k} = 0, a_{i,k} != 0) is read
    off the coefficients, never declared.
    """

    label: str
    k: int
    rule: Callable[[Sequence[Any]], tuple[Sequence[Any], Sequence[Any]]]
    params: tuple[tuple[str, Any], ...] = ()
    starter: "Method | None" = None
    order: int | None = None
    nfe_per_step: int = field(default=1, init=False)

    def __post_init__(self) -> None:
        if int(self.k) != self.k or self.k < 1:
            raise MethodError(f"k must be a positive integer, got {self.k!r}")
        if self.starter is not None and self.starter.k >= self.k:
            raise MethodError(f"the starter of {self.label} must use fewer than {self.k} points")
        if self.k > 1 and self.starter is None:
            raise MethodError(f"{self.label} is a {self.k}-step method and needs a starter for its first steps")

    @functools.cached_property
    def spec(self) -> MethodSpec:  # type: ignore[override]
        return MethodSpec(self.label, self.params)  # (once: every step's StepInfo names it)

    @functools.cached_property
    def plan_key(self) -> Any:  # type: ignore[override]
        # the rule's own digest: two methods under one label with different rules never share plans
        return ("lm", self.label, self.k, self.params, rule_digest(self.rule, self.k))

    # --- coefficients -----------------------------------------------------------------
    def coefficients(self, h: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """(a_{i,1..k}, b_{i,0..k}) in float64 for step sizes h = (h_i..h_{i+k-1})."""
        hv = [float(x) for x in h]
        if len(hv) != self.k:
            raise MethodError(f"{self.spec} needs {self.k} step sizes, got {len(hv)}")
        a_raw, b_raw = self.rule(hv)
        a = np.asarray([float(x) for x in a_raw], dtype=np.float64)
        b = np.asarray([float(x) for x in b_raw], dtype=np.float64)
        if a.shape != (self.k,) or b.shape != (self.k + 1,):
            raise MethodError(
                f"rule of {self.spec} returned {a.shape[0]} a's and {b.shape[0]} b's; "
                f"expected {self.k} and {self.k + 1} (b includes b_0)"
            )
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise MethodError(f"rule of {self.spec} gave non-finite coefficients a={a}, b={b} for h={hv}")
        return a, b

    def _probe(self, test: Callable[[np.ndarray, np.ndarray], bool]) -> bool:
        return all(test(*self.coefficients(p[: self.k])) for p in PROBES)

    @property
    def explicit(self) -> bool:
        """b_{i,0} = 0 on every probed step-size vector."""
        return self._probe(lambda a, b: b[0] == 0)

    @property
    def backward_explicit(self) -> bool:
        """b_{i,k} = 0 and a_{i,k} != 0 on every probed step-size vector: exactly invertible."""
        return self._probe(lambda a, b: b[-1] == 0 and a[-1] != 0)

    def _local(self, ctx: StepContext, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients of the relation that produces point i-1 from points i..i-1+k."""
        a, b = self.coefficients(ctx.h[i : i + self.k])
        if b[0] != 0:
            raise MethodError(
                f"{self.spec} is implicit at grid index {i - 1} (b_{{i,0}} = {b[0]!r}); only explicit methods run"
            )
        return a, b

    def exact_backward(self, ctx: StepContext, n: int) -> bool:
        a, b = self._local(ctx, n - self.k + 1)
        return b[-1] == 0 and a[-1] != 0

    def inversion_growth_bits(self, h: Sequence[float]) -> float:
        """A 2-step method run backwards divides by a_{i,2} at every step (its parasitic root 1/a_{i,2}):
        log2 growth = sum_i -log2 |a_{i,2}| over the grid (BDIA(gamma): N log2(1/gamma); O-BELM: 0 net of
        the step-size ratios, which the stable form removes). 0 for other k (not guarded)."""
        if self.k != 2:
            return 0.0
        growth = 0.0
        for i in range(1, len(h) - 1):
            a, _ = self.coefficients(h[i : i + 2])
            growth += -float(np.log2(abs(a[1]))) if a[1] != 0 else float("inf")
        return growth

    # --- steps ------------------------------------------------------------------------
    # A step is a linear combination whose float64 coefficients depend only on the grid: its plan
    # [(coefficient, point, is_slope)] is computed once per run and point (StepContext.plan).
    def _forward_plan(self, ctx: StepContext, n: int) -> list[tuple[float, int, int]]:
        i = n + 1
        a, b = self._local(ctx, i)
        s_new = ctx.scale(n)
        plan: list[tuple[float, int, int]] = []
        for j in range(1, self.k + 1):
            p = n + j
            if a[j - 1] != 0:
                plan.append((s_new * a[j - 1] / ctx.scale(p), p, 0))
            if b[j] != 0:
                plan.append((s_new * b[j] * ctx.h[p], p, 1))
        return plan

    def _backward_plan(self, ctx: StepContext, n: int) -> list[tuple[float, int, int]]:
        k = self.k
        i = n - k + 1
        a, b = self._local(ctx, i)
        if a[-1] == 0:
            raise MethodError(f"{self.spec} cannot run backwards at grid index {n}: a_{{i,k}} = 0")
        c = ctx.scale(n) / a[-1]
        plan = [(c / ctx.scale(i - 1), i - 1, 0)]
        for j in range(1, k):
            p = i - 1 + j
            if a[j - 1] != 0:
                plan.append((-c * a[j - 1] / ctx.scale(p), p, 0))
            if b[j] != 0:
                plan.append((-c * b[j] * ctx.h[p], p, 1))
        if b[k] != 0:
            plan.append((-c * b[k] * ctx.h[n], n, 2))  # 2: the slope at n evaluated on point n-1
        return plan

    def forward(self, ctx: StepContext, n: int, window: MutableMapping[int, Entry]) -> Entry:
        """x_{i-1} = s_{i-1} [sum_j a_{i,j} x_{i-1+j}/s_{i-1+j} + sum_j b_{i,j} h_{i-1+j} f_{i-1+j}], i = n+1."""
        plan = ctx.plan((self.plan_key, "forward", n), self._forward_plan, ctx, n)
        arrays = [ctx.slope(p, window[p].x) if kind else window[p].x for _, p, kind in plan]
        return Point(ctx.lincomb([c for c, _, _ in plan], arrays))

    def backward(self, ctx: StepContext, n: int, window: MutableMapping[int, Entry]) -> Entry:
        """Solve the relation of point n-k for its oldest point n (paper eq. 13).

        x_n = (s_n / a_{i,k}) [x_{i-1}/s_{i-1} - sum_{j<k} a_{i,j} x_{i-1+j}/s_{i-1+j}
                               - sum_{j} b_{i,j} h_{i-1+j} f_{i-1+j}],  i = n-k+1.
        When b_{i,k} != 0 the unknown slope f_n is replaced by the slope at the newest known
        point n-1 evaluated with point n's time (diffusers' DDIMInverseScheduler convention),
        which makes the step approximate: DDIM inversion for k = 1.
        """
        plan = ctx.plan((self.plan_key, "backward", n), self._backward_plan, ctx, n)
        arrays = [
            window[p].x if kind == 0 else ctx.slope(p, window[p].x) if kind == 1 else ctx.evaluate(window[n - 1].x, n)
            for _, p, kind in plan
        ]
        return Point(ctx.lincomb([c for c, _, _ in plan], arrays))


@dataclass(frozen=True, repr=False, eq=False)
class Edict(Method):
    """EDICT (Wallace et al. 2023; BDIA paper sec. 3.2): coupled states (x, y), two network calls a step.

    In stored coordinates, with i = n+1 and the DDIM map D(u, e) = s_{i-1} (u/s_i - h_i e):
        x' = D(x, f(y, i)),  y' = D(y, f(x', i)),
        x_{i-1} = p x' + (1-p) y',  y_{i-1} = p y' + (1-p) x_{i-1};
    its inverse undoes the four updates in reverse order, exactly.
    """

    p: float = 0.93
    k: int = field(default=1, init=False)
    nfe_per_step: int = field(default=2, init=False)
    starter: "Method | None" = field(default=None, init=False)

    def __post_init__(self) -> None:
        _real("p", self.p, "EDICT")
        if not (0.0 < float(self.p) <= 1.0) or not np.isfinite(self.p):
            raise MethodError(f"EDICT mixing weight p must be in (0, 1], got {self.p!r}")

    @functools.cached_property
    def spec(self) -> MethodSpec:  # type: ignore[override]
        return MethodSpec("edict", (("p", float(self.p)),))

    def entry_from_array(self, x: Any) -> Entry:
        return Coupled(x, x)

    def enter(self, ctx: StepContext, window: dict[int, Any]) -> dict[int, Entry]:
        out: dict[int, Entry] = {}
        for m, e in window.items():
            if isinstance(e, tuple) and not isinstance(e, Coupled):
                if getattr(e, "_fields", None) is not None or len(e) != 2:
                    raise MethodError(f"EDICT cannot start from the entry at grid index {m} ({type(e).__name__})")
                e = Coupled(*e)
            out[m] = e if isinstance(e, Coupled) else self.entry_from_array(e)
        return out

    def inversion_growth_bits(self, h: Sequence[float]) -> float:
        """log2 of the round trip's rounding growth, N log2(1/p): the inverse of the mixing step
        (x, y) <- ((x' - (1-p) y_i) / p, (y' - (1-p) x') / p) has determinant p^-2 on the pair, 1/p per
        coordinate and step. Its worst direction, x - y, grows by p^-2 per inverted step, but sampling
        contracts that direction by p^2 again, so a round trip loses about log2(1/p) bits per step, not
        twice that (measured by ``benchmarks/edict_growth.py``)."""
        return -(len(h) - 1) * float(np.log2(float(self.p)))

    def exact_backward(self, ctx: StepContext, n: int) -> bool:
        return True

    def forward(self, ctx: StepContext, n: int, window: MutableMapping[int, Entry]) -> Entry:
        i, p = n + 1, float(self.p)
        x, y = window[i]
        r, eh = ctx.scale(n) / ctx.scale(i), -ctx.scale(n) * ctx.h[i]
        xi = ctx.lincomb([r, eh], [x, ctx.evaluate(y, i)])
        yi = ctx.lincomb([r, eh], [y, ctx.evaluate(xi, i)])
        x_new = ctx.lincomb([p, 1 - p], [xi, yi])
        y_new = ctx.lincomb([p, 1 - p], [yi, x_new])
        return Coupled(x_new, y_new)

    def backward(self, ctx: StepContext, n: int, window: MutableMapping[int, Entry]) -> Entry:
        i, p = n, float(self.p)
        x_new, y_new = window[n - 1]
        yi = ctx.lincomb([1 / p, -(1 - p) / p], [y_new, x_new])
        xi = ctx.lincomb([1 / p, -(1 - p) / p], [x_new, yi])
        r, eh = ctx.scale(i) / ctx.scale(i - 1), ctx.scale(i) * ctx.h[i]
        y = ctx.lincomb([r, eh], [yi, ctx.evaluate(xi, i)])
        x = ctx.lincomb([r, eh], [xi, ctx.evaluate(y, i)])
        return Coupled(x, y)


# --- catalogue ----------------------------------------------------------------------------
def ddim() -> LinearMultistep:
    """DDIM (Song et al. 2021) = explicit Euler in (sigmabar, xbar); its inverse is approximate."""
    return LinearMultistep("ddim", 1, _rules.euler, order=1)


def obelm() -> LinearMultistep:
    """O-BELM (BELM paper Prop. 4): 2-step, LTE O((h_i+h_{i+1})^3), started by one DDIM step.

    Its coefficients are :func:`linmultistep.rules.obelm`. ``sample``/``invert`` run it by default in
    mode 'stable': the step that runs is :meth:`linmultistep.stable.StableBelm.forward` (sampling) and
    ``.backward`` (inversion); in mode 'recurrence' it is :meth:`LinearMultistep.forward` below, in mode
    'bits' :meth:`linmultistep.fixedpoint.FixedPointBelm.forward`."""
    return LinearMultistep("obelm", 2, _rules.obelm, starter=ddim(), order=2)


def bdia(gamma: float = 1.0) -> LinearMultistep:
    """BDIA(gamma) (Zhang et al. 2023) as a 2-step BELM; gamma = 1 is time-symmetric.

    Its inversion solves the relation for the oldest point, which is exact in exact arithmetic only:
    in floating point (modes 'recurrence' and 'stable', the default for gamma = 1) the round trip's
    rounding errors grow with the network's sensitivity over the steps and with gamma^-N, so a
    reconstruction is close, not identical (an 8-bit image may come back a few levels off); mode
    'bits' is exact to the last bit. For generation from noise prefer O-BELM: BDIA(1) carries the
    error of its first (DDIM) step undamped (a PrecisionWarning says so when it matters)."""
    g = _real("gamma", gamma, "BDIA")
    if not np.isfinite(g) or not (0.0 < g <= 1.0):
        raise MethodError(f"BDIA gamma must be in (0, 1] (gamma = 0 is DDIM and not invertible), got {gamma!r}")
    return LinearMultistep("bdia", 2, _rules.bdia(g), params=(("gamma", g),), starter=ddim(), order=1)


def edict(p: float = 0.93) -> Edict:
    """EDICT with mixing weight p (0.93 customary)."""
    return Edict(p=_real("p", p, "EDICT"))


def _real(name: str, value: Any, method: str) -> float:
    """A real number parameter: "0.5" or True would be parsed or coerced silently, a complex one truncated."""
    if isinstance(value, (bool, str, bytes, complex)) or np.iscomplexobj(value) or not hasattr(value, "__float__"):
        raise MethodError(f"{method} {name} must be a real number, got {value!r} ({type(value).__name__})")
    return float(value)


def adams_bashforth(k: int = 2) -> LinearMultistep:
    """Variable-step k-step Adams-Bashforth (order k), started by Adams-Bashforth k-1, ..., 1."""
    if isinstance(k, bool) or not hasattr(k, "__index__"):
        raise MethodError(f"Adams-Bashforth needs an integer k, got {k!r} ({type(k).__name__})")
    k = int(k)
    if not 1 <= k <= MAX_ADAMS_BASHFORTH_K:
        raise MethodError(
            f"Adams-Bashforth needs 1 <= k <= {MAX_ADAMS_BASHFORTH_K}, got k = {k}: its variable-step coefficients "
            "are Lagrange integrals whose cancellation grows with k, and beyond that they lose the float64 digits "
            "order k needs"
        )
    m: LinearMultistep | None = None
    for j in range(1, k + 1):  # the starter chain, built from the bottom (no recursion)
        m = LinearMultistep("adams_bashforth", j, _rules.adams_bashforth(j), params=(("k", j),), starter=m, order=j)
    assert m is not None
    return m


def belm(
    rule: Callable[[Sequence[Any]], tuple[Sequence[Any], Sequence[Any]]] | None = None,
    k: int = 2,
    name: str = "belm",
    params: Mapping[str, Any] | None = None,
    starter: Method | None = None,
    order: int | None = None,
) -> LinearMultistep:
    """A k-step BELM from any coefficient rule.

    Without a rule, the LTE-optimal k-step BELM derived by :mod:`linmultistep.analysis`
    (checked in as generated code) is used. The default starter chain is the optimal
    (k-1)-step BELM down to DDIM. The rule must be bidirectional explicit (checked here).
    """
    if isinstance(k, bool) or int(k) != k:
        raise MethodError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    if isinstance(rule, str):
        raise MethodError(
            f"this method is a belm with a user-supplied rule (coefficient digest {rule}); a rule cannot be "
            "rebuilt from its digest: pass the method object itself (e.g. method=belm(rule=my_rule, k=...))"
        )
    if rule is not None:
        # the rule is part of the identity: two rules under one name must not continue each other's latents
        params = {**(params or {}), "rule": rule_digest(rule, k)}
    if rule is None:
        rule = generated_belm.optimal_rule(k)
        params = {"k": k, **(params or {})}
        order = order if order is not None else generated_belm.global_order(k)
    if starter is None:
        starter = _belm_starters(k)
    m = LinearMultistep(name, k, rule, params=tuple(sorted((params or {}).items())), starter=starter, order=order)
    if not m.explicit:
        raise MethodError(f"{m.spec} is not explicit (b_{{i,0}} != 0): not a BELM")
    if not m.backward_explicit:
        raise MethodError(f"{m.spec} is not backward explicit (b_{{i,k}} != 0 or a_{{i,k}} = 0): not a BELM")
    return m


def _belm_starters(k: int) -> "Method | None":
    """DDIM, then the optimal 2-, 3-, ... (k-1)-step BELMs: built from the bottom (no recursion)."""
    m: Method | None = ddim() if k >= 2 else None
    for j in range(2, k):
        m = belm(k=j, starter=m)
    return m


def rule_digest(rule: Callable[[Sequence[Any]], tuple[Sequence[Any], Sequence[Any]]], k: int) -> str:
    """A stable digest of a coefficient rule: sha256 of its coefficients (a, b) at fixed probe step
    sizes, to 11 significant digits (12 hex digits). Equal rules give equal digests; rules that
    differ on the probes beyond rounding differ."""
    h = hashlib.sha256()
    for probe in PROBES:
        a, b = rule([float(x) for x in probe[:k]])
        # 11 significant digits: one rule written two ways (e.g. the catalogue's O-BELM and the derived
        # k = 2 rule) differs in the last bits only and must keep one identity
        h.update(" ".join(f"{float(x) + 0.0:.10e}" for x in list(a) + list(b)).encode())
    return h.hexdigest()[:12]


_CATALOGUE: dict[str, Callable[..., Method]] = {
    "ddim": ddim,
    "obelm": obelm,
    "bdia": bdia,
    "edict": edict,
    "belm": belm,
    "adams_bashforth": adams_bashforth,
}


def available_methods() -> list[str]:
    return sorted(_CATALOGUE)


def get_method(name: "str | Method", **params: Any) -> Method:
    """A catalogue method by name: 'ddim', 'obelm', 'bdia' (gamma), 'edict' (p), 'belm' (rule, k),
    'adams_bashforth' (k). A Method instance passes through unchanged."""
    if isinstance(name, Method) or (hasattr(name, "mode_spec") and isinstance(getattr(name, "method", None), Method)):
        # a method, or a method in a mode (a forms.Form), as it is
        if params:
            raise MethodError(f"parameters {sorted(params)} given with a method object {name}")
        return name
    key = str(name).lower().replace("-", "_")
    if key not in _CATALOGUE:
        raise MethodError(f"unknown method {name!r}; available: {', '.join(available_methods())}")
    try:
        return _CATALOGUE[key](**params)
    except TypeError as exc:
        raise MethodError(f"bad parameters for method {name!r}: {exc}") from None
