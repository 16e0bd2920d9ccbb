"""Seed Table 1 (BELM paper Table 1) recomputed: exact inversion, local error in x, zero-stability, convergence.

Every cell is computed: exact inversion from the catalogue method's coefficients (b_{i,k} = 0,
a_{i,k} != 0) or EDICT's coupled structure; the local error by expanding one step in model
coordinates x = alpha xbar (:mod:`.xerror`, :mod:`.edict`) with symbolic step sizes and
parameters; zero-stability and convergence exactly at uniform steps (:mod:`.stability`).
The seed's claims are printed alongside for comparison only.

Run: ``python -m linmultistep.analysis.table1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from linmultistep import get_method, rules

from .edict import P, edict_x_error
from .relation import relation_from_rule, step_symbols
from .stability import convergence, is_zero_stable
from .xerror import XError, lm_x_error

__all__ = ["Table1Row", "table1", "format_table1"]

SEED = {
    "DDIM": "O(alpha h^2)",
    "EDICT(p)": "O(sqrt(alpha_{i-1}) h)",
    "BDIA(gamma)": "O(alpha (h_i+h_{i+1})^2)",
    "O-BELM": "O(alpha (h_i+h_{i+1})^3)",
}

GAMMA = sp.Symbol("gamma", positive=True)
STEP_NAMES = ["h_i", "h_{i+1}", "h_{i+2}", "h_{i+3}", "h_{i+4}"]


@dataclass
class Table1Row:
    name: str
    exact_inversion: bool
    error: XError
    k: int
    zero_stable: str
    convergent: str
    seed: str = ""

    @property
    def local_error(self) -> str:
        steps = STEP_NAMES[0] if self.k == 1 else "(" + "+".join(STEP_NAMES[: self.k]) + ")"
        if self.error.alpha_power == 1:
            factor = "alpha_{i-1} "
        elif self.error.alpha_power is not None:
            factor = f"alpha_{{i-1}}^{self.error.alpha_power} "
        else:
            factor = "[alpha_{i-1}, alpha'_{i-1} terms] "
        return f"O({factor}{steps}^{self.error.order})"


def _lm_row(name: str, rule, k: int, method, order: int = 3, seed: str = "") -> Table1Row:
    hats = step_symbols(k)
    rel = relation_from_rule(rule, k)
    err = lm_x_error(rel.a, rel.b, hats, name, order)
    zs = is_zero_stable(method)
    conv = convergence(method)
    return Table1Row(name, bool(method.backward_explicit), err, k, _zs_text(zs), "yes" if conv else "no", seed)


def _zs_text(zs) -> str:
    txt = "yes" if zs else "no"
    if zs.inversion is not None:
        txt += " / inv " + ("yes" if zs.inversion else "no")
    return txt


def _edict_row(order: int) -> Table1Row:
    ex, _ = edict_x_error(order, P)
    ed = get_method("edict")
    zs = is_zero_stable(ed)
    return Table1Row("EDICT(p)", bool(ed.exact_backward(None, 1)), ex, 1, _zs_text(zs),
                     "yes" if (ex.order >= 2 and zs) else "no", SEED["EDICT(p)"])


def table1(order: int = 3, progress: bool | None = None) -> list[Table1Row]:
    """The rows DDIM, EDICT(p), BDIA(gamma), O-BELM, all computed.

    Local errors keep p and gamma symbolic; zero-stability and convergence are for the catalogue
    defaults (EDICT p = 0.93, BDIA gamma = 1) and say 'inv' for the inversion direction.
    ``progress``: a tqdm bar over the rows on stderr (None: only when stderr is a terminal).
    """
    from tqdm.auto import tqdm

    builders = [
        ("DDIM", lambda: _lm_row("DDIM", rules.euler, 1, get_method("ddim"), order, SEED["DDIM"])),
        ("EDICT(p)", lambda: _edict_row(order)),
        ("BDIA(gamma)", lambda: _lm_row("BDIA(gamma)", rules.bdia(GAMMA), 2, get_method("bdia", gamma=1.0), order,
                                        SEED["BDIA(gamma)"])),
        ("O-BELM", lambda: _lm_row("O-BELM", rules.obelm, 2, get_method("obelm"), order, SEED["O-BELM"])),
    ]
    rows = []
    with tqdm(builders, desc="Table 1", unit="row", leave=False,
              disable=None if progress is None else not progress) as bar:
        for name, build in bar:
            bar.set_postfix_str(name)
            rows.append(build())
    return rows


def format_table1(rows: list[Table1Row]) -> str:
    head = ("method", "exact inv.", "local error in x (computed)", "zero-stable", "convergent", "seed Table 1")
    body = [(r.name, "yes" if r.exact_inversion else "no", r.local_error, r.zero_stable, r.convergent, r.seed)
            for r in rows]
    widths = [max(len(str(x[c])) for x in [head, *body]) for c in range(len(head))]
    fmt = " | ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), "-+-".join("-" * w for w in widths)] + [fmt.format(*b) for b in body]
    lines.append("")
    lines.append("leading terms (e = x_exact - x_method; X = xbar, F_ab = d^a_xbar d^b_sigmabar F, "
                 "alpha_m = d^m alpha / d sigmabar^m, all at the new point i-1):")
    for r in rows:
        lines.append(f"  {r.name}: e = ({sp.factor(r.error.leading)}) + O(h^{r.error.order + 1})")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(format_table1(table1()))
