"""The examples in the docstrings run: every module of the package that has one is doctested."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import linmultistep


def _modules_with_examples() -> list[str]:
    names = []
    packages = [linmultistep] + [importlib.import_module(f"linmultistep.{p}") for p in ("backends", "analysis")]
    infos = [i for pkg in packages for i in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
    for info in infos:
        spec = importlib.util.find_spec(info.name)
        origin = getattr(spec, "origin", None)
        if origin and origin.endswith(".py") and ">>> " in open(origin, encoding="utf-8").read():
            names.append(info.name)
    return sorted(set(names))  # installed, linmultistep's own walk also reaches backends/ and analysis/


MODULES = _modules_with_examples()


def test_the_examples_are_found():
    assert {"linmultistep.stepping", "linmultistep.modes", "linmultistep.fixedkernels",
            "linmultistep.analysis.lmm"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    res = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert res.attempted > 0 and res.failed == 0, res
