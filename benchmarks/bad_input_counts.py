"""How many bad inputs the project's own suite tries, per class of docs/bad-inputs.md.

Collects the test suite (nothing runs) and counts the test cases marked ``bad_input(kind)``; a
hypothesis-driven case tries up to ``max_examples`` inputs (25 in the CI profile, 40 in dev).

    python benchmarks/bad_input_counts.py            # prints the table
    python benchmarks/bad_input_counts.py --check docs/bad-inputs.md   # exit 1 if the page's table differs
    python benchmarks/bad_input_counts.py --write docs/bad-inputs.md   # replace the page's table by this output
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def counts() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "counts.json"
        env = {**os.environ, "LINMULTISTEP_BAD_INPUT_COUNTS": str(out), "PYTHONWARNINGS": "ignore"}
        subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", str(ROOT / "tests")],
                       cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def table(c: dict) -> str:
    def order(kind: str) -> int:
        return int(kind.split()[0])

    rows = ["| class | test cases | of which hypothesis-driven |", "|---|---|---|"]
    for kind in sorted(c, key=order):
        total, hyp = c[kind]
        rows.append(f"| {kind} | {total} | {hyp} |")
    rows.append(f"| all | {sum(v[0] for v in c.values())} | {sum(v[1] for v in c.values())} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", type=Path, default=None, help="a page whose table must equal this output")
    parser.add_argument("--write", type=Path, default=None, help="a page whose table to replace by this output")
    args = parser.parse_args()
    text = table(counts())
    print(text)
    if args.write is not None:
        page = args.write.read_text()
        start = page.index("| class | test cases")
        end = page.index("\n\n", start)
        args.write.write_text(page[:start] + text + page[end:])
    if args.check is not None and text not in args.check.read_text():
        print(f"\n{args.check} does not contain this table: update it", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
