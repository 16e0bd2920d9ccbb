"""Flow-matching problems whose exact flow is known: Gaussian data (closed form) and Gaussian
mixtures (DOP853 at rtol 1e-12), on the rectified-flow path x_t = (1 - t) x0 + t eps.

Data x0 ~ sum_k w_k N(m_k, C_k) (a :class:`~.problems.GaussianMixture`). Given component k,
x_t ~ N((1 - t) m_k, S_k(t)) with S_k(t) = (1 - t)^2 C_k + t^2 I, Cov(x0, x_t) = (1 - t) C_k and
Cov(eps, x_t) = t I, so the ideal velocity v = E[eps - x0 | x_t] (Lipman et al. 2023; Liu et al.
2023) is

    v(x, t) = sum_k r_k(x, t) [ (t I - (1 - t) C_k) S_k(t)^{-1} (x - (1 - t) m_k) - m_k ],

with r_k the posterior responsibilities. In the eigenbasis u_kj, c_kj of C_k the matrix factor is
diagonal, (t - (1 - t) c) / ((1 - t)^2 c + t^2), whose denominator is positive on [0, 1] for
c > 0: v is smooth (rational, no pole) in t on the whole of [0, 1], the reason O-BELM keeps order 2
in the flow's own coordinates and in the projective ones the core uses (analysis/flow_coordinates.py). For one Gaussian the flow is linear and solves in closed form:
since (t - (1 - t) c) / S = (1/2) d/dt log S with S = (1 - t)^2 c + t^2,

    u_j . (x(t) - (1 - t) m) = u_j . (x(t') - (1 - t') m) * sqrt(S_j(t) / S_j(t')),

(d/dt of the left side is u_j . (v + m) = (1/2) S'/S times it). Checked against the mixture
solve in tests/test_flow_problems.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from linmultistep.grid import Grid
from linmultistep.paths import require_flow

from .problems import GaussianMixture, default_gaussian, default_mixture

__all__ = ["FlowProblem", "flow_problem", "v_fn_for", "FLOW_PROBLEMS", "flow_errors", "FlowOrders", "flow_orders"]


@dataclass(frozen=True)
class FlowProblem:
    """A rectified-flow problem: the data distribution and its exact velocity and flow."""

    data: GaussianMixture

    @property
    def name(self) -> str:
        return f"flow-{self.data.name}"

    @property
    def dim(self) -> int:
        return self.data.dim

    def _whitened(self, x: np.ndarray, t: float):
        diff = x[..., None, :] - (1.0 - t) * self.data.means  # (..., K, d)
        proj = np.einsum("...kd,kdj->...kj", diff, self.data.eigvecs)  # u_kj . (x - (1 - t) m_k)
        var = (1.0 - t) ** 2 * self.data.eigvals + t * t  # S_kj(t)
        return proj, var

    def velocity(self, x: np.ndarray, t: float) -> np.ndarray:
        """v(x, t) of the module docstring, float64."""
        x = np.asarray(x, dtype=np.float64)
        proj, var = self._whitened(x, t)
        w = self.data.weights
        logc = np.log(w) - 0.5 * np.log(var).sum(-1) - 0.5 * (proj**2 / var).sum(-1)
        r = np.exp(logc - logc.max(-1, keepdims=True))
        r /= r.sum(-1, keepdims=True)
        gain = (t - (1.0 - t) * self.data.eigvals) / var  # (K, d)
        per = np.einsum("kdj,...kj->...kd", self.data.eigvecs, gain * proj) - self.data.means
        return np.einsum("...k,...kd->...d", r, per)

    def flow_closed_form(self, x: np.ndarray, t_from: float, t_to: float) -> np.ndarray:
        """The exact flow map t_from -> t_to of a single Gaussian (module docstring)."""
        if self.data.K != 1:
            raise ValueError("the closed-form flow exists for a single Gaussian only; use flow_reference")
        u, c, m = self.data.eigvecs[0], self.data.eigvals[0], self.data.means[0]
        factor = np.sqrt(((1 - t_to) ** 2 * c + t_to**2) / ((1 - t_from) ** 2 * c + t_from**2))
        proj = (np.asarray(x, dtype=np.float64) - (1 - t_from) * m) @ u
        return (1 - t_to) * m + (proj * factor) @ u.T

    def flow_reference(self, x: np.ndarray, t_from: float, t_to: float, rtol: float = 1e-12,
                       atol: float = 1e-13) -> np.ndarray:
        """The flow map by scipy's DOP853 at tight tolerances (all rows as one system)."""
        from scipy.integrate import solve_ivp

        x = np.asarray(x, dtype=np.float64)
        shape = x.shape
        if t_from == t_to:
            return x.copy()
        sol = solve_ivp(lambda t, y: self.velocity(y.reshape(shape), t).ravel(), (t_from, t_to), x.ravel(),
                        method="DOP853", rtol=rtol, atol=atol)
        if not sol.success:  # pragma: no cover - scipy reports its own reason
            raise RuntimeError(f"reference solve failed: {sol.message}")
        return sol.y[:, -1].reshape(shape)

    def flow(self, x: np.ndarray, t_from: float, t_to: float) -> np.ndarray:
        """Exact flow: closed form for one Gaussian, the DOP853 reference for a mixture."""
        return self.flow_closed_form(x, t_from, t_to) if self.data.K == 1 else self.flow_reference(x, t_from, t_to)

    def sample(self, rng: np.random.Generator, n: int, t: float = 0.0) -> np.ndarray:
        """n draws of x_t = (1 - t) x0 + t eps (t = 0: data, t = 1: standard normal noise)."""
        x0 = self.data.sample(rng, n)
        return (1.0 - t) * x0 + t * rng.standard_normal(x0.shape)


