"""Which coordinates to integrate a rectified flow in: the derivation behind ``linmultistep.paths.flow_grid``.

The flow x_t = (1 - t) x0 + t eps has the ODE dx/dt = v (the network's velocity). The core integrates
d Y = F d T, x = c Y, on a grid T_0 < ... < T_N; O-BELM there is
Y_{i-1} = a_{i,1} Y_i + a_{i,2} Y_{i+1} + b_i h_i F_i with a_{i,2} = h_i^2 / h_{i+1}^2 (h = steps in T).
Wanted, per path: (a) exact invertibility: every a_{i,2} != 0 and every coefficient finite at both ends;
(b) order 2; (c) a good sampler: the parasitic root ~ -a_{i,2} damped, a_{i,2} <= 1, i.e. steps in T
shrinking toward the data end; and (d) the DDIM method still diffusers' Euler x' = x + (t' - t) v.

Result (each step checked by :func:`derivation` with sympy):

1. (d) forces the projective family. Euler in (Y, T) reproduces Euler in (x, t) for every v iff
   it is exact on the straight lines x = x_a + t v, i.e. iff (x_a + t v) / c(t) is affine in T for all
   x_a, v: 1 / c and t / c affine in T. With T(0) = 0 and c(0) = 1 that is
   c = 1 - b t, T = t / (1 - b t), and then F = dY/dT = b x + (1 - b t) v = b eps + (1 - b) v.
   b = 0 is the flow's own (x, t); b = 1 the "gaussian" (x / alpha, sigma / alpha), whose T_N is infinite.
2. (a) For b < 1: c in [1 - b, 1], T_N = 1 / (1 - b), every h_i > 0 and finite, so every a_{i,2} is
   finite and non-zero; as b -> 1 the first two-step's a_{N-1,2} -> 0 (x_N forgotten: not invertible).
3. (b) T(t) is analytic on [0, 1] with dT/dt = (1 - b t)^-2 in [1, (1 - b)^-2]: Y(T) is as smooth as
   x(t), O-BELM's local error stays O(H^3), order 2 (fitted orders in :func:`candidate_table`).
4. (c) (1 - b) T = shift_{1-b}(t) (SD3's timestep shift with factor 1 - b). On a grid t = shift_s(u),
   u uniform (diffusers' shift, mu and FLUX's sigmas), (1 - b) T = shift_{s (1 - b)}(u), whose steps
   grow with u -- a_{i,2} <= 1 everywhere -- iff s (1 - b) <= 1. The default b = 0.96 covers s <= 25,
   at the cost of a 1 / (1 - b) = 25x wider range of Y than of x (about 4.6 bits of the exact forms).

A pure time change tau(t) with x unscaled (F = v dt/dtau) also gives a_{i,2} <= 1, but breaks (d)
(Euler in tau is another method) and, with dt/dtau up to 1 / k at the data end, loses order on the
closed-form problems at small k: the candidates table prints it for comparison.

``python -m linmultistep.analysis.flow_coordinates`` prints the symbolic checks and the candidates table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import sympy as sp

from linmultistep.grid import Grid
from linmultistep.paths import FLOW, FLOW_BLEND, flow_grid, shift_sigmas

__all__ = ["derivation", "Candidate", "CANDIDATES", "candidate_table", "max_parasitic_factor"]


def derivation() -> dict[str, bool]:
    """The symbolic checks of the module docstring, each True when sympy confirms it."""
    x, v, t, tp, b, s, u = sp.symbols("x v t t_prev b s u", real=True)
    xt = sp.Function("x")(t)
    c = 1 - b * t
    T = t / c
    out: dict[str, bool] = {}
    # 1. F = dY/dT along any trajectory, and Euler in (Y, T) is Euler in (x, t) for every b
    F_traj = sp.diff(xt / c, t) / sp.diff(T, t)
    out["F = dY/dT = b x + (1 - b t) v"] = sp.simplify(F_traj - (b * xt + c * sp.diff(xt, t))) == 0
    F = b * x + c * v
    step = (x / c + (T.subs(t, tp) - T) * F) * (1 - b * tp)
    out["DDIM in (Y, T) = Euler x + (t' - t) v, every b"] = sp.simplify(step - (x + (tp - t) * v)) == 0
    out["F = b eps + (1 - b) v with eps = x + (1 - t) v"] = sp.simplify(F - (b * (x + (1 - t) * v) + (1 - b) * v)) == 0
    # straight lines x_a + t w are affine in T exactly when 1/c and t/c are: both are, here
    xa, w = sp.symbols("x_a w", real=True)
    Tsym = sp.symbols("T", positive=True)
    t_of_T = sp.solve(sp.Eq(Tsym, T), t)[0]
    line = sp.simplify(((xa + t * w) / c).subs(t, t_of_T))
    out["straight lines stay straight in (Y, T)"] = sp.simplify(sp.diff(line, Tsym, 2)) == 0
    # 2. finite ends and the first two-step's a_2
    out["T_N = 1 / (1 - b) finite for b < 1"] = sp.simplify(T.subs(t, 1) - 1 / (1 - b)) == 0
    t1 = sp.symbols("t_1", positive=True)  # t_{N-1} < 1, t_{N-2} < t_{N-1}
    t2 = sp.symbols("t_2", positive=True)
    hN = T.subs(t, 1) - T.subs(t, t1)
    out["h_N = (1 - t_{N-1}) / ((1 - b)(1 - b t_{N-1}))"] = sp.simplify(hN - (1 - t1) / ((1 - b) * (1 - b * t1))) == 0
    a2_top = ((T.subs(t, t1) - T.subs(t, t2)) / hN) ** 2
    out["a_{N-1,2} -> 0 as b -> 1 (the gaussian limit forgets x_N)"] = sp.limit(a2_top, b, 1, "-") == 0
    out["a_{N-1,2} finite, non-zero at b = 0.99"] = bool(sp.N(a2_top.subs({b: sp.Rational(99, 100), t1: sp.Rational(9, 10),
                                                                         t2: sp.Rational(8, 10)})) > 0)
    # 3. dT/dt bounded and positive on [0, 1]
    dT = sp.simplify(sp.diff(T, t))
    out["dT/dt = (1 - b t)^-2"] = sp.simplify(dT - 1 / c**2) == 0
    # 4. (1 - b) T is the timestep shift by 1 - b, and on t = shift_s(u) the shift by s (1 - b)
    def shift(z, k):
        return k * z / (1 + (k - 1) * z)
    out["(1 - b) T = shift_{1-b}(t)"] = sp.simplify((1 - b) * T - shift(t, 1 - b)) == 0
    out["(1 - b) T(shift_s(u)) = shift_{s(1-b)}(u)"] = sp.simplify((1 - b) * T.subs(t, shift(u, s))
                                                                  - shift(u, s * (1 - b))) == 0
    k = sp.symbols("k", positive=True)
    curv = sp.factor(sp.diff(shift(u, k), u, 2))
    # d^2/du^2 shift_k(u) = 2 k (1 - k) / (1 + (k - 1) u)^3: >= 0 (steps growing toward noise) iff k <= 1
    out["steps of shift_k(u) grow with u iff k <= 1"] = sp.simplify(curv - 2 * k * (1 - k) / (1 + (k - 1) * u) ** 3) == 0
    return out


# --- candidates, measured ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """A choice of coordinates for flow times t: ``make(t, timesteps)`` -> (grid, wrap), where
    ``wrap(v_fn)`` is the field the core must be given for a velocity ``v_fn(x, i)``."""

    name: str
    euler_is_diffusers: bool
    make: Callable[[np.ndarray, Any], tuple[Grid, Callable]]


def _projective(b: float) -> Callable[[np.ndarray, Any], tuple[Grid, Callable]]:
    return lambda t, ts=None: (flow_grid(t, ts, blend=b), lambda f: f)


def _time_change(k: float) -> Callable[[np.ndarray, Any], tuple[Grid, Callable]]:
    """tau = shift_k(t), x unscaled: F = v dt/dtau, dt/dtau = (1 + (k - 1) t)^2 / k."""

    def make(t: np.ndarray, ts: Any = None) -> tuple[Grid, Callable]:
        t = np.asarray(t, dtype=np.float64)
        tau = shift_sigmas(t, k)
        w = (1.0 + (k - 1.0) * t) ** 2 / k

        def wrap(f: Callable) -> Callable:
            return lambda x, i: f(x, i) * float(w[i])

        return Grid(np.ones_like(tau), tau, ts, path=FLOW), wrap

    return make


CANDIDATES: list[Candidate] = [
    Candidate("(x, t)  [b = 0]", True, _projective(0.0)),
    Candidate("(x, shift_1/9(t))  time change", False, _time_change(1 / 9)),
    Candidate("(x, shift_0.01(t))  time change", False, _time_change(0.01)),
    Candidate("projective b = 0.9", True, _projective(0.9)),
    Candidate(f"projective b = {FLOW_BLEND:g}  [default]", True, _projective(FLOW_BLEND)),
    Candidate("projective b = 0.99", True, _projective(0.99)),
]


def max_parasitic_factor(grid: Grid) -> float:
    """max_i a_{i,2} = (h_i / h_{i+1})^2 of O-BELM over the grid's two-steps (i = 1..N-1)."""
    h = np.asarray(grid.h, dtype=np.float64)
    return float(max((h[i] / h[i + 1]) ** 2 for i in range(1, grid.N)))


