"""A latent refuses any other coefficient rule, also for user-supplied belm rules of one name."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import linmultistep as lm
from linmultistep import LatentMismatchError, MethodError, rules
from linmultistep.generated_belm import optimal_rule

RULES = {"obelm": rules.obelm, "optimal k=2": optimal_rule(2)} | {
    f"bdia({g})": rules.bdia(g) for g in (1.0, 0.9, 0.5, 0.25)}

GRID = lm.Grid.from_alphas_cumprod(lm.alphas_cumprod_for("scaled_linear"), 8, "leading", steps_offset=1,
                                   final_alpha_one=False)


def eps(x, i):
    return np.tanh(x) * (1 + i / 10)


@pytest.mark.bad_input("4 companions")
@given(st.sampled_from(sorted(RULES)), st.sampled_from(sorted(RULES)))
def test_latent_refuses_another_rule_and_accepts_its_own(a, b):
    ma, mb = lm.belm(rule=RULES[a]), lm.belm(rule=RULES[b])
    x0 = np.linspace(-1, 1, 6).reshape(2, 3)
    latent = lm.invert(eps, x0, GRID, ma, mode="recurrence")
    same_rule = np.allclose(ma.coefficients([0.3, 0.7])[0], mb.coefficients([0.3, 0.7])[0]) and np.allclose(
        ma.coefficients([0.3, 0.7])[1], mb.coefficients([0.3, 0.7])[1])
    if same_rule:  # O-BELM written twice (catalogue rule and the derived one) is one method
        assert ma.spec == mb.spec
        assert np.abs(lm.sample(eps, latent, GRID, mb, mode="recurrence") - x0).max() < 1e-12
    else:
        with pytest.raises(LatentMismatchError, match="cannot be continued"):
            lm.sample(eps, latent, GRID, mb, mode="recurrence")


def test_a_recorded_user_rule_cannot_be_rebuilt_from_its_digest():
    spec = lm.belm(rule=rules.bdia(0.5)).spec
    with pytest.raises(MethodError, match="pass the method object"):
        lm.get_method(spec.name, **dict(spec.params))


@pytest.mark.bad_input("8 coercions")
@pytest.mark.parametrize("k", [2.5, True, "2"])
def test_non_integer_k_is_refused(k):
    with pytest.raises(MethodError, match="k must be a positive integer"):
        lm.belm(k=k)
