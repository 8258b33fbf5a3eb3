"""ImageNeighbors: scikit-learn's NearestNeighbors conventions on image paths."""

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.neighbors import NearestNeighbors

from sklearn_imgpair import ImageEmbedder, ImageNeighbors, UnreadableImageWarning
from sklearn_imgpair._io.container import read_container, write_container
from sklearn_imgpair._persistence.neighbors_file import NEIGHBORS_FORMAT_VERSION
from sklearn_imgpair._search import vector_index
from sklearn_imgpair._search.vector_index import BruteForceIndex, search_readable

from conftest import TINY_IMAGE_SIZE, TINY_SWIN, make_tiny_classifier

TINY = dict(pretrained=False, image_size=TINY_IMAGE_SIZE, model_kwargs=dict(TINY_SWIN))


@pytest.fixture(scope="module")
def gallery(image_pairs):
    """The distinct images of the synthetic pairs, in a fixed order."""
    return np.unique(image_pairs[0].ravel())


@pytest.fixture(scope="module")
def embedder():
    return ImageEmbedder(**TINY, cache=False).fit()


@pytest.fixture(scope="module")
def vectors(embedder, gallery):
    return embedder.transform(gallery)


@pytest.fixture(scope="module")
def classifier(image_pairs):
    X, y = image_pairs
    return make_tiny_classifier(max_epochs=2).fit(X, y)


@pytest.fixture(scope="module")
def fitted(embedder, gallery):
    return ImageNeighbors(embedder, n_neighbors=4).fit(gallery)


@pytest.mark.parametrize("chunk_size", [None, 1, 5, 1000])
def test_kneighbors_equals_scikit_learn_brute_cosine(embedder, gallery, vectors, chunk_size):
    search = ImageNeighbors(embedder, n_neighbors=4, chunk_size=chunk_size).fit(gallery)
    reference = NearestNeighbors(n_neighbors=4, metric="cosine", algorithm="brute").fit(vectors)

    distances, indices = search.kneighbors(gallery[:9])
    expected_distances, expected_indices = reference.kneighbors(vectors[:9])
    assert_array_equal(indices, expected_indices)
    assert_allclose(distances, expected_distances, atol=1e-6)

    # X=None: the gallery against itself, each image left out of its own list.
    distances, indices = search.kneighbors()
    expected_distances, expected_indices = reference.kneighbors()
    assert_array_equal(indices, expected_indices)
    assert_allclose(distances, expected_distances, atol=1e-6)
    assert not (indices == np.arange(len(gallery))[:, None]).any()

    assert_array_equal(search.kneighbors(gallery[:3], n_neighbors=2, return_distance=False),
                       reference.kneighbors(vectors[:3], 2, return_distance=False))


def test_radius_neighbors_and_graphs_equal_scikit_learn(fitted, vectors, gallery):
    radius = float(np.quantile(fitted.kneighbors()[0][:, -1], 0.5))
    reference = NearestNeighbors(radius=radius, metric="cosine", algorithm="brute").fit(vectors)
    for X, Q in ((gallery[:7], vectors[:7]), (None, None)):
        distances, indices = fitted.radius_neighbors(X, radius=radius)
        expected_distances, expected_indices = reference.radius_neighbors(Q, sort_results=True)
        assert sum(len(row) for row in indices) > 0
        for got, expected in zip(indices, expected_indices):
            assert_array_equal(got, expected)
        for got, expected in zip(distances, expected_distances):
            assert_allclose(got, expected, atol=1e-6)
        assert_allclose(fitted.radius_neighbors_graph(X, radius, mode="distance").toarray(),
                        reference.radius_neighbors_graph(Q, mode="distance").toarray(),
                        atol=1e-6)
    knn = NearestNeighbors(n_neighbors=3, metric="cosine", algorithm="brute").fit(vectors)
    for mode in ("connectivity", "distance"):
        graph = fitted.kneighbors_graph(gallery[:5], n_neighbors=3, mode=mode)
        assert graph.format == "csr" and graph.shape == (5, len(gallery))
        assert_allclose(graph.toarray(), knn.kneighbors_graph(vectors[:5], mode=mode).toarray(),
                        atol=1e-6)
    with pytest.raises(ValueError, match="Unsupported mode"):
        fitted.kneighbors_graph(mode="similarity")


