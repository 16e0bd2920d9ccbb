"""BDIA as its authors sample: which coordinates, and is their damped sampler still exactly invertible?

Notation (paper indexing, 0 = data end): z_i = x_i the model-coordinate state at grid index i,
alpha_i, sigma_i its schedule, e = eps(z_i, i) the network's noise prediction at z_i, and the two
DDIM maps taken from z_i with that one prediction (BDIA paper eqs. 6 and 23-24):

    D_i(z) = alpha_{i-1} (z - sigma_i e) / alpha_i + sigma_{i-1} e     (forward: to grid point i-1)
    B_i(z) = alpha_{i+1} (z - sigma_i e) / alpha_i + sigma_{i+1} e     (backward: to grid point i+1)

**Plain BDIA, paper eq. 29 and the authors' sampler**, in model coordinates z:

    z_{i-1} = gamma z_{i+1} - gamma B_i(z_i) + D_i(z_i) = D_i(z_i) + gamma (z_{i+1} - B_i(z_i)).

**linmultistep's BDIA(gamma)** is the 2-step BELM a_{i,1} = 1 - gamma, a_{i,2} = gamma,
b_{i,1} h_i = -(h_i + gamma h_{i+1}) in scaled coordinates xbar = z / alpha. Multiplied out in z
(:func:`derive_coordinates`) it is

    z_{i-1} = D_i(z_i) + gamma (alpha_{i-1} / alpha_{i+1}) (z_{i+1} - B_i(z_i)),

so the two are the same method only where alpha_{i+1} = alpha_{i-1}. Read in the library's form,
the paper's BDIA(gamma) is the BELM with a step-dependent weight gamma'_i = gamma alpha_{i+1} / alpha_{i-1}
(< gamma): its parasitic root -gamma'_i is strongly damped at the noise end, where the library's
BDIA(1) keeps the root on the unit circle.

**The authors' damped sampler** (public LDM code, REFERENCE.md "BDIA as its authors sample") keeps a
stored state s instead of z_{i+1} and re-estimates it after each step:

    z_{i-1} = D_i(z_i) + gamma (s_i - B_i(z_i)),        s_{i-1} = z_i + (s_i - B_i(z_i)) / 2.

As a map (s_i, z_i) -> (s_{i-1}, z_{i-1}) its output no longer contains z_i, the only point where the
network was evaluated. :func:`derive_damped` solves for the inputs: s_i = B_i(z_i) + 2 (s_{i-1} - z_i)
is explicit once z_i is known, but z_i itself solves (a_i - 2 gamma) z_i + b_i eps(z_i, i) =
z_{i-1} - 2 gamma s_{i-1}, the network at the unknown point: an implicit equation, like DDIM inversion,
not a closed-form inverse. The Jacobian of the step is det = det((a_i + b_i J)/2 - gamma) (J the
network's Jacobian), so the step is not even locally invertible where a_i + b_i J has eigenvalue 2 gamma;
in the small-step limit (a_i -> 1, b_i -> 0) this is gamma = 1/2, the value the authors suggest at low
step counts. Small-step roots: plain {1, -gamma}, damped {1, 1/2 - gamma}.

The numeric reference steps at the end (:func:`bdia_step`, :func:`bdia_inverse_step`,
:func:`damped_step`) are plain arithmetic on any array type; the benchmark
``benchmarks/bdia_sampling.py`` and ``tests/test_bdia_damped.py`` use them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import sympy as sp

__all__ = ["Coordinates", "Verdict", "derive_coordinates", "derive_plain", "derive_damped", "small_step_roots",
           "ddim_map", "bdia_step", "bdia_inverse_step", "damped_step", "damped_inverse_equation"]

# --- symbols -----------------------------------------------------------------------------------
GAMMA = sp.Symbol("gamma", positive=True)
#: alpha, sigma at grid points i-1, i, i+1
AM, A0, AP = sp.symbols("alpha_im1 alpha_i alpha_ip1", positive=True)
SM, S0, SP = sp.symbols("sigma_im1 sigma_i sigma_ip1", positive=True)
#: the network as an undefined function of the point it is evaluated at
EPS = sp.Function("eps")


def _ddim(z: sp.Expr, e: sp.Expr, a_from: sp.Expr, s_from: sp.Expr, a_to: sp.Expr, s_to: sp.Expr) -> sp.Expr:
    return a_to * (z - s_from * e) / a_from + s_to * e


def _maps(z: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """(D_i(z), B_i(z)), both with the one network value eps(z)."""
    e = EPS(z)
    return _ddim(z, e, A0, S0, AM, SM), _ddim(z, e, A0, S0, AP, SP)


@dataclass(frozen=True)
class Coordinates:
    """Paper eq. 29 in z, rewritten in xbar = z / alpha as a 2-step BELM."""

    a1: sp.Expr  # coefficient of xbar_i
    a2: sp.Expr  # coefficient of xbar_{i+1}: the effective gamma
    b1h: sp.Expr  # coefficient of eps(z_i)
    same_as_library: bool  # identical to linmultistep's bdia rule for every schedule?
    library_in_z: sp.Expr  # the library's BDIA step written in z (for comparison)


@functools.lru_cache(maxsize=None)  # sympy is slow; the results are immutable
def derive_coordinates() -> Coordinates:
    """Rewrite the paper's / authors' BDIA (in z) in scaled coordinates and compare with the library's rule.

    With xbar_j = z_j / alpha_j and h_i = sigmabar_i - sigmabar_{i-1}, sigmabar = sigma / alpha:
    xbar_{i-1} = a2 xbar_{i+1} + a1 xbar_i + b1h eps with a2 = gamma alpha_{i+1} / alpha_{i-1},
    a1 = 1 - a2, b1h = -(h_i + a2 h_{i+1}): the library's BDIA rule with gamma replaced by a2.
    """
    zi, zp = sp.symbols("z_i z_ip1")
    D, B = _maps(zi)
    paper = D + GAMMA * (zp - B)
    xb_i, xb_p = sp.symbols("xbar_i xbar_ip1")
    e = EPS(zi)
    scaled = sp.expand(paper.subs({zp: AP * xb_p}).subs(zi, A0 * xb_i).subs(EPS(A0 * xb_i), sp.Symbol("E")) / AM)
    E = sp.Symbol("E")
    a2 = sp.simplify(scaled.coeff(xb_p))
    a1 = sp.simplify(scaled.coeff(xb_i))
    b1h = sp.simplify(scaled.coeff(E))
    h_i = S0 / A0 - SM / AM
    h_p = SP / AP - S0 / A0
    # the BELM consistency of the rewritten relation: a1 + a2 = 1 and b1h = -(h_i + a2 h_{i+1})
    assert sp.simplify(a1 + a2 - 1) == 0
    assert sp.simplify(b1h + (h_i + a2 * h_p)) == 0
    # the library's rule (linmultistep.rules.bdia) with constant gamma, written back in z
    lib = AM * ((1 - GAMMA) * zi / A0 + GAMMA * zp / AP - (h_i + GAMMA * h_p) * e)
    lib_form = sp.simplify(lib - D - GAMMA * (AM / AP) * (zp - B))
    assert lib_form == 0  # library = D + gamma (alpha_{i-1}/alpha_{i+1}) (z_{i+1} - B)
    same = sp.simplify(a2 - GAMMA) == 0
    return Coordinates(a1, a2, b1h, bool(same), D + GAMMA * (AM / AP) * (zp - B))


@dataclass(frozen=True)
class Verdict:
    """Whether a two-state step (s, z) -> (s', z') has an explicit inverse with the same network calls."""

    name: str
    explicit_inverse: bool
    inverse: dict  # unknown input -> expression in the outputs (and the network at known points)
    implicit_equation: sp.Expr | None  # = 0 for the input that cannot be isolated (None if explicit)
    jacobian_det: sp.Expr  # det d(s', z') / d(s, z), scalar state, with J = eps'(z)
    small_step_roots: list  # eigenvalues of the step's linear part at h -> 0 (alpha's equal, eps = 0)

    def __str__(self) -> str:
        inv = "; ".join(f"{k} = {v}" for k, v in self.inverse.items())
        tail = "" if self.implicit_equation is None else f"; implicit: {self.implicit_equation} = 0"
        return (f"{self.name}: explicit inverse {'YES' if self.explicit_inverse else 'NO'} ({inv}{tail}); "
                f"det = {self.jacobian_det}; small-step roots {self.small_step_roots}")


def _jacobian_det(s_new: sp.Expr, z_new: sp.Expr, s: sp.Symbol, z: sp.Symbol) -> sp.Expr:
    J = sp.Symbol("J")  # eps'(z)
    d = sp.Derivative(EPS(z), z)

    def diff(f: sp.Expr, v: sp.Symbol) -> sp.Expr:
        return sp.diff(f, v).doit().subs(d, J).subs(sp.Subs(sp.Derivative(EPS(z), z), z, z), J)

    M = sp.Matrix([[diff(s_new, s), diff(s_new, z)], [diff(z_new, s), diff(z_new, z)]])
    return sp.factor(sp.simplify(M.det()))


def small_step_roots(damped: bool, gamma: sp.Expr = GAMMA) -> list:
    """Roots of the step's linear part when the step length goes to 0 (D = B = identity):
    plain (s, z) -> (z, z + gamma (s - z)); damped (s, z) -> (z + (s - z)/2, z + gamma (s - z))."""
    lam = sp.Symbol("lambda")
    M = sp.Matrix([[sp.Rational(1, 2), sp.Rational(1, 2)], [gamma, 1 - gamma]]) if damped else \
        sp.Matrix([[0, 1], [gamma, 1 - gamma]])
    return sorted(sp.solve(M.charpoly(lam).as_expr(), lam), key=sp.default_sort_key)


@functools.lru_cache(maxsize=None)  # sympy is slow; the results are immutable
def derive_plain() -> Verdict:
    """Paper eq. 29 as a map (s = z_{i+1}, z = z_i) -> (z_i, z_{i-1}): z_i is in the output, so eps(z_i)
    is available on the way back and the relation is linear in the unknown s."""
    s, z, z_new = sp.symbols("s z z_new")
    D, B = _maps(z)
    relation = sp.Eq(z_new, D + GAMMA * (s - B))
    sol = sp.solve(relation, s, dict=True)
    assert len(sol) == 1
    inv_s = sp.simplify(sol[0][s])
    # explicit: the only network value in the inverse is eps at z, which the output holds
    explicit = all(arg == z for f in inv_s.atoms(sp.Function) if f.func == EPS for arg in f.args)
    det = _jacobian_det(z, D + GAMMA * (s - B), s, z)
    return Verdict("BDIA (paper eq. 29)", explicit, {"s (= z_{i+1})": inv_s, "z": z}, None, det, small_step_roots(False))


@functools.lru_cache(maxsize=None)  # sympy is slow; the results are immutable
def derive_damped() -> Verdict:
    """The authors' damped sampler as a map (s, z) -> (s', z'); solve for (s, z) from (s', z')."""
    s, z, s_new, z_new = sp.symbols("s z s_new z_new")
    D, B = _maps(z)
    z_out = D + GAMMA * (s - B)
    s_out = z + (s - B) / 2
    # s from the re-estimate: linear in s, but its solution contains z (and eps(z))
    s_of_z = sp.solve(sp.Eq(s_new, s_out), s, dict=True)
    assert len(s_of_z) == 1
    s_expr = sp.simplify(s_of_z[0][s])
    # substituting into the sampling equation leaves one equation in the unknown z
    eq_z = sp.simplify(sp.expand(z_out.subs(s, s_expr) - z_new))
    has_network_at_unknown = any(f.func == EPS and f.has(z) for f in eq_z.atoms(sp.Function))
    try:  # sympy cannot isolate z from a + b*eps(z): solve returns nothing usable
        z_sol = sp.solve(eq_z, z, dict=True)
        isolated = [d[z] for d in z_sol if not d[z].has(EPS(z)) and not d[z].has(z)]
    except (NotImplementedError, TypeError):
        isolated = []
    explicit = not has_network_at_unknown and bool(isolated)
    det = _jacobian_det(s_out, z_out, s, z)
    inverse = {"s": s_expr, "z": isolated[0] if isolated else "root of the implicit equation"}
    return Verdict("BDIA damped (authors' sampler)", explicit, inverse,
                   None if explicit else sp.collect(sp.expand(eq_z), EPS(z)), det, small_step_roots(True))


