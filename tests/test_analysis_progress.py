"""Slow analysis calls report progress on stderr when asked (tqdm), and stay silent when told to."""

from linmultistep.analysis.search import search_zero_stable


def test_search_progress_on_and_off(capsys):
    res = search_zero_stable(3, orders=[2], progress=True)  # two free parameters: the grid search
    err = capsys.readouterr().err
    assert res and "3-step BELM families" in err and "grid 3-step order 2" in err
    search_zero_stable(3, orders=[2], progress=False)
    assert capsys.readouterr().err == ""
