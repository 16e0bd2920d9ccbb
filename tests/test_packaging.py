"""Packaging metadata: one version, an SPDX license string (no setuptools deprecation warning),
a docs extra inside `all`. The full build/install check is .ci/check_wheel.sh (run by .ci/run)."""

import ast
import re
import sys
from pathlib import Path

import pytest

import linmultistep

ROOT = Path(__file__).resolve().parent.parent
tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_in_one_place():
    proj = _pyproject()
    assert "version" not in proj["project"] and "version" in proj["project"]["dynamic"]
    assert proj["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "linmultistep.__version__"}
    tree = ast.parse((ROOT / "linmultistep" / "__init__.py").read_text())
    found = [n.value.value for n in tree.body if isinstance(n, ast.Assign)
             and getattr(n.targets[0], "id", "") == "__version__"]
    assert found == [linmultistep.__version__] and re.fullmatch(r"\d+\.\d+\.\d+.*", found[0])


def test_spdx_license_and_setuptools_floor():
    proj = _pyproject()
    assert proj["project"]["license"] == "MIT"
    assert not any("License ::" in c for c in proj["project"].get("classifiers", []))  # PEP 639: not both
    req = proj["build-system"]["requires"]
    m = [re.fullmatch(r"setuptools>=(\d+)", r) for r in req]
    assert any(x and int(x.group(1)) >= 77 for x in m), req


def test_docs_extra_is_in_all():
    extras = _pyproject()["project"]["optional-dependencies"]
    names = {re.split(r"[<>=\[]", d)[0] for d in extras["docs"]}
    assert {"mkdocs", "mkdocstrings"} <= names
    assert "docs" in extras["all"][0]


def test_check_wheel_script_is_run_by_ci():
    assert (ROOT / ".ci" / "check_wheel.sh").stat().st_mode & 0o111
    assert ".ci/check_wheel.sh" in (ROOT / ".ci" / "run").read_text()