# --- numeric reference steps (any array type with + - *; float64 host scalars) ------------------
EpsFn = Callable[[Any, int], Any]


def ddim_map(z: Any, e: Any, alpha: Sequence[float], sigma: Sequence[float], i: int, j: int) -> Any:
    """DDIM from grid point i to grid point j with the noise prediction e made at z_i (eq. 6 / 23)."""
    c = float(alpha[j]) / float(alpha[i])
    return c * z + (float(sigma[j]) - float(sigma[i]) * c) * e


def bdia_step(eps_fn: EpsFn, alpha: Sequence[float], sigma: Sequence[float], i: int, s: Any, z: Any,
              gamma: float, coords: str = "model") -> Any:
    """z_{i-1} from (s = z_{i+1}, z = z_i). coords 'model': paper eq. 29 / the authors' code,
    z_{i-1} = D_i(z) + gamma (s - B_i(z)); 'scaled': linmultistep's BDIA, the same with
    gamma alpha_{i-1} / alpha_{i+1}."""
    e = eps_fn(z, i)
    g = _weight(alpha, i, gamma, coords)
    return ddim_map(z, e, alpha, sigma, i, i - 1) + g * (s - ddim_map(z, e, alpha, sigma, i, i + 1))


def bdia_inverse_step(eps_fn: EpsFn, alpha: Sequence[float], sigma: Sequence[float], i: int, z: Any, z_new: Any,
                      gamma: float, coords: str = "model") -> Any:
    """s = z_{i+1} from (z_i, z_{i-1}): the explicit inverse of :func:`bdia_step` (one network call at z_i),
    s = B_i(z) + (z_new - D_i(z)) / gamma_eff."""
    e = eps_fn(z, i)
    g = _weight(alpha, i, gamma, coords)
    return ddim_map(z, e, alpha, sigma, i, i + 1) + (z_new - ddim_map(z, e, alpha, sigma, i, i - 1)) * (1.0 / g)