def test_ties_are_broken_by_the_smaller_gallery_index(tmp_path, gallery, embedder):
    # Copies of one image under other names give identical vectors: equal distances.
    copies = [shutil.copy(gallery[0], tmp_path / f"copy{i}.png") for i in range(4)]
    images = np.array([gallery[5], *map(str, copies), gallery[7], gallery[0]], dtype=object)
    search = ImageNeighbors(embedder, chunk_size=2).fit(images)
    distances, indices = search.kneighbors([gallery[0]], n_neighbors=5)
    assert_array_equal(indices[0], [1, 2, 3, 4, 6])
    assert_allclose(distances[0], 0.0, atol=1e-6)
    # Left out of its own list, each copy sees the others in index order.
    assert_array_equal(search.kneighbors(n_neighbors=4, return_distance=False)[2], [1, 3, 4, 6])


def test_kneighbors_proba_is_the_classifiers_predict_proba(classifier, gallery):
    search = ImageNeighbors(classifier=FrozenEstimator(classifier), n_neighbors=3).fit(gallery)
    probabilities, indices = search.kneighbors_proba(gallery[:6])
    pairs = np.column_stack([np.repeat(gallery[:6], 3), gallery[indices.ravel()]])
    expected = classifier.predict_proba(pairs)[:, 1].reshape(6, 3)
    # Cosines from distances (float64) and from embeddings (float32) differ in their last
    # bits, which the calibrated atanh head amplifies near cosine 1.
    assert_allclose(probabilities, expected, atol=1e-4)
    # Nearest first is most likely first: the head is increasing in the cosine.
    assert (np.diff(probabilities, axis=1) <= 1e-7).all()
    assert search.match_threshold_ == classifier.threshold
    # The classifier's network embeds: the same vectors as its own embedder.
    assert_allclose(search.embeddings_,
                    ImageEmbedder(classifier=classifier).fit().transform(gallery), atol=1e-6)


def test_kneighbors_proba_exists_only_with_a_classifier(fitted, classifier):
    assert not hasattr(fitted, "kneighbors_proba")
    assert not hasattr(ImageNeighbors(), "match_proba")
    assert hasattr(ImageNeighbors(classifier=classifier), "kneighbors_proba")
    with pytest.raises(ValueError, match="not both"):
        ImageNeighbors(ImageEmbedder(**TINY), classifier=classifier).fit(["a.png"])


def test_fit_embeds_each_distinct_gallery_image_once(decode_counts, gallery):
    counts = decode_counts
    images = np.concatenate([gallery[:10], gallery[:10][::-1], gallery[3:5]])
    search = ImageNeighbors(ImageEmbedder(**TINY, cache=False, num_workers=0)).fit(images)
    assert sorted(counts) == sorted(gallery[:10]) and set(counts.values()) == {1}
    # Every row stays in the gallery; a repeated path repeats its vector.
    assert search.n_samples_fit_ == len(images)
    assert_array_equal(search.embeddings_[10], search.embeddings_[9])


def test_clone_refits_the_same_search(fitted, gallery):
    unfitted = ImageEmbedder(**TINY)
    search = ImageNeighbors(unfitted).fit(gallery)
    assert not hasattr(unfitted, "module_")  # the parameter is cloned, not fitted
    refitted = clone(search).fit(gallery)
    assert_array_equal(refitted.kneighbors(return_distance=False),
                       fitted.kneighbors(n_neighbors=5, return_distance=False))


def test_save_and_load_keep_the_search_and_the_probabilities(tmp_path, classifier, gallery):
    search = ImageNeighbors(classifier=classifier, n_neighbors=3).fit(gallery)
    path = search.save(tmp_path / "search.safetensors")
    loaded = ImageNeighbors.load(path)
    assert_array_equal(loaded.gallery_, search.gallery_)
    assert loaded.match_threshold_ == search.match_threshold_
    probabilities, indices = search.kneighbors_proba(gallery[:4])
    loaded_probabilities, loaded_indices = loaded.kneighbors_proba(gallery[:4])
    assert_array_equal(loaded_indices, indices)
    assert_allclose(loaded_probabilities, probabilities, atol=1e-6)
    assert loaded.get_params()["classifier"] is None


