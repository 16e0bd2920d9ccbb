"""Every error constant a docs page quotes is the model's, in the one convention (C_{p+1}/sigma(1)).

A page may quote an error constant in three checked forms: the generated block of
docs/analysis.md (``python -m linmultistep.analysis.constants``), a markdown table with an
"error constant" column whose first column names the method (``method`` or ``k`` for the
LTE-optimal k-step BELM), and the family search output (``N-step BELM, order p, free ...:
... error constant C_(p+1)/sigma(1) = <expr>`` followed by ``best...: {...}, error constant <v>``).
Any other number written right after "error constant" is an unchecked quote and fails.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import pytest
import sympy as sp

from linmultistep.analysis import constants, derive_belm
from linmultistep.analysis.lmm import LinearMultistepMethod

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
NUMBER = r"[-+]?\d+(?:/\d+)?"
UNCHECKED = re.compile(rf"(?i)(?:error|normali[sz]ed|lte)\s+constant\s*(?:C\s*)?(?:=|is|:)?\s*({NUMBER})(?![\w(])")
FAMILY = re.compile(r"(\d+)-step BELM, order (\d+), free [^:]+:.*error constant C_\(p\+1\)/sigma\(1\) = (.+)$")
BEST = re.compile(rf"best(?: zero-stable in both directions)?: (\{{.*?\}}), error constant ({NUMBER})\s*$")


@lru_cache(maxsize=None)
def _family(k: int, order: int):
    return derive_belm(k, order)


@lru_cache(maxsize=None)
def _named(first_header: str, first_cell: str) -> sp.Expr:
    if first_header == "k":
        return LinearMultistepMethod.from_method("belm", k=int(first_cell)).error_constant()
    if first_header == "method":
        return constants.relation_named(first_cell).error_constant()
    raise KeyError(f"a table with an error-constant column needs a first column 'method' or 'k', got {first_header!r}")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def check_page(text: str, where: str = "page") -> list[str]:
    """Problems with the error constants quoted in ``text`` (empty: all are the model's)."""
    problems: list[str] = []
    lines = text.splitlines()
    in_block = False
    header: list[str] | None = None
    const_col: int | None = None
    family = None
    for n, line in enumerate(lines, 1):
        at = f"{where}:{n}"
        if line.strip() == constants.BEGIN:
            in_block = True
            continue
        if line.strip() == constants.END:
            in_block = False
            continue
        if in_block:
            continue  # the generated block: compared as a whole below
        # markdown tables
        if line.lstrip().startswith("|"):
            cells = _cells(line)
            if header is None:
                header = [c.lower() for c in cells]
                const_col = next((i for i, c in enumerate(header) if "error constant" in c), None)
            elif const_col is not None and not set(line.strip()) <= set("|-: "):
                try:
                    want = _named(header[0], cells[0])
                except (KeyError, ValueError) as e:
                    problems.append(f"{at}: {e}")
                    continue
                if sp.sympify(cells[const_col]) != want:
                    problems.append(f"{at}: {cells[0]} quoted {cells[const_col]}, the model says {want}")
                continue
            if const_col is None:
                problems += [f"{at}: unchecked error constant {u.group(1)!r} in a table without an "
                             "error-constant column" for u in UNCHECKED.finditer(line)]
            continue
        header, const_col = None, None
        m = FAMILY.search(line)
        if m:
            k, order, expr = int(m.group(1)), int(m.group(2)), m.group(3)
            family = _family(k, order)
            got = sp.sympify(expr, locals={str(p): p for p in family.params})
            if sp.simplify(got - family.error_constant) != 0:
                problems.append(f"{at}: family ({k}, order {order}) quoted {expr}, the model says "
                                f"{family.error_constant}")
            continue
        m = BEST.search(line)
        if m:
            if family is None:
                problems.append(f"{at}: a 'best' member quoted outside a family's output")
                continue
            values = {sp.Symbol(name): sp.Rational(v) for name, v in re.findall(rf"'(a_\d+)': ({NUMBER})", m.group(1))}
            want = family.error_constant.subs({p: values[sp.Symbol(str(p))] for p in family.params})
            if sp.Rational(m.group(2)) != want:
                problems.append(f"{at}: member {m.group(1)} quoted {m.group(2)}, the model says {want}")
            continue
        for u in UNCHECKED.finditer(line):
            problems.append(f"{at}: unchecked error constant {u.group(1)!r} (quote it from the generated table "
                            f"of docs/analysis.md or in a checked form)")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_quoted_error_constant_is_the_models(page):
    assert check_page(page.read_text(), str(page.relative_to(ROOT))) == []


def test_the_generated_block_is_the_models():
    text = (ROOT / "docs" / "analysis.md").read_text()
    start, end = text.index(constants.BEGIN), text.index(constants.END) + len(constants.END)
    assert text[start:end] == constants.error_constant_table(), "run: python -m linmultistep.analysis.constants"


def test_the_checker_refuses_wrong_and_unchecked_quotes():
    """The three conventions the pages once mixed for O-BELM: only C_3/sigma(1) = 1/6 passes."""
    table = "| method | error constant C |\n|---|---|\n| O-BELM | {} |\n"
    assert check_page(table.format("1/6")) == []
    for wrong in ("-1/3", "-1/6", "1/3"):
        assert len(check_page(table.format(wrong))) == 1
    assert check_page("O-BELM has error constant -1/3 here.")  # not a checked form
    fam = ("3-step BELM, order 2, free a_3, a_2: rho(z) = ..., error constant C_(p+1)/sigma(1) = "
           "-(a_2 - 4*a_3 - 5)/(12*(a_2 + 2*a_3 + 1))\n  best: {{'a_3': -3/4, 'a_2': 1}}, error constant {}\n")
    assert check_page(fam.format("1/6")) == [] and len(check_page(fam.format("-1/6"))) == 1


def test_the_prose_claim_three_steps_buy_nothing_at_order_2():
    """docs/analysis.md: the best 3-step order-2 member found has O-BELM's error constant."""
    d = _family(3, 2)
    a3, a2 = sorted(d.params, key=str, reverse=True)
    best = d.error_constant.subs({a3: sp.Rational(-3, 4), a2: 1})
    assert best == LinearMultistepMethod.from_method("obelm").error_constant()