def _weight(alpha: Sequence[float], i: int, gamma: float, coords: str) -> float:
    if coords == "model":
        return float(gamma)
    if coords == "scaled":
        return float(gamma) * float(alpha[i - 1]) / float(alpha[i + 1])
    raise ValueError(f"coords must be 'model' or 'scaled', got {coords!r}")


def damped_step(eps_fn: EpsFn, alpha: Sequence[float], sigma: Sequence[float], i: int, s: Any, z: Any,
                gamma: float) -> tuple[Any, Any]:
    """The authors' damped step (s_i, z_i) -> (s_{i-1}, z_{i-1}):
    z_{i-1} = D_i(z) + gamma (s - B_i(z)),  s_{i-1} = z + (s - B_i(z)) / 2  (one network call)."""
    e = eps_fn(z, i)
    defect = s - ddim_map(z, e, alpha, sigma, i, i + 1)
    return z + 0.5 * defect, ddim_map(z, e, alpha, sigma, i, i - 1) + float(gamma) * defect


def damped_inverse_equation(eps_fn: EpsFn, alpha: Sequence[float], sigma: Sequence[float], i: int, s_new: Any,
                            z_new: Any, gamma: float, z: Any) -> tuple[Any, Any]:
    """For a candidate z_i: (residual of the implicit equation, the s_i it implies).

    residual = (a_i - 2 gamma) z + b_i eps(z, i) - (z_new - 2 gamma s_new), a_i = alpha_{i-1}/alpha_i,
    b_i = sigma_{i-1} - sigma_i a_i; zero exactly at the z_i that produced (s_new, z_new). Finding that
    root is a nonlinear solve with the network (no closed form); s_i = B_i(z) + 2 (s_new - z) follows."""
    e = eps_fn(z, i)
    a = float(alpha[i - 1]) / float(alpha[i])
    b = float(sigma[i - 1]) - float(sigma[i]) * a
    g = float(gamma)
    residual = (a - 2 * g) * z + b * e - (z_new - 2 * g * s_new)
    return residual, ddim_map(z, e, alpha, sigma, i, i + 1) + 2.0 * (s_new - z)


if __name__ == "__main__":  # python -m linmultistep.analysis.bdia_damped
    c = derive_coordinates()
    print(f"paper eq. 29 in xbar: a_i2 = {c.a2}, a_i1 = {c.a1}; same as the library's rule: {c.same_as_library}")
    print(derive_plain())
    print(derive_damped())
