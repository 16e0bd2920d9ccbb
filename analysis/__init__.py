"""Symbolic analysis of linear multistep methods (sympy) and the convergence study: linmultistep.analysis.

Symbolic analysis (sympy), all read from one model, :class:`LMRelation` (a variable-step k-step
linear multistep relation; order conditions, LTE and THE error constant C_{p+1}/sigma(1),
zero-stability, convergence, Lagrange-weight families; :mod:`.relation` states the conventions):
- :func:`derive_belm` derives variable-step k-step BELM coefficients from the Taylor conditions.
- :func:`local_error` gives the order and leading LTE term of any coefficient rule or relation;
  ``xerror.lm_x_error`` / ``edict.edict_x_error`` the error in model coordinates x = alpha xbar.
- :func:`is_zero_stable` decides the root condition exactly; :func:`convergence` adds consistency;
  :func:`grid_growth` measures companion-matrix growth on a real grid, in both directions.
- :func:`table1` reproduces the seed's Table 1 by computation; :func:`search_zero_stable`
  searches the lower-order 3- and 4-step BELM families for zero-stable members.
- :class:`LinearMultistepMethod` (nodepy style) is the model's fixed-coefficient view (equal steps
  or a constant step ratio): rho, sigma, order, error constant and zero-stability from the model,
  plus absolute stability and the stability-region plot, for classical methods (``lmm.bdf(k)``,
  ...) and for any catalogue method (``LinearMultistepMethod.from_method``).

Every name is imported on first use, so that `import linmultistep.analysis` pulls in neither
sympy, scipy nor matplotlib.
"""

_SYMBOLIC_EXPORTS = {
    "BELMDerivation": "derive", "derive_belm": "derive",
    "LMRelation": "relation", "LocalError": "relation", "local_error": "relation", "order_condition": "relation",
    "relation_from_method": "relation", "relation_from_rule": "relation", "as_relation": "relation",
    "RootCondition": "rootcond", "root_condition": "rootcond",
    "ZeroStability": "stability", "Convergence": "stability", "GridGrowth": "stability",
    "is_zero_stable": "stability", "convergence": "stability", "grid_growth": "stability",
    "table1": "table1", "format_table1": "table1",
    "search_zero_stable": "search", "zero_stable_family": "search",
    "LinearMultistepMethod": "lmm",
}

# --- convergence study (problems, study, plots, report): imported on first use, so that
# `import linmultistep.analysis` pulls in neither scipy nor matplotlib.
_STUDY_EXPORTS = {
    "GaussianMixture": "problems", "gaussian": "problems", "default_mixture": "problems", "eps_fn_for": "problems",
    "run_study": "study", "fit_order": "study", "make_grid": "study", "StudyResult": "study",
}
_EXPORTS = {**_SYMBOLIC_EXPORTS, **_STUDY_EXPORTS}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
