import os

import numpy as np

from sklearn_imgpair import ImagePairClassifier
from sklearn_imgpair.__main__ import main

from conftest import go_offline


def test_demo_runs_offline_and_saves_a_working_model(tmp_path, capsys, monkeypatch):
    go_offline(monkeypatch)
    assert main(["demo", "--output", str(tmp_path), "--time-limit", "6"]) == 0
    out = capsys.readouterr().out
    assert "ROC AUC" in out and "P(match)" in out
    assert "embeddings of the test pairs' first images: shape (" in out
    model_path = tmp_path / "model.safetensors"
    assert f"ImagePairClassifier.load({str(model_path)!r})" in out
    clf = ImagePairClassifier.load(model_path)
    images = sorted(os.listdir(tmp_path / "images"))
    pair = np.array([[str(tmp_path / "images" / images[0])] * 2], dtype=object)
    assert clf.predict_proba(pair).shape == (1, 2)
