#!/usr/bin/env bash
# Packaging check: `python -m build` makes an sdist and, from that sdist, a wheel; the wheel installs
# (non-editable, no dependencies fetched) into a fresh venv and a smoke subset of the tests passes
# against the installed copy, run from outside the source tree.
#
# Usage: .ci/check_wheel.sh [PYTHON]   (default: .venv/bin/python, which must have `build`)
# The fresh venv reuses the test dependencies (numpy, sympy, pytest, ...) of PYTHON's environment
# through a .pth file instead of downloading them; the editable install living there is not
# activated by that path (.pth files inside it are not processed), which the script checks.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
PY=${1:-.venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== build sdist and wheel"
# isolated build (fetches setuptools>=77 from the package index); offline, fall back to the
# environment's own setuptools, which must then be >= 77
"$PY" -m build --outdir "$tmp/dist" . > "$tmp/build.log" 2>&1 \
    || "$PY" -m build --no-isolation --outdir "$tmp/dist" . >> "$tmp/build.log" 2>&1 \
    || { cat "$tmp/build.log"; exit 1; }
if grep -i "SetuptoolsDeprecationWarning\|license.*deprecat" "$tmp/build.log"; then
    echo "error: the build prints a setuptools deprecation warning (above)"; exit 1
fi
ls "$tmp/dist"
sdist=$(ls "$tmp"/dist/*.tar.gz) && wheel=$(ls "$tmp"/dist/*.whl)
version=$("$PY" -c "import ast,sys; t=open('linmultistep/__init__.py').read(); print([n.value.value for n in ast.parse(t).body if isinstance(n, ast.Assign) and getattr(n.targets[0], 'id', '') == '__version__'][0])")
case "$wheel" in *"linmultistep-$version-"*) ;; *) echo "error: wheel $wheel does not carry __version__ $version"; exit 1;; esac
tar -tzf "$sdist" > "$tmp/sdist.txt"; grep -q "linmultistep-$version/analysis/lmm.py" "$tmp/sdist.txt" || { echo "error: sdist lacks analysis/"; exit 1; }

echo "== install the wheel into a fresh venv"
python3 -m venv "$tmp/venv"
site=$("$tmp/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
"$PY" -c "import sys; print('\n'.join(p for p in sys.path if p.endswith('site-packages')))" > "$site/zz_reuse_test_deps.pth"
"$tmp/venv/bin/python" -m pip install -q --no-deps --no-index "$wheel"

echo "== smoke tests against the installed copy"
mkdir "$tmp/run" && cp -r tests "$tmp/run/tests" && cd "$tmp/run"
"$tmp/venv/bin/python" - "$site" "$version" <<'PY'
import sys
import linmultistep, linmultistep.analysis.lmm, linmultistep.backends
site, version = sys.argv[1], sys.argv[2]
assert linmultistep.__file__.startswith(site), f"imported {linmultistep.__file__}, not the installed wheel in {site}"
assert linmultistep.analysis.lmm.__file__.startswith(site) and linmultistep.__version__ == version
from importlib.metadata import metadata, version as dist_version
md = metadata("linmultistep")
assert dist_version("linmultistep") == version and md.get("License-Expression") == "MIT", dict(md)
print(f"installed linmultistep {version} from the wheel: {linmultistep.__file__}")
PY
"$tmp/venv/bin/linmultistep" --help > /dev/null

echo "== the whole test suite against the installed copy (non-editable install)"
# from the source tree (the tests read docs/, examples/, README.md), but importing the wheel:
# PYTHONSAFEPATH keeps the working directory off sys.path (also in the subprocesses the tests start),
# and conftest.py checks where linmultistep came from
cd "$root"
PYTHONSAFEPATH=1 LINMULTISTEP_EXPECT_INSTALLED="$site" HYPOTHESIS_PROFILE=ci "$tmp/venv/bin/python" -m pytest -q -n 2 \
    -p no:cacheprovider -p no:randomly
echo "== wheel and sdist OK ($(basename "$wheel"), $(basename "$sdist"))"
