import numpy as np
import pytest

from sklearn_imgpair._images.datasets import PairDataset
from sklearn_imgpair._training.mining import match_components
from sklearn_imgpair._training.split import IdentityValidSplit


def _identity_pairs(n_identities=20, n_views=4, seed=0):
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for identity in range(n_identities):
        for view in range(n_views - 1):
            rows.append((f"id{identity}_v{view}", f"id{identity}_v{view + 1}"))
            labels.append(1.0)
    for _ in range(len(rows)):
        a, b = rng.choice(n_identities, 2, replace=False)
        rows.append((f"id{a}_v{rng.integers(n_views)}", f"id{b}_v{rng.integers(n_views)}"))
        labels.append(0.0)
    return np.array(rows, dtype=object), np.array(labels, dtype=np.float32)


def test_validation_holds_out_whole_identities():
    pairs, y = _identity_pairs()
    dataset = PairDataset(pairs, y, image_size=8)
    train, valid = IdentityValidSplit(0.2, random_state=0)(dataset, y)
    components = match_components(pairs, y > 0.5)
    train_ids = set(components[train.indices].ravel())
    valid_positive_ids = set(components[valid.indices][y[valid.indices] == 1].ravel())
    assert valid_positive_ids and not valid_positive_ids & train_ids
    assert len(train.indices) + len(valid.indices) == len(y)
    assert set(y[valid.indices]) == {0.0, 1.0}
    assert 0.2 <= len(valid.indices) / len(y) <= 0.5


def test_split_is_seeded():
    pairs, y = _identity_pairs()
    dataset = PairDataset(pairs, y, image_size=8)
    first = IdentityValidSplit(0.2, random_state=3)(dataset, y)[1].indices
    second = IdentityValidSplit(0.2, random_state=3)(dataset, y)[1].indices
    np.testing.assert_array_equal(first, second)


def test_falls_back_to_a_pair_split_when_one_identity_spans_everything():
    pairs = np.array([[f"a{i}", f"a{i + 1}"] for i in range(10)]
                     + [[f"a{i}", f"b{i}"] for i in range(10)], dtype=object)
    y = np.array([1.0] * 10 + [0.0] * 10, dtype=np.float32)
    with pytest.warns(UserWarning, match="Cannot hold out whole identities"):
        dataset = PairDataset(pairs, y, image_size=8)
        train, valid = IdentityValidSplit(0.2, random_state=0)(dataset, y)
    assert len(valid.indices) == 4 and set(y[valid.indices]) == {0.0, 1.0}
