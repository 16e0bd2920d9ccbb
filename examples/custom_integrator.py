"""A custom coefficient rule run as an ODE integrator, forwards and exactly backwards.

Run: python examples/custom_integrator.py

The rule below is a variable-step 2-step BELM written by hand (the O-BELM rule); lm.belm checks
that it is explicit and backward explicit. It integrates the Lotka-Volterra equations, is
compared with a fine reference solution, then run backwards to its starting point.
"""

import numpy as np

import linmultistep as lm


def my_rule(h):
    """(a_1, a_2), (b_0, b_1, b_2) for the step sizes (h_i, h_{i+1}) (BELM paper eq. 12)."""
    h0, h1 = h
    return [(h1**2 - h0**2) / h1**2, h0**2 / h1**2], [0, -(h0 + h1) / h1, 0]


def f(t, y):  # Lotka-Volterra
    return np.array([1.5 * y[0] - y[0] * y[1], -3.0 * y[1] + y[0] * y[1]])


def main() -> dict:
    method = lm.belm(my_rule, k=2, name="my_belm")
    y0 = np.array([2.0, 1.0])
    out = {}
    ref = lm.solve(f, y0, np.linspace(0.0, 2.0, 20001), lm.adams_bashforth(4)).y
    for n in (100, 200, 400):
        ts = np.linspace(0.0, 2.0, n + 1) ** 1.2 / 2.0**0.2  # a non-uniform grid
        sol = lm.solve(f, y0, ts, method)
        back = lm.solve(f, sol.state, ts, method, reverse=True)
        out[n] = (float(np.abs(sol.y - ref).max()), float(np.abs(back.y - y0).max()))
        print(f"N = {n:4d}: error at t = 2 {out[n][0]:.2e}   reversed back to y0: {out[n][1]:.1e}")
    return out


if __name__ == "__main__":
    res = main()
    assert all(back < 1e-12 for _, back in res.values())  # the reverse run is exact
    assert res[400][0] < res[100][0] / 8  # about second order: error / 16 per halving of h... at least / 8