def candidate_table(steps: Sequence[int] = (10, 20, 50), order_steps: Sequence[int] = (10, 20, 40, 80, 160),
                    shift: float = 3.0, samples: int = 128) -> list[dict[str, Any]]:
    """Per candidate, on SD3's shift on the closed-form flow problems (analysis.flow_problems, seed 0):
    max a_{i,2} at each N of ``steps``, O-BELM's RMS error at the data end on the mixture problem at those
    N, and the fitted order over ``order_steps`` on the Gaussian and the mixture problem."""
    import linmultistep as lm

    from .flow_problems import flow_problem
    from .study import fit_order

    rows = []
    probs = {name: flow_problem(name) for name in ("gaussian", "mixture")}
    noise = np.random.default_rng(0).standard_normal((samples, 2))
    exact = {name: p.flow(noise, 1.0, 0.0) for name, p in probs.items()}

    def err(cand: Candidate, name: str, n: int) -> tuple[float, float]:
        t = shift_sigmas(np.linspace(0.0, 1.0, n + 1), shift)
        grid, wrap = cand.make(t)
        p = probs[name]
        got = lm.sample(wrap(lambda x, i: p.velocity(x, float(t[i]))), noise, grid, "obelm")
        return float(np.sqrt(np.mean((got - exact[name]) ** 2))), max_parasitic_factor(grid)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the starter warning of BDIA-like grids is not the point here
        for cand in CANDIDATES:
            at = [err(cand, "mixture", n) for n in steps]
            orders = {name: fit_order(order_steps, [err(cand, name, n)[0] for n in order_steps])[0] for name in probs}
            rows.append({"name": cand.name, "euler_is_diffusers": cand.euler_is_diffusers,
                         "max_a2": [a for _, a in at], "errors": [e for e, _ in at], "orders": orders})
    return rows


def main() -> None:
    print("Symbolic checks (sympy):")
    for what, ok in derivation().items():
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
    steps = (10, 20, 50)
    print()
    print("Candidates on SD3's shift 3 (t_i = shift_3(i / N)), closed-form flow problems; O-BELM from noise; "
          "RMS error at the data end (mixture, 128 samples); fitted order over N = 10..160")
    print(f"{'coordinates':<38}{'Euler=diffusers':>16}" + "".join(f"{f'a2 N={n}':>10}" for n in steps)
          + "".join(f"{f'err N={n}':>11}" for n in steps) + f"{'order gauss':>12}{'order mix':>10}")
    for r in candidate_table(steps):
        print(f"{r['name']:<38}{'yes' if r['euler_is_diffusers'] else 'no':>16}"
              + "".join(f"{a:>10.2f}" for a in r["max_a2"]) + "".join(f"{e:>11.2e}" for e in r["errors"])
              + f"{r['orders']['gaussian']:>12.2f}{r['orders']['mixture']:>10.2f}")


if __name__ == "__main__":
    main()
