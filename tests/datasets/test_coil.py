"""Real photos: COIL-100 objects from many views (skipped where ../shared/data is absent)."""

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from conftest import COIL_DIR, make_tiny_classifier

pytestmark = pytest.mark.skipif(
    not (COIL_DIR / "train.csv").is_file(),
    reason=f"COIL-100 pairs not found at {COIL_DIR} (shared data is optional)",
)


def _read(name, n_rows):
    frame = pd.read_csv(COIL_DIR / name).head(n_rows)
    X = frame[["Image1", "Image2"]].map(lambda p: str(COIL_DIR / p)).to_numpy(dtype=object)
    return X, frame["Label"].to_numpy()


@pytest.mark.slow
def test_learns_real_objects_beyond_chance():
    X_train, y_train = _read("train.csv", 400)
    X_test, y_test = _read("test.csv", 200)
    clf = make_tiny_classifier(max_epochs=4, batch_size=32, train_split=None)
    clf.fit(X_train, y_train)
    proba = clf.predict_proba(X_test)[:, 1]
    assert roc_auc_score(y_test, proba) > 0.7
    assert 0.1 < (proba > 0.5).mean() < 0.9