def test_load_refuses_mismatched_embedding_dimensions(tmp_path, fitted):
    path = fitted.save(tmp_path / "search.safetensors")
    content, arrays = read_container(path, "ImageNeighbors", max_version=NEIGHBORS_FORMAT_VERSION)
    arrays["embeddings_"] = np.zeros((fitted.n_samples_fit_, fitted.embedding_dim_ + 1),
                                     dtype=np.float32)
    write_container(path, "ImageNeighbors", {k: v for k, v in content.items()
                                             if k != "estimator"}, arrays, format_version=2)
    with pytest.raises(ValueError, match="mismatched embeddings.*33"):
        ImageNeighbors.load(path)


def test_bad_input_is_refused_with_a_clear_error(fitted, gallery, embedder):
    with pytest.raises(ValueError, match="X is empty"):
        ImageNeighbors(embedder).fit([])
    with pytest.raises(ValueError, match=r"n_neighbors <= n_samples_fit, but n_neighbors = 99"):
        fitted.kneighbors(gallery[:2], n_neighbors=99)
    with pytest.raises(ValueError, match=r"n_samples_fit - 1 \(X=None"):
        fitted.kneighbors(n_neighbors=fitted.n_samples_fit_)
    with pytest.raises(ValueError, match="n_neighbors > 0"):
        fitted.kneighbors(n_neighbors=0)
    with pytest.raises(TypeError, match=r"X\[1\] must be an image path"):
        fitted.kneighbors([gallery[0], 3.5])
    with pytest.raises(NotFittedError):
        ImageNeighbors(embedder).kneighbors()


def test_an_unreadable_gallery_image_raises_naming_it_and_builds_nothing(tmp_path, gallery,
                                                                         embedder):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    search = ImageNeighbors(embedder)
    with pytest.raises(ValueError, match=r"X\[2\].*broken\.png"):
        search.fit([gallery[0], gallery[1], str(broken), gallery[2]])
    assert not hasattr(search, "gallery_")
    with pytest.raises(NotFittedError):
        search.kneighbors()


