"""find_duplicates and ImageMatchClustering against brute force over every pair."""

import itertools
import os
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator

from sklearn_imgpair import (
    ImageEmbedder,
    ImageMatchClustering,
    ImageNeighbors,
    UnreadableImageWarning,
    find_duplicates,
)
from sklearn_imgpair._duplicates import COSINE_THRESHOLD

from conftest import TINY_IMAGE_SIZE, TINY_SWIN, make_tiny_classifier

TINY = dict(pretrained=False, image_size=TINY_IMAGE_SIZE, model_kwargs=dict(TINY_SWIN))


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


@pytest.fixture(scope="module")
def embedder():
    """An untrained embedder, as a pretrained backbone would be used: no fit, no labels."""
    return ImageEmbedder(**TINY, cache=False)


@pytest.fixture(scope="module")
def all_cosines(embedder, images):
    """Every unordered pair ``i < j`` and the cosine of its embeddings, by brute force."""
    vectors = clone(embedder).fit().transform(images).astype(np.float64)
    index = np.array(list(itertools.combinations(range(len(images)), 2)))
    return index, np.einsum("pd,pd->p", vectors[index[:, 0]], vectors[index[:, 1]])


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


def test_exactly_one_of_classifier_embedder_and_search_is_required(classifier, embedder,
                                                                   images):
    with pytest.raises(ValueError, match="ImageMatchClustering needs exactly one of .* got "
                                         "none"):
        ImageMatchClustering().fit(images)
    with pytest.raises(ValueError, match="find_duplicates needs exactly one of .* got "
                                         "classifier and embedder"):
        find_duplicates(images, classifier, embedder=embedder)
    search = ImageNeighbors(classifier=classifier).fit(images)
    with pytest.raises(ValueError, match="got embedder and search"):
        ImageMatchClustering(embedder=embedder, search=search).fit(images)
    with pytest.raises(ValueError, match="linkage"):
        ImageMatchClustering(classifier, linkage="ward").fit(images)


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


# ----------------------------------------------------------------------
# without a classifier: the cosine of an embedder's vectors
# ----------------------------------------------------------------------


def test_with_an_embedder_the_pairs_are_those_whose_cosine_exceeds_the_threshold(
        embedder, images, all_cosines):
    index, cosines = all_cosines
    for threshold in [*_thresholds(all_cosines), None]:
        found = find_duplicates(images, embedder=embedder, threshold=threshold)
        limit = COSINE_THRESHOLD if threshold is None else threshold
        expected = index[cosines > limit]
        assert list(found.columns) == ["Image1", "Image2", "similarity"]
        got = {(a, b) for a, b in zip(found["Image1"], found["Image2"])}
        assert got == {(images[i], images[j]) for i, j in expected}
        assert_allclose(found["similarity"], np.sort(cosines[cosines > limit])[::-1],
                        atol=1e-6)
    assert not hasattr(embedder, "module_")  # the caller's embedder is cloned, not fitted


def test_complete_linkage_on_cosines_groups_images_that_all_match(embedder, images,
                                                                  all_cosines):
    index, cosines = all_cosines
    cosine = dict(zip(map(tuple, index), cosines))
    threshold = _thresholds(all_cosines)[1]
    clustering = ImageMatchClustering(embedder=embedder, threshold=threshold,
                                      linkage="complete").fit(images)
    single = ImageMatchClustering(embedder=embedder, threshold=threshold).fit_predict(images)
    assert clustering.n_clusters_ > single.max() + 1
    for group in range(clustering.n_clusters_):
        members = np.flatnonzero(clustering.labels_ == group)
        assert all(cosine[pair] > threshold for pair in itertools.combinations(members, 2))
        assert len(set(single[members])) == 1
    assert list(clustering.duplicates_.columns) == ["Image1", "Image2", "similarity"]


# ----------------------------------------------------------------------
# a fitted search: its vectors, nothing embedded
# ----------------------------------------------------------------------


def _assert_same_pairs(found, expected):
    pd.testing.assert_frame_equal(found.drop(columns=found.columns[2]),
                                  expected.drop(columns=expected.columns[2]))
    assert found.columns[2] == expected.columns[2]
    assert_allclose(found.iloc[:, 2], expected.iloc[:, 2], atol=1e-5)


def test_a_saved_search_finds_the_classifiers_duplicates_without_embedding(
        tmp_path, classifier, images, all_pairs, decode_counts):
    threshold = _thresholds(all_pairs)[1]
    path = ImageNeighbors(classifier=classifier).fit(images).save(tmp_path / "search.safetensors")
    loaded = ImageNeighbors.load(path)
    decode_counts.clear()
    clustering = ImageMatchClustering(search=loaded, threshold=threshold).fit(loaded.gallery_)
    assert not decode_counts  # nothing read, nothing embedded
    expected = ImageMatchClustering(classifier, threshold=threshold).fit(images)
    assert_array_equal(clustering.labels_, expected.labels_)
    _assert_same_pairs(clustering.duplicates_, expected.duplicates_)
    # The search's own threshold is the default.
    _assert_same_pairs(find_duplicates(images, search=loaded), find_duplicates(images, classifier))


@pytest.mark.parametrize("algorithm, faiss_index", [("brute", "flat"), ("faiss", "flat"),
                                                    ("faiss", "ivf"), ("faiss", "hnsw")])
