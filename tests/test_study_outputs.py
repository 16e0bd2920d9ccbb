"""Round trips, distribution measures, growth factors, plots (inspected as matplotlib objects), the report and the command."""

import json
import math
import re

import numpy as np
import pytest

from linmultistep import Grid, get_method
from linmultistep.analysis import plots, report
from linmultistep.analysis.problems import default_mixture
from linmultistep.analysis.study import (
    coefficients_along,
    inversion_growth,
    karras_sigmabar,
    make_grid,
    parse_method,
    run_study,
    sliced_wasserstein,
)

METHODS = ["ddim", "edict:p=0.93", "bdia:gamma=1", "obelm"]


@pytest.fixture(scope="module")
def small_study():
    return run_study(default_mixture(2), METHODS, [5, 10, 20, 40], ["trailing", "karras"], samples=64,
                     dtypes=("float64", "float32", "float16"))


def test_round_trip_is_exact_for_belm_and_edict_but_not_ddim(small_study):
    for n in small_study.steps:
        assert small_study.value("trailing", "ddim", n, "roundtrip:float64") > 1e-3  # approximate inversion
        for m in ("obelm", "bdia(gamma=1.0)", "edict(p=0.93)"):
            assert small_study.value("trailing", m, n, "roundtrip:float64") < 1e-11
            assert small_study.value("trailing", m, n, "roundtrip:float32") < 1e-3
            rt16 = small_study.value("trailing", m, n, "roundtrip:float16")
            assert rt16 > small_study.value("trailing", m, n, "roundtrip:float32")


def test_distribution_measures_are_consistent(small_study):
    for r in small_study.records:
        # SW2 with the same noise is bounded by the pathwise RMS error times sqrt(dim) (any coupling bound)
        assert r.sw <= r.error * math.sqrt(2) * (1 + 1e-9)
        assert r.nfe == r.steps * (2 if r.method.startswith("edict") else 1)
    n, sw = small_study.series("karras", "obelm", "sw")
    assert sw[-1] < sw[0] / 10


def test_sliced_wasserstein_on_known_cases():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((50, 1))
    assert sliced_wasserstein(a, a + 0.3) == pytest.approx(0.3)  # 1-D: W2 of a shift is the shift
    b = rng.standard_normal((50, 3))
    assert sliced_wasserstein(b, b[::-1]) == pytest.approx(0.0, abs=1e-15)  # order of points is irrelevant
    with pytest.raises(ValueError):
        sliced_wasserstein(b, b[:10])


def test_obelm_inversion_growth_telescopes_to_step_ratio_squared():
    grid = make_grid(25, "scaled_linear", "trailing")
    idx, g = inversion_growth(get_method("obelm"), grid)
    h = np.asarray(grid.h)
    np.testing.assert_allclose(g, (h[idx] / h[1]) ** 2, rtol=1e-12)  # prod_i h_{i+1}^2 / h_i^2
    idx, g = inversion_growth(get_method("ddim"), grid)
    assert np.all(g == 1)
    p = 0.9
    idx, g = inversion_growth(get_method("edict", p=p), grid)
    np.testing.assert_allclose(g, p ** (-2.0 * idx), rtol=1e-10)


def test_coefficients_along_grid_match_the_rule():
    grid = Grid.from_sigmabar(karras_sigmabar(12, 0.03, 14.6))
    c = coefficients_along(get_method("obelm"), grid)
    h = np.asarray(grid.h)
    i = c["i"]
    np.testing.assert_allclose(c["a2"], h[i] ** 2 / h[i + 1] ** 2)
    np.testing.assert_allclose(c["a1"] + c["a2"], 1.0)  # consistency: sum of a is 1
    np.testing.assert_allclose(c["b1"], -(h[i] + h[i + 1]) / h[i + 1])
    assert np.all(c["b0"] == 0) and np.all(c["b2"] == 0)


def test_grids():
    sb = karras_sigmabar(10, 0.03, 14.6)
    assert sb[0] == pytest.approx(0.03) and sb[-1] == pytest.approx(14.6) and np.all(np.diff(sb) > 0)
    g = make_grid(10, "linear", "uniform")
    np.testing.assert_allclose(np.diff(g.sigmabar), g.sigmabar[-1] / 10)
    assert make_grid(10, "squaredcos_cap_v2", "trailing").alpha[0] == 1.0
    with pytest.raises(ValueError, match="unknown spacing"):
        make_grid(10, spacing="cosine")


