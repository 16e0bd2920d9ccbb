"""EDICT (Wallace et al. 2023) analysed: its coupled step on Taylor series, and its step map at h -> 0.

The update, as in BDIA paper sec. 3.2 eqs. 11-14 and linmultistep.methods.Edict, with the DDIM map
D(u, e) = alpha_{i-1} (u / alpha_i - h_i e) and the model e(u, i) = F(u / alpha_i, sigmabar_i):

    x' = D(x_i, e(y_i, i)),   y' = D(y_i, e(x', i)),
    x_{i-1} = p x' + (1 - p) y',   y_{i-1} = p y' + (1 - p) x_{i-1}.

EDICT is not a coefficient rule (two states, two model calls), so its local error is computed
directly: both states start on the exact solution, x_i = y_i = alpha_i xbar(sigmabar_i).
"""

from __future__ import annotations

import sympy as sp

from .xerror import EPS, Jets, XError, x_error_of

__all__ = ["edict_step", "edict_x_error", "edict_zero_step_matrix", "P"]

P = sp.Symbol("p", positive=True)


def edict_step(jets: Jets, p: sp.Expr = P, h_hat: sp.Expr = sp.Symbol("h_i", positive=True)) -> tuple[sp.Expr, sp.Expr]:
    """(x_{i-1}, y_{i-1}) as series, from x_i = y_i on the exact solution one step h_i above."""
    A_i = jets.alpha_at(h_hat)
    inv_A_i = jets.inverse(A_i)
    x = y = jets.trunc(A_i * jets.xbar_at(h_hat))

    def model(u: sp.Expr) -> sp.Expr:
        return jets.field(jets.trunc(u * inv_A_i), h_hat)

    def ddim(u: sp.Expr, e: sp.Expr) -> sp.Expr:
        return jets.trunc(jets.A(0) * (u * inv_A_i - EPS * h_hat * e))

    x1 = ddim(x, model(y))
    y1 = ddim(y, model(x1))
    x_new = jets.trunc(p * x1 + (1 - p) * y1)
    y_new = jets.trunc(p * y1 + (1 - p) * x_new)
    return x_new, y_new


def edict_x_error(order: int = 3, p: sp.Expr = P) -> tuple[XError, XError]:
    """Local x-errors of EDICT's primary state x and auxiliary state y."""
    ex = x_error_of(lambda j: edict_step(j, p)[0], "EDICT x", order)
    ey = x_error_of(lambda j: edict_step(j, p)[1], "EDICT y", order)
    return ex, ey


def edict_zero_step_matrix(p: sp.Expr = P) -> sp.Matrix:
    """The map (x_i, y_i) -> (x_{i-1}, y_{i-1}) at h = 0 (model term gone, alpha ratio 1).

    x' = x, y' = y, x_new = p x + (1-p) y, y_new = p y + (1-p) x_new.
    """
    x, y = sp.symbols("x y")
    x_new = p * x + (1 - p) * y
    y_new = sp.expand(p * y + (1 - p) * x_new)
    return sp.Matrix([[sp.diff(x_new, x), sp.diff(x_new, y)], [sp.diff(y_new, x), sp.diff(y_new, y)]])
