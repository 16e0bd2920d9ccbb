"""Symbolic analysis of linear multistep methods (sympy): installed as linmultistep.analysis."""

# --- convergence study (problems, study, plots, report): imported on first use, so that
# `import linmultistep.analysis` pulls in neither scipy nor matplotlib.
_STUDY_EXPORTS = {
    "GaussianMixture": "problems", "gaussian": "problems", "default_mixture": "problems", "eps_fn_for": "problems",
    "run_study": "study", "fit_order": "study", "make_grid": "study", "StudyResult": "study",
}
_previous_getattr = globals().get("__getattr__")


def __getattr__(name):
    if name in _STUDY_EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_STUDY_EXPORTS[name]}"), name)
    if _previous_getattr is not None:
        return _previous_getattr(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
