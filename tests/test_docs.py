"""The code in the user docs runs as written."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "docs/conventions.md", "docs/custom-integrators.md", "docs/precision.md", "docs/analysis.md",
        "docs/digits.md", "docs/gradients.md"]


@pytest.mark.parametrize("path", DOCS)
def test_python_blocks_run(path):
    text = (ROOT / path).read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, f"{path} has no python examples"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, f"{path}", "exec"), namespace)
