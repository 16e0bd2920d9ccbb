"""docs/bad-inputs.md quotes how many bad inputs the suite tries: it must be the counter's output."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_documented_counts_are_the_suites_own():
    script = ROOT / "benchmarks" / "bad_input_counts.py"
    if not script.is_file():  # an installed wheel's test run has no benchmarks folder
        import pytest

        pytest.skip("benchmarks/ is not part of this installation")
    done = subprocess.run([sys.executable, str(script), "--check", str(ROOT / "docs" / "bad-inputs.md")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    every_class = [line for line in done.stdout.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(every_class) == 11  # the ten classes of the hardening issue and dataset bookkeeping, each tried
