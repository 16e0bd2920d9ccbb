"""Coefficient rules of variable-step variable-formula (VSVF) linear multistep methods.

A k-step rule maps the local step sizes h = (h_i, ..., h_{i+k-1}) to the coefficients of
BELM paper eq. 12 (Wang et al. 2024, arXiv 2410.07273):

    xbar_{i-1} = sum_{j=1..k} a_{i,j} xbar_{i-1+j} + sum_{j=0..k} b_{i,j} h_{i-1+j} epsbar_{i-1+j}

returned as ``a = [a_{i,1}, ..., a_{i,k}]`` and ``b = [b_{i,0}, ..., b_{i,k}]``. Rules use plain
arithmetic only, so the same function evaluates on floats (the integrator, in float64) and
on sympy symbols (the analysis module). h is measured against the direction of the
method's own run: for diffusion sampling h > 0; for an ODE integrated forward in t, h < 0.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

__all__ = ["Rule", "euler", "obelm", "bdia", "adams_bashforth", "lagrange_integral_weights"]

Rule = Callable[[Sequence[Any]], tuple[list[Any], list[Any]]]


def euler(h: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """Explicit Euler, i.e. DDIM in (sigmabar, xbar): xbar_{i-1} = xbar_i - h_i epsbar_i."""
    return [1], [0, -1]


def obelm(h: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """O-BELM (BELM paper Prop. 4): the LTE-optimal 2-step BELM, LTE O((h_i + h_{i+1})^3).

    a_{i,1} = (h_{i+1}^2 - h_i^2) / h_{i+1}^2,  a_{i,2} = h_i^2 / h_{i+1}^2,
    b_{i,1} = -(h_i + h_{i+1}) / h_{i+1}.
    """
    h0, h1 = h[0], h[1]
    return [(h1 * h1 - h0 * h0) / (h1 * h1), (h0 * h0) / (h1 * h1)], [0, -(h0 + h1) / h1, 0]


def bdia(gamma: Any) -> Rule:
    """BDIA(gamma) (Zhang et al. 2023, eq. 29) as a 2-step BELM.

    a_{i,1} = 1 - gamma, a_{i,2} = gamma, b_{i,1} h_i = -(h_i + gamma h_{i+1}).
    """

    def rule(h: Sequence[Any]) -> tuple[list[Any], list[Any]]:
        h0, h1 = h[0], h[1]
        return [1 - gamma, gamma], [0, -(h0 + gamma * h1) / h0, 0]

    return rule


def _poly_mul(p: list[Any], q: list[Any]) -> list[Any]:
    out: list[Any] = [0] * (len(p) + len(q) - 1)
    for i, pi in enumerate(p):
        for j, qj in enumerate(q):
            out[i + j] = out[i + j] + pi * qj
    return out


def lagrange_integral_weights(nodes: Sequence[Any], upper: Any) -> list[Any]:
    """w_j = integral_0^upper L_j(tau) dtau for the Lagrange basis L_j on ``nodes``.

    Plain arithmetic (works with sympy symbols): L_j is expanded as a coefficient list.
    """
    weights = []
    for j, tj in enumerate(nodes):
        poly: list[Any] = [1]
        for m, tm in enumerate(nodes):
            if m != j:
                poly = _poly_mul(poly, [-tm / (tj - tm), 1 / (tj - tm)])
        w: Any = 0
        power = upper
        for deg, c in enumerate(poly):
            w = w + c * power / (deg + 1)
            power = power * upper
        weights.append(w)
    return weights


def adams_bashforth(k: int) -> Rule:
    """Variable-step k-step Adams-Bashforth: xbar_{i-1} = xbar_i + integral of the polynomial
    interpolating the slopes at points i..i+k-1 over [t_i, t_{i-1}].

    With tau measured from the new point (tau_j = h_i + ... + h_{i+j-2} for point i-1+j),
    b_{i,j} h_{i-1+j} = -integral_0^{tau_1} L_j(tau) dtau; order k.
    """
    if int(k) != k or k < 1:
        raise ValueError(f"Adams-Bashforth needs an integer k >= 1, got {k}")

    def rule(h: Sequence[Any]) -> tuple[list[Any], list[Any]]:
        nodes: list[Any] = []
        acc: Any = 0
        for j in range(k):
            acc = acc + h[j]
            nodes.append(acc)
        w = lagrange_integral_weights(nodes, nodes[0])
        a = [1] + [0] * (k - 1)
        b = [0] + [-w[j] / h[j] for j in range(k)]
        return a, b

    return rule
