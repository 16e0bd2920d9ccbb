"""docs/study.md's Python examples run, and importing the analysis package stays light."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "study.md"


@pytest.mark.parametrize("block", re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S))
def test_doc_examples_run(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(DOC), "exec"), {})


def test_doc_images_exist():
    for name in re.findall(r"!\[[^\]]*\]\((img/[^)]+)\)", DOC.read_text()):
        assert (DOC.parent / name).is_file(), name


def test_import_analysis_does_not_import_matplotlib_or_scipy(tmp_path):
    code = ("import sys, linmultistep.analysis as a; "
            "assert 'matplotlib' not in sys.modules and 'scipy' not in sys.modules, sorted(sys.modules); "
            "assert callable(a.run_study)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)  # cwd: no source tree shadowing