def test_parse_method():
    assert str(parse_method("bdia:gamma=0.5").spec) == "bdia(gamma=0.5)"
    assert str(parse_method("edict:p=0.9").spec) == "edict(p=0.9)"
    with pytest.raises(ValueError, match="key=value"):
        parse_method("bdia:0.5")


def _lines(ax):
    return {line.get_label(): line for line in ax.get_lines()}


def test_error_plot_axes_series_and_reference_slopes(small_study):
    fig = plots.error_vs_steps(small_study)
    axes = fig.get_axes()
    assert len(axes) == 2
    for ax, sp in zip(axes, small_study.spacings):
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert ax.get_xlabel() == "number of steps N"
        assert sp in ax.get_title()
        lines = _lines(ax)
        assert set(small_study.methods) <= set(lines)
        for m in small_study.methods:
            x, y = lines[m].get_data()
            n, e = small_study.series(sp, m)
            np.testing.assert_array_equal(x, n)
            np.testing.assert_array_equal(y, e)
        for p in (1, 2):
            x, y = lines[f"slope -{p} (reference)"].get_data()
            slope = np.diff(np.log(y)) / np.diff(np.log(x))
            np.testing.assert_allclose(slope, -p)
    assert "error" in axes[0].get_ylabel()
    nfe = plots.error_vs_steps(small_study, x="nfe").get_axes()[0]
    assert nfe.get_xlabel() == "network evaluations (NFE)"
    x, _ = _lines(nfe)["edict(p=0.93)"].get_data()
    np.testing.assert_array_equal(x, 2 * np.array(small_study.steps))


def test_roundtrip_plot_has_one_panel_per_dtype(small_study):
    fig = plots.roundtrip_vs_steps(small_study, "trailing")
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["float64", "float32", "float16"]
    assert axes[0].get_ylabel() == "relative round-trip error"
    for ax, dt in zip(axes, small_study.dtypes):
        assert ax.get_yscale() == "log"
        x, y = _lines(ax)["obelm"].get_data()
        np.testing.assert_array_equal(y, small_study.series("trailing", "obelm", f"roundtrip:{dt}")[1])


def test_roundtrip_plot_own_axes_bits_mode_and_distinct_failure_marks(small_study):
    fig = plots.roundtrip_vs_steps(small_study, "trailing")
    axes = fig.get_axes()
    assert len(axes) == 3 and all(ax.get_ylabel() == "relative round-trip error" for ax in axes)
    lims = [ax.get_ylim() for ax in axes]
    assert len(set(lims)) == 3  # each dtype has its own y axis
    f16 = axes[2]
    assert lims[0][0] < 1e-15 < 1e-6 < lims[2][0]  # float16 is not squashed down to float64 rounding levels
    lines = _lines(f16)
    # the bits mode of the 2-step BELMs is drawn (dashed, same colour as the method), and is exact in float16
    for m in ("obelm", "bdia(gamma=1.0)"):
        bits = lines[f"{m} bits"]
        assert bits.get_linestyle() == "--" and bits.get_color() == lines[m].get_color()
        assert f"{m} bits: exact (error 0), at the bottom edge" in lines
        np.testing.assert_array_equal(small_study.series("trailing", m, "roundtrip:float16/bits")[1], 0.0)
    assert "ddim bits" not in lines and "edict(p=0.93) bits" not in lines
    # integer ticks at the numbers of steps
    ticks = f16.get_xticks()
    np.testing.assert_array_equal(ticks, small_study.steps)
    fig.canvas.draw() if hasattr(fig.canvas, "draw") else None
    assert [t.get_text() for t in f16.get_xticklabels()] == [str(n) for n in small_study.steps]


