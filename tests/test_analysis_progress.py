"""Slow analysis calls report progress on stderr when asked (tqdm), and stay silent when told to."""

from linmultistep.analysis.search import search_zero_stable


def test_search_progress_on_and_off(capsys):
    res = search_zero_stable(3, orders=[2], progress=True)  # two free parameters: the grid search
    err = capsys.readouterr().err
    assert res and "3-step BELM families" in err and "grid 3-step order 2" in err
    search_zero_stable(3, orders=[2], progress=False)
    assert capsys.readouterr().err == ""


def test_table1_progress_bar(capsys, monkeypatch):
    from linmultistep.analysis import table1 as t1

    # the rows themselves are tested in test_analysis_table1; here only the bar around them
    monkeypatch.setattr(t1, "_lm_row", lambda name, *a, **k: name)
    monkeypatch.setattr(t1, "_edict_row", lambda order: "EDICT(p)")
    rows = t1.table1(progress=True)
    assert rows == ["DDIM", "EDICT(p)", "BDIA(gamma)", "O-BELM"]
    assert "Table 1" in capsys.readouterr().err
    t1.table1(progress=False)
    assert capsys.readouterr().err == ""