def test_a_subset_of_the_gallery_is_grouped_by_the_search_itself_never_copied(
        monkeypatch, classifier, images, algorithm, faiss_index):
    if algorithm == "faiss":
        pytest.importorskip("faiss")
    search = ImageNeighbors(classifier=classifier, algorithm=algorithm,
                            faiss_index=faiss_index).fit(images)
    before, index = search.kneighbors(n_neighbors=3), search._index
    monkeypatch.setattr(ImageNeighbors, "remove", lambda *args, **kwargs: pytest.fail("copied"))
    subset = images[::2][::-1]  # another order, and a path twice
    X = np.concatenate([subset, subset[:1]])
    clustering = ImageMatchClustering(search=search, threshold=0.3).fit(X)
    expected = ImageMatchClustering(classifier, threshold=0.3).fit(X)
    assert_array_equal(clustering.labels_, expected.labels_)
    assert clustering.neighbors_ is search
    found = find_duplicates(X, search=search, threshold=0.3)
    assert set(found["Image1"]) | set(found["Image2"]) <= set(subset)
    assert_allclose(np.sort(found["probability"]),
                    np.sort(find_duplicates(X, classifier, threshold=0.3)["probability"]),
                    atol=1e-5)
    # The caller's search is as it was, its index the same object.
    assert search.n_samples_fit_ == len(images) and search._index is index
    for got, expected in zip(search.kneighbors(n_neighbors=3), before):
        assert_array_equal(got, expected)


@pytest.mark.parametrize("linkage", ["single", "complete"])
def test_a_frozen_search_stays_fitted_through_clone(classifier, images, linkage):
    search = ImageNeighbors(classifier=classifier).fit(images)
    clustering = ImageMatchClustering(search=FrozenEstimator(search), threshold=0.3,
                                      linkage=linkage)
    fitted = clone(clustering).fit(images[:20])
    expected = ImageMatchClustering(search=search, threshold=0.3, linkage=linkage).fit(
        images[:20])
    assert_array_equal(fitted.labels_, expected.labels_)
    assert fitted.neighbors_ is search
    _assert_same_pairs(find_duplicates(images[:20], search=FrozenEstimator(search)),
                       find_duplicates(images[:20], search=search))
    # A plain search is cloned unfitted, as scikit-learn clones.
    with pytest.raises(NotFittedError):
        clone(ImageMatchClustering(search=search)).fit(images[:20])
    with pytest.raises(TypeError, match="FrozenEstimator of ImageEmbedder"):
        find_duplicates(images, search=FrozenEstimator(ImageEmbedder()))


def test_images_are_found_in_the_search_by_content_else_by_path(
        monkeypatch, tmp_path, embedder, images):
    folder = tmp_path / "photos"
    folder.mkdir()
    folder = folder.resolve()  # the working directory's own spelling, symbolic links resolved
    paths = [str(shutil.copy(images[i], folder / f"{i}.png")) for i in range(6)]
    search = ImageNeighbors(embedder).fit(paths)
    threshold = -1.0  # every pair, so that every image is seen
    expected = find_duplicates(paths[:4], search=search, threshold=threshold)
    monkeypatch.chdir(folder)
    # Relative paths of the same files: found by content, reported as the gallery holds them.
    relative = find_duplicates(["0.png", "1.png", "2.png", "3.png"], search=search,
                               threshold=threshold)
    _assert_same_pairs(relative, expected)
    # A file changed since it was embedded: found by its path string, its stored vector used.
    os.utime(paths[2], (1, 1))
    _assert_same_pairs(find_duplicates(paths[:4], search=search, threshold=threshold),
                       expected)
    with pytest.raises(ValueError, match=r"X\[2\] = '2.png' is not in the search's gallery"):
        find_duplicates(["0.png", "1.png", "2.png"], search=search)


def test_a_search_without_a_classifier_scores_by_cosine(embedder, images, all_cosines):
    threshold = _thresholds(all_cosines)[1]
    search = ImageNeighbors(embedder).fit(images)
    _assert_same_pairs(find_duplicates(images[3:], search=search, threshold=threshold),
                       find_duplicates(images[3:], embedder=embedder, threshold=threshold))


def test_an_image_missing_from_the_search_is_named(classifier, images):
    search = ImageNeighbors(classifier=classifier).fit(images[1:])
    X = [images[3], images[0], images[2]]
    with pytest.raises(ValueError, match=r"X\[1\] = '.*' is not in the search's gallery"):
        find_duplicates(X, search=search)


# ----------------------------------------------------------------------
# progress
# ----------------------------------------------------------------------


def test_verbose_shows_the_embedding_and_the_search(capsys, embedder, images):
    repeated = np.concatenate([images, images[:3]])
    find_duplicates(repeated, embedder=embedder, verbose=1)
    err = capsys.readouterr().err
    assert "Embedding: 100%" in err and f"{len(images)}/{len(images)}" in err
    assert "Searching: 100%" in err
    ImageMatchClustering(embedder=embedder, verbose=1).fit(images)
    assert f"{len(images)}/{len(images)}" in capsys.readouterr().err
    find_duplicates(repeated, embedder=embedder)
    ImageMatchClustering(embedder=embedder).fit(images)
    assert capsys.readouterr().err == ""


def test_a_probability_threshold_cannot_be_negative(classifier, images):
    with pytest.raises(ValueError, match="threshold is a match probability .* got -0.5"):
        find_duplicates(images, classifier, threshold=-0.5)
    with pytest.raises(ValueError, match="threshold"):
        find_duplicates(images, classifier, threshold=1.5)
