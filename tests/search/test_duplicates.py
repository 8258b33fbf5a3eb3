"""find_duplicates and ImageMatchClustering against brute force over every pair."""

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from sklearn_imgpair import ImageMatchClustering, UnreadableImageWarning, find_duplicates

from conftest import make_tiny_classifier


@pytest.fixture(scope="module")
def classifier(image_pairs):
    X, y = image_pairs
    return make_tiny_classifier(max_epochs=3).fit(X, y)


@pytest.fixture(scope="module")
def images(image_pairs):
    return np.unique(image_pairs[0].ravel())


@pytest.fixture(scope="module")
def all_pairs(classifier, images):
    """Every unordered pair ``i < j`` and its match probability, by predict_proba."""
    index = np.array(list(itertools.combinations(range(len(images)), 2)))
    return index, classifier.predict_proba(images[index])[:, 1]


def _thresholds(all_pairs):
    # Quantiles of the probabilities: a few, some and many duplicates.
    return [float(np.quantile(all_pairs[1], q)) for q in (0.97, 0.85, 0.5)]


def test_find_duplicates_finds_exactly_the_pairs_above_the_threshold(
        classifier, images, all_pairs):
    index, probabilities = all_pairs
    for threshold in _thresholds(all_pairs):
        found = find_duplicates(images, classifier, threshold=threshold, chunk_size=7)
        expected = index[probabilities > threshold]
        assert list(found.columns) == ["Image1", "Image2", "probability"]
        got = {(a, b) for a, b in zip(found["Image1"], found["Image2"])}
        assert got == {(images[i], images[j]) for i, j in expected}
        assert len(got) == len(found)  # each unordered pair once, Image1 first in X
        above = np.sort(probabilities[probabilities > threshold])[::-1]
        # Up to float rounding of cosines near 1, which the calibrated atanh head amplifies.
        assert_allclose(found["probability"], above, atol=1e-4)
        assert (np.diff(found["probability"]) <= 0).all()


def test_find_duplicates_with_few_neighbours_finds_a_subset(classifier, images, all_pairs):
    threshold = _thresholds(all_pairs)[2]
    everything = find_duplicates(images, classifier, threshold=threshold)
    near = find_duplicates(images, classifier, threshold=threshold, n_neighbors=2)
    pairs = set(zip(everything["Image1"], everything["Image2"]))
    near_pairs = set(zip(near["Image1"], near["Image2"]))
    assert near_pairs < pairs and len(near_pairs) <= 2 * len(images)


def test_find_duplicates_uses_the_classifiers_threshold_and_no_self_pairs(classifier, images,
                                                                          all_pairs):
    index, probabilities = all_pairs
    repeated = np.concatenate([images, images[:5]])  # a path given twice is one image
    found = find_duplicates(repeated, classifier)
    assert len(found) == int((probabilities > classifier.threshold).sum())
    assert not (found["Image1"] == found["Image2"]).any()
    assert len(find_duplicates(images, classifier, threshold=1.0)) == 0
    assert len(find_duplicates(images, classifier, threshold=0.0)) == len(index)


def test_single_linkage_groups_are_the_connected_components(classifier, images, all_pairs):
    index, probabilities = all_pairs
    for threshold in _thresholds(all_pairs):
        edges = index[probabilities > threshold]
        graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])),
                           shape=(len(images), len(images)))
        _, expected = connected_components(graph, directed=False)
        labels = ImageMatchClustering(classifier, threshold=threshold).fit_predict(images)
        # The same partition, numbered in order of first appearance.
        assert_array_equal(labels[:, None] == labels, expected[:, None] == expected)
        _, first = np.unique(labels, return_index=True)
        assert_array_equal(labels[np.sort(first)], np.arange(labels.max() + 1))


def test_complete_linkage_groups_match_inside_and_refine_single_ones(classifier, images,
                                                                     all_pairs):
    index, probabilities = all_pairs
    probability = dict(zip(map(tuple, index), probabilities))
    threshold = _thresholds(all_pairs)[1]
    clustering = ImageMatchClustering(classifier, threshold=threshold, linkage="complete")
    complete = clustering.fit_predict(images)
    single = ImageMatchClustering(classifier, threshold=threshold).fit_predict(images)
    assert clustering.n_clusters_ == complete.max() + 1 > single.max() + 1
    for group in range(clustering.n_clusters_):
        members = np.flatnonzero(complete == group)
        assert all(probability[pair] > threshold for pair in itertools.combinations(members, 2))
        assert len(set(single[members])) == 1


def test_rows_of_one_path_share_a_group_and_unreadable_images_get_minus_one(
        tmp_path, classifier, images):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    X = [images[0], str(broken), images[1], images[0]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = ImageMatchClustering(classifier, on_error="warn").fit_predict(X)
    assert any(issubclass(w.category, UnreadableImageWarning) for w in caught)
    assert labels[1] == -1 and labels[0] == labels[3] == 0


def test_a_classifier_is_required(images):
    with pytest.raises(ValueError, match="fitted ImagePairClassifier is needed"):
        ImageMatchClustering().fit(images)
    with pytest.raises(ValueError, match="linkage"):
        ImageMatchClustering(linkage="ward").fit(images)


def test_a_column_name_seen_in_fit_is_kept(classifier, images):
    clustering = ImageMatchClustering(classifier).fit(pd.DataFrame({"image": images}))
    assert_array_equal(clustering.feature_names_in_, ["image"])
    assert clustering.n_features_in_ == 1
    assert_array_equal(clustering.labels_, ImageMatchClustering(classifier).fit_predict(images))
    assert not hasattr(clustering.fit(images), "feature_names_in_")


@pytest.mark.parametrize("linkage", ["single", "complete"])
def test_the_clustering_keeps_the_pairs_it_grouped_by(classifier, images, all_pairs, linkage):
    threshold = _thresholds(all_pairs)[1]
    clustering = ImageMatchClustering(classifier, threshold=threshold, linkage=linkage)
    clustering.fit(images)
    expected = find_duplicates(images, classifier, threshold=threshold)
    pd.testing.assert_frame_equal(clustering.duplicates_, expected)
