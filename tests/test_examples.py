"""Every script in examples/ runs as documented (each in a few seconds) and checks its own claims."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
NEEDS = {"derive_coefficients.py": ["sympy"], "stability_regions.py": ["sympy", "matplotlib"],
         "steer_digit.py": ["torch", "diffusers", "matplotlib"]}


def test_there_are_examples():
    assert {p.name for p in EXAMPLES} >= {"invert_reconstruct.py", "custom_integrator.py", "derive_coefficients.py",
                                         "stability_regions.py"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(path, tmp_path):
    for mod in NEEDS.get(path.name, []):
        pytest.importorskip(mod)
    args = [sys.executable, str(path)]
    if path.name == "stability_regions.py":
        args += ["--out", str(tmp_path / "regions.png")]
    if path.name == "steer_digit.py":  # the documented run takes 20 iterations; here a short one
        args += ["--out", str(tmp_path / "steer.png"), "--iterations", "2", "--steps", "10", "--threads", "1"]
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin",
                               "HOME": str(tmp_path), "MPLCONFIGDIR": str(tmp_path / "mpl")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip(), "an example should say what it shows"
    if path.name == "stability_regions.py":
        assert (tmp_path / "regions.png").read_bytes()[:4] == b"\x89PNG"
        assert "AB2: order 2, zero-stable True, real stability intervals [(-1.0, 0.0)]" in proc.stdout


def test_examples_have_a_docstring_with_the_command():
    for path in EXAMPLES:
        spec = importlib.util.spec_from_file_location(path.stem, path)
        text = path.read_text()
        assert text.startswith('"""') and f"python examples/{path.name}" in text, path.name
        assert spec is not None