def test_on_error_warn_leaves_unreadable_images_out_of_the_gallery(tmp_path, gallery, embedder):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    images = [gallery[0], str(broken), gallery[1], gallery[2]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        search = ImageNeighbors(embedder, on_error="warn", n_neighbors=1).fit(images)
    unreadable = [w for w in caught if issubclass(w.category, UnreadableImageWarning)]
    assert len(unreadable) == 1
    assert "broken.png" in str(unreadable[0].message) and "left out of the gallery" in str(
        unreadable[0].message)
    assert_array_equal(unreadable[0].message.rows, [1])
    assert_array_equal(search.gallery_, [gallery[0], gallery[1], gallery[2]])
    # An unreadable query gets NaN distances and index -1, with a warning.
    with pytest.warns(UnreadableImageWarning):
        distances, indices = search.kneighbors([gallery[1], str(broken)])
    assert indices[0, 0] == 1 and indices[1, 0] == -1 and np.isnan(distances[1]).all()
    with pytest.raises(ValueError, match="None of the 1 gallery images"):
        ImageNeighbors(embedder, on_error="warn").fit([str(broken)])


def test_score_is_leave_one_out_recall_at_1_on_identity_labels(fitted, gallery, vectors):
    identities = np.array([path.rsplit("product", 1)[1][:3] for path in gallery])
    nearest = NearestNeighbors(n_neighbors=1, metric="cosine").fit(vectors).kneighbors()[1]
    expected = np.mean(identities[nearest[:, 0]] == identities)
    assert fitted.score(gallery, identities) == pytest.approx(expected)


@pytest.mark.parametrize("faiss_index", ["flat", "hnsw"])
def test_faiss_search_agrees_with_brute_force_and_travels_in_the_model_file(
        tmp_path, embedder, gallery, fitted, faiss_index):
    pytest.importorskip("faiss")
    search = ImageNeighbors(embedder, n_neighbors=4, algorithm="faiss",
                            faiss_index=faiss_index).fit(gallery)
    indices = search.kneighbors(gallery[:6], return_distance=False)
    assert_array_equal(indices, fitted.kneighbors(gallery[:6], return_distance=False))
    assert_array_equal(search.kneighbors(return_distance=False),
                       fitted.kneighbors(return_distance=False))
    loaded = ImageNeighbors.load(search.save(tmp_path / "faiss.safetensors"))
    assert type(loaded._index).__name__ == "FaissIndex"
    assert_array_equal(loaded.kneighbors(gallery[:6], return_distance=False), indices)


def test_many_copies_tie_in_index_order_whatever_the_chunk(tmp_path, gallery, embedder):
    # More copies of one image than the candidates re-ranked per query.
    vectors = embedder.transform(gallery[:3])
    copies = np.repeat(vectors[:1], 40, axis=0)
    index_rows = np.vstack([vectors[1:], copies])
    from sklearn_imgpair._search.vector_index import BruteForceIndex

    for chunk_size in (1, 7, None):
        search = BruteForceIndex(index_rows, chunk_size=chunk_size)
        distances, indices = search.kneighbors(vectors[:1], 3)
        assert_array_equal(indices[0], [2, 3, 4])
        assert (distances >= 0).all()
        own = search.kneighbors(index_rows, 3, exclude_self=True)[1]
        assert_array_equal(own[2], [3, 4, 5])
        assert_array_equal(own[41], [2, 3, 4])


def test_a_failed_fit_leaves_the_estimator_as_it_was(embedder, gallery, fitted):
    pytest.importorskip("faiss")
    search = ImageNeighbors(embedder, algorithm="faiss", faiss_params={"bogus": 1})
    with pytest.raises(ValueError, match="bogus"):
        search.fit(gallery)
    assert not hasattr(search, "gallery_")
    refit = clone(fitted).fit(gallery[:6])
    with pytest.raises(ValueError, match="bogus"):
        refit.set_params(algorithm="faiss", faiss_params={"bogus": 1}).fit(gallery[6:])
    assert_array_equal(refit.gallery_, gallery[:6])
    assert refit.kneighbors(gallery[:1], n_neighbors=1, return_distance=False)[0, 0] == 0


def test_wrappers_that_change_probabilities_are_refused(classifier, gallery, image_pairs):
    from sklearn.calibration import CalibratedClassifierCV

    calibrated = CalibratedClassifierCV(FrozenEstimator(classifier)).fit(*image_pairs)
    with pytest.raises(TypeError, match="CalibratedClassifierCV.*set_params\\(threshold"):
        ImageNeighbors(classifier=calibrated).fit(gallery)
    with pytest.raises(TypeError, match="ImagePairClassifier"):
        ImageEmbedder(classifier=calibrated).fit()


def test_in_memory_and_multi_image_galleries(tmp_path, embedder, gallery):
    from PIL import Image

    arrays = [np.asarray(Image.open(path).convert("RGB")) for path in gallery[:4]]
    search = ImageNeighbors(embedder, n_neighbors=1).fit(_object_column(arrays))
    # The caller's image, referred to (a read-only view), not copied.
    assert np.shares_memory(search.gallery_[2], arrays[2])
    assert search.kneighbors([gallery[2]], return_distance=False)[0, 0] == 2
    with pytest.raises(ValueError, match=r"gallery_\[0\] holds an image in memory"):
        search.save(tmp_path / "memory.safetensors")
    items = _object_column([(gallery[0], gallery[1]), gallery[2], (gallery[3], gallery[4])])
    search = ImageNeighbors(embedder, n_neighbors=1).fit(items)
    loaded = ImageNeighbors.load(search.save(tmp_path / "items.safetensors"))
    assert loaded.gallery_[0] == (gallery[0], gallery[1]) and loaded.gallery_[1] == gallery[2]
    assert_allclose(loaded.embeddings_, search.embeddings_)


def test_load_refuses_a_faiss_index_of_another_gallery(tmp_path, embedder, gallery):
    pytest.importorskip("faiss")
    small = ImageNeighbors(embedder, algorithm="faiss").fit(gallery[:5])
    large = ImageNeighbors(embedder, algorithm="faiss").fit(gallery[:9])
    _, small_arrays = read_container(small.save(tmp_path / "small.safetensors"),
                                     "ImageNeighbors", max_version=NEIGHBORS_FORMAT_VERSION)
    path = large.save(tmp_path / "large.safetensors")
    content, arrays = read_container(path, "ImageNeighbors", max_version=NEIGHBORS_FORMAT_VERSION)
    arrays["faiss_index"] = small_arrays["faiss_index"]
    write_container(path, "ImageNeighbors", {k: v for k, v in content.items()
                                             if k != "estimator"}, arrays, format_version=2)
    with pytest.raises(ValueError, match="FAISS index of 5 vectors"):
        ImageNeighbors.load(path)


def _object_column(items):
    column = np.empty(len(items), dtype=object)
    column[:] = items
    return column


def test_a_column_name_seen_in_fit_is_kept_and_required_of_queries(embedder, gallery):
    frame = pd.DataFrame({"image": gallery})
    search = ImageNeighbors(embedder, n_neighbors=2).fit(frame)
    assert_array_equal(search.feature_names_in_, ["image"])
    assert search.n_features_in_ == 1
    plain = ImageNeighbors(embedder, n_neighbors=2).fit(gallery)
    assert_array_equal(search.kneighbors(frame[:3])[1], plain.kneighbors(gallery[:3])[1])
    with pytest.raises(ValueError, match="feature names should match"):
        search.kneighbors(pd.DataFrame({"query": gallery[:3]}))
    # A refit on an array forgets the name.
    assert not hasattr(search.fit(gallery), "feature_names_in_")


def test_the_column_name_seen_in_fit_travels_in_the_model_file(tmp_path, embedder, gallery):
    frame = pd.DataFrame({"image": gallery[:5]})
    search = ImageNeighbors(embedder, n_neighbors=1).fit(frame)
    loaded = ImageNeighbors.load(search.save(tmp_path / "named.safetensors"))
    assert_array_equal(loaded.feature_names_in_, ["image"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded.kneighbors(frame.iloc[:2])
    with pytest.raises(ValueError, match="feature names"):
        loaded.kneighbors(pd.DataFrame({"other": gallery[:2]}))


def test_queries_go_to_the_index_as_slices_where_their_rows_are_contiguous(monkeypatch):
    vectors = np.random.RandomState(0).normal(size=(50, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = BruteForceIndex(vectors)
    kneighbors = index.kneighbors
    expected = kneighbors(vectors[[0, 1, 2, *range(5, 30), *range(31, 50)]], 3)
    monkeypatch.setattr(vector_index, "QUERY_BLOCK_BYTES", 10 * 4 * 8)  # 10 queries a block
    seen = []
    monkeypatch.setattr(index, "kneighbors",
                        lambda queries, k, **kwargs: seen.append(queries) or kneighbors(
                            queries, k, **kwargs))
    readable = np.ones(50, dtype=bool)
    readable[[3, 4, 30]] = False
    distances, indices = search_readable(index, vectors, readable, n_neighbors=3)
    assert_array_equal(indices[readable], expected[1])
    assert_array_equal(distances[readable], expected[0])
    assert (indices[~readable] == -1).all() and np.isnan(distances[~readable]).all()
    # Rows 0-12 and 22-32 hold unreadable rows (an index array, a copy); the others are views.
    assert [np.shares_memory(queries, vectors) for queries in seen] == [
        False, True, False, True, True]
    # The gallery against itself: every row must be readable, each block the rows from its first.
    with pytest.raises(ValueError, match=r"exclude_self=True .* rows \[3, 4, 30\] are not"):
        search_readable(index, vectors, readable, n_neighbors=3, exclude_self=True)
