"""Parameter counts of the diffusers binding's largest functions at git revisions (issue 25 item 4).

Counted from the source with ``ast`` (every positional, keyword-only, ``*args`` and ``**options`` parameter
counts one), so no import is needed. Usage: ``python benchmarks/pipeline_parameter_counts.py REV [REV ...]``
(default HEAD), e.g. ``8605bda HEAD`` for before / after the settings grouping.
"""
import ast
import subprocess
import sys

FILES = ["pipeline", "generation", "flow_pipeline", "dataset"]


def counts(rev: str) -> list:
    rows = []
    for f in FILES:
        src = subprocess.run(["git", "show", f"{rev}:backends/diffusers/{f}.py"], capture_output=True, text=True,
                             check=True).stdout
        for node in ast.parse(src).body:
            if isinstance(node, ast.FunctionDef):
                a = node.args
                n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)
                rows.append((n, f"{f}.{node.name}"))
    return sorted(rows, reverse=True)


for rev in sys.argv[1:] or ["HEAD"]:
    print(f"{rev}:")
    for n, name in counts(rev)[:10]:
        print(f"{n:4d}  {name}")
for rev in sys.argv[1:] or ["HEAD"]:
    print(f"{rev}:")
    for n, name in counts(rev)[:10]:
        print(f"{n:4d}  {name}")
files = ["pipeline", "generation", "flow_pipeline", "dataset"]
rows = []
for f in files:
    src = subprocess.run(["git", "show", f"{rev}:backends/diffusers/{f}.py"], capture_output=True, text=True).stdout
    for node in ast.parse(src).body:
        if isinstance(node, ast.FunctionDef):
            a = node.args
            n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)
            rows.append((n, f"{f}.{node.name}"))
for n, name in sorted(rows, reverse=True)[:10]:
    print(f"{n:3d} {name}")
