"""README.md's accuracy figures are the benchmark's own output, and the benchmark still measures them."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "readme_figures.json"


def _bench():
    spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "benchmarks" / "readme_figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_quotes_the_committed_benchmark_output():
    bench = _bench()
    data = json.loads(RESULTS.read_text())
    readme = (ROOT / "README.md").read_text()
    assert readme.count(bench.BEGIN) == 1 and readme.count(bench.END) == 1
    block = readme[readme.index(bench.BEGIN): readme.index(bench.END) + len(bench.END)]
    assert block == bench.render_block(data), "README figures drifted from benchmarks/results/readme_figures.json; " \
        "rerun `python benchmarks/readme_figures.py --readme`"
    # and every ratio in the table is one the benchmark recorded
    for sp, per in data["ddim_over_obelm"].items():
        assert f"| {sp}" in block and all(f"{v:.2f}" in block for v in per.values())


def test_readme_precision_paragraph_is_the_committed_benchmark_output():
    bench = _bench()
    data = json.loads(RESULTS.read_text())
    readme = (ROOT / "README.md").read_text()
    i, j = readme.index(bench.BEGIN_PRECISION), readme.index(bench.END_PRECISION) + len(bench.END_PRECISION)
    assert readme[i:j] == bench.render_precision(data), "README precision figures drifted; rerun " \
        "`python benchmarks/readme_figures.py --readme`"
    assert set(data["precision"]) == {"Gaussian toy", "random MLP"}


def test_no_stale_accuracy_claim_outside_the_block():
    readme = (ROOT / "README.md").read_text()
    assert "1.5–5×" not in readme and "about 1.5." not in readme
    assert "2–100×" not in readme and "1e-5…1e-3 in float32 and fails" not in readme


@pytest.mark.slow
def test_benchmark_still_measures_the_committed_numbers():
    """Re-run the (few-second) measurement: the committed file is what the code produces today."""
    data = json.loads(RESULTS.read_text())
    fresh = _bench().measure()
    fresh.pop("_tables")
    for sp, per in data["ddim_over_obelm"].items():
        for n, v in per.items():
            assert fresh["ddim_over_obelm"][sp][n] == pytest.approx(v, abs=0.011), (sp, n)
    for m, per in data["order"].items():
        for sp, v in per.items():
            assert fresh["order"][m][sp] == pytest.approx(v, abs=0.011), (m, sp)


@pytest.mark.slow
def test_precision_benchmark_still_measures_the_committed_numbers():
    pytest.importorskip("torch")
    data = json.loads(RESULTS.read_text())["precision"]
    fresh = _bench().measure_precision()
    for prob, per in data.items():
        for dt, modes in per.items():
            for mode, errs in modes.items():
                for old, new in zip(errs, fresh[prob][dt][mode]):
                    assert (old == 0) == (new == 0), (prob, dt, mode)
                    if old > 0:
                        assert 1 / 1.5 < new / old < 1.5, (prob, dt, mode, old, new)
