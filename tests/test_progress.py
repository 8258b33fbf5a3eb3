import sys

import pytest

from sklearn_imgpair._progress import progress_bar


def test_progress_bar_falls_back_to_percentages_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now fails
    with progress_bar(4, "Working") as bar:
        for _ in range(4):
            bar.update(1)
    err = capsys.readouterr().err
    assert "Working:  25%" in err and "Working: 100%" in err and err.endswith("\n")


@pytest.mark.parametrize("enabled", [False, None])  # None: only on a terminal; tests have none
def test_progress_bar_can_be_silent(enabled, capsys):
    with progress_bar(3, "Working", enabled=enabled) as bar:
        bar.update(3)
    assert bar.n == 3
    assert capsys.readouterr().err == ""