def flow_problem(name: str = "gaussian", dim: int = 2, seed: int = 0) -> FlowProblem:
    """'gaussian' (closed-form flow; variances 0.02..0.4) or 'mixture' (the study's three
    anisotropic Gaussians), on the rectified-flow path."""
    if name not in FLOW_PROBLEMS:
        raise ValueError(f"unknown flow problem {name!r}; expected one of {sorted(FLOW_PROBLEMS)}")
    return FlowProblem(FLOW_PROBLEMS[name](dim=dim, seed=seed))


FLOW_PROBLEMS: dict[str, Callable[..., GaussianMixture]] = {"gaussian": default_gaussian, "mixture": default_mixture}


def v_fn_for(problem: FlowProblem, grid: Grid) -> Callable[[np.ndarray, int], np.ndarray]:
    """The ideal velocity network on a flow grid: v_fn(x, i) = v(x, t_i), in x's dtype."""
    t = require_flow(grid, "v_fn_for").sigma

    def v_fn(x: np.ndarray, i: int) -> np.ndarray:
        return problem.velocity(np.asarray(x, dtype=np.float64), float(t[i])).astype(x.dtype, copy=False)

    return v_fn


def flow_errors(problem: FlowProblem, grid: Grid, method, noise: np.ndarray, exact: "np.ndarray | None" = None) -> float:
    """RMS error at the data end of sampling ``noise`` (at t_N) with ``method`` against the exact flow
    (``exact``: that flow of ``noise`` from t_N to t_0 if already computed)."""
    import linmultistep as lm

    t = require_flow(grid, "flow_errors").sigma
    if exact is None:
        exact = problem.flow(noise, float(t[-1]), float(t[0]))
    got = lm.sample(v_fn_for(problem, grid), noise, grid, method)
    return float(np.sqrt(np.mean((got - exact) ** 2)))


@dataclass(frozen=True)
class FlowOrders:
    """Errors per method and number of steps, and the fitted orders (slope of log error vs log N)."""

    steps: tuple[int, ...]
    errors: dict[str, tuple[float, ...]]
    orders: dict[str, float]


def flow_orders(problem: FlowProblem, methods: Sequence[str], steps: Sequence[int], shift: float = 1.0,
                samples: int = 256, seed: int = 0, blend: "float | None" = None) -> FlowOrders:
    """Fitted convergence orders on shifted uniform flow grids (diffusers' default schedule
    without the training-set offset: t_i = shift(i / N)), in the coordinates of ``blend``
    (:func:`linmultistep.paths.flow_grid`; None: its default, 0: the flow's own (x, t))."""
    from linmultistep.paths import FLOW_BLEND, flow_grid, shift_sigmas

    b = FLOW_BLEND if blend is None else blend

    from .study import fit_order

    noise = np.random.default_rng(seed).standard_normal((samples, problem.dim))
    exact = problem.flow(noise, 1.0, 0.0)  # every grid here runs from t = 1 to t = 0
    errors: dict[str, list[float]] = {m: [] for m in methods}
    for n in steps:
        grid = flow_grid(shift_sigmas(np.linspace(0.0, 1.0, n + 1), shift), blend=b)
        for m in methods:
            errors[m].append(flow_errors(problem, grid, m, noise, exact))
    orders = {m: fit_order(steps, errors[m])[0] for m in methods}
    return FlowOrders(tuple(int(n) for n in steps), {m: tuple(e) for m, e in errors.items()}, orders)