def test_failure_marks_differ_between_methods():
    from linmultistep.analysis.study import Record, StudyResult

    recs = [Record("trailing", m, n, n, 1.0, 1.0, 0.0, 0.0, {"float16": math.inf if n == 20 else 1e-2})
            for m in ("edict(p=0.93)", "obelm") for n in (10, 20)]
    res = StudyResult("p", "s", 2, 8, 0, [10, 20], ["trailing"], ["edict(p=0.93)", "obelm"], ["float16"], recs, {})
    (ax,) = plots.roundtrip_vs_steps(res, "trailing").get_axes()
    lines = _lines(ax)
    a, b = lines["edict(p=0.93): failed (inf/NaN), at the top edge"], lines["obelm: failed (inf/NaN), at the top edge"]
    assert a.get_marker() != b.get_marker() and a.get_color() != b.get_color()
    assert a.get_color() == lines["edict(p=0.93)"].get_color()
    assert a.get_xdata().tolist() == [20] and a.get_ydata()[0] > 1e-2  # at the top


def test_coefficient_and_growth_plots():
    grid = make_grid(15, spacing="trailing")
    methods = [get_method("ddim"), get_method("obelm")]
    fig = plots.coefficients_plot(methods + [get_method("edict")], grid)
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["ddim", "obelm"]  # EDICT has no LM coefficients
    assert axes[1].get_xlabel().startswith("grid index")
    assert all(float(t).is_integer() for t in axes[1].get_xticks())  # grid indices are integers
    labels = set(_lines(axes[1]))
    assert {"$a_{i,1}$", "$a_{i,2}$", "$b_{i,1}$"} == labels
    np.testing.assert_allclose(_lines(axes[1])["$a_{i,2}$"].get_data()[1], coefficients_along(methods[1], grid)["a2"])
    fig = plots.growth_plot(methods, {"trailing": grid, "karras": make_grid(15, spacing="karras")})
    axes = fig.get_axes()
    assert len(axes) == 2 and all(ax.get_yscale() == "log" for ax in axes)
    np.testing.assert_allclose(_lines(axes[0])["obelm"].get_data()[1], inversion_growth(methods[1], grid)[1])


def test_save_writes_png_and_svg(small_study, tmp_path):
    files = plots.save(plots.distribution_vs_steps(small_study), tmp_path / "sw")
    assert [f.suffix for f in files] == [".png", ".svg"]
    assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in files[1].read_bytes()[:1000]


def test_report_tables(small_study):
    headers, rows = report.order_rows(small_study, min_steps=10)
    assert headers[2:] == ["trailing", "karras (smooth)"]
    assert [r[0] for r in rows] == small_study.methods
    p, se = small_study.order("karras", "obelm", 10)
    assert rows[3][3] == f"{p:.2f} ± {se:.2f}"
    _, ratios = report.ratio_rows(small_study)
    expected = small_study.value("karras", "ddim", 10) / small_study.value("karras", "obelm", 10)
    assert ratios[1] == ["karras", f"{expected:.2f}", ratios[1][2]]
    md = report.markdown_report(small_study, {"Error vs steps": "error_vs_steps.png"})
    assert "![Error vs steps](error_vs_steps.png)" in md and "| method |" in md


def test_study_command(tmp_path, capsys):
    from linmultistep.cli import main

    out = tmp_path / "study"
    code = main(["study", "--steps", "4", "8", "16", "--spacing", "karras", "trailing", "--methods", "ddim", "obelm",
                 "--samples", "16", "--dtypes", "float64", "float32", "--out", str(out), "--no-progress",
                 "--plot-steps", "8", "--fit-from", "4", "--no-samplers"])  # the comparison: test_study_samplers
    assert code == 0
    text = capsys.readouterr().out
    assert "fitted order" in text and "error(DDIM) / error(O-BELM)" in text
    md = (out / "report.md").read_text()
    images = re.findall(r"^!\[.*\]\(([^()]+)\)$", md, flags=re.M)
    assert len(images) == 6
    for name in images:
        assert (out / name).is_file() and (out / name).with_suffix(".svg").is_file()
    data = json.loads((out / "results.json").read_text())
    assert len(data["records"]) == 2 * 2 * 3
    keys = {r["method"]: set(r["roundtrip"]) for r in data["records"]}
    assert keys["ddim"] == {"float64", "float32"}  # DDIM has no bits mode
    assert keys["obelm"] == {"float64", "float32", "float64/bits", "float32/bits"}


def test_study_command_rejects_bad_method(tmp_path, capsys):
    from linmultistep.cli import main

    assert main(["study", "--methods", "nosuch", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "nosuch" in capsys.readouterr().err
