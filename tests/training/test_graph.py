import numpy as np
from numpy.testing import assert_array_equal

from sklearn_imgpair._training.mining import match_components


def _same(components, i, j):
    return components.ravel()[i] == components.ravel()[j]


def test_chains_of_matches_form_one_component():
    pairs = np.array([["a", "b"], ["b", "c"], ["d", "e"]], dtype=object)
    components = match_components(pairs, [1, 1, 1])
    # a, b, c together; d, e together; the two groups apart.
    assert components[0, 0] == components[0, 1] == components[1, 1]
    assert components[2, 0] == components[2, 1]
    assert components[0, 0] != components[2, 0]


def test_non_matches_join_nothing_and_isolated_images_stand_alone():
    pairs = np.array([["a", "b"], ["b", "c"], ["c", "d"], ["x", "a"]], dtype=object)
    components = match_components(pairs, [1, 0, 1, 0])
    labels = dict(zip(pairs.ravel(), components.ravel()))
    assert labels["a"] == labels["b"]
    assert labels["c"] == labels["d"]
    assert labels["a"] != labels["c"]
    assert labels["x"] not in {labels["a"], labels["c"]}
    assert len(set(labels.values())) == 3


def test_labels_are_consecutive_in_order_of_first_appearance():
    pairs = np.array([["q", "r"], ["s", "q"], ["t", "u"]], dtype=object)
    components = match_components(pairs, [0, 1, 0])
    assert_array_equal(components, [[0, 1], [0, 0], [2, 3]])


def test_long_chain_in_any_order():
    rng = np.random.default_rng(0)
    chain = [(f"img{i}", f"img{i + 1}") for i in range(200)]
    pairs = np.array([chain[i] for i in rng.permutation(len(chain))], dtype=object)
    components = match_components(pairs, np.ones(len(pairs)))
    assert np.unique(components).tolist() == [0]
