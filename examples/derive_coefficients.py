"""Derive variable-step k-step BELM coefficients symbolically and analyse the methods.

Run: python examples/derive_coefficients.py      (needs the analysis extra: sympy)

derive_belm(k) solves the Taylor order conditions of BELM paper eq. 12 with symbolic step sizes;
k = 2 gives O-BELM. The LinearMultistepMethod object then reports order, error constant and
stability of the checked-in rules at equal steps and at a step ratio.
"""

from linmultistep.analysis import derive_belm, is_zero_stable
from linmultistep.analysis.lmm import LinearMultistepMethod


def main() -> dict:
    d2 = derive_belm(2)
    print(d2)
    print()
    print(is_zero_stable(d2))
    out = {}
    for k in (2, 3):
        for ratio in (1, "1/2"):
            m = LinearMultistepMethod.from_method("belm", ratio=ratio, k=k)
            zs = bool(m.is_zero_stable())
            out[(k, ratio)] = (m.order(), zs)
            print(f"\n{m}")
    return out


if __name__ == "__main__":
    res = main()
    assert res[(2, 1)] == (2, True) and res[(3, 1)][1] is False  # only k = 2 (O-BELM) is zero-stable
