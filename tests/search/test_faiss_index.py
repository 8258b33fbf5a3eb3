"""FaissIndex: flat search equals scikit-learn's, IVF and HNSW recall, round trip, errors."""

import sys

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.neighbors import NearestNeighbors

from sklearn_imgpair._search.faiss_index import FaissIndex
from sklearn_imgpair._search.faiss_settings import faiss_threads, import_faiss, resolve_params

faiss = pytest.importorskip("faiss")


def _unit(X):
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def random_vectors():
    """A gallery of 300 and 40 queries, random unit float32 vectors (no ties)."""
    rng = np.random.default_rng(0)
    return _unit(rng.standard_normal((300, 16))), _unit(rng.standard_normal((40, 16)))


@pytest.fixture(scope="module")
def clustered_vectors():
    """3,000 gallery vectors and 300 queries with the structure of image embeddings.

    30 categories (random unit centres); 600 identities, each a centre plus
    noise; 5 gallery views per identity and one more view per query, each the
    identity plus noise (views of an identity have cosine about 0.8, of a
    category about 0.4).
    """
    rng = np.random.default_rng(0)
    d, n_identities = 32, 600
    categories = _unit(rng.standard_normal((30, d)))
    identities = _unit(categories[rng.integers(0, 30, n_identities)]
                       + rng.standard_normal((n_identities, d)) / np.sqrt(d))
    gallery = _unit(identities[np.arange(3000) % n_identities]
                    + 0.5 * rng.standard_normal((3000, d)) / np.sqrt(d))
    queries = _unit(identities[rng.integers(0, n_identities, 300)]
                    + 0.5 * rng.standard_normal((300, d)) / np.sqrt(d))
    return gallery, queries


@pytest.fixture(scope="module")
def clustered_indexes(clustered_vectors):
    """The three kinds of index over the clustered gallery, default params (not mutated)."""
    gallery, _ = clustered_vectors
    return {kind: FaissIndex(gallery, index=kind, random_state=0)
            for kind in ("flat", "ivf", "hnsw")}


def _recall(found, exact):
    return np.mean([len(np.intersect1d(a, b)) / len(b) for a, b in zip(found, exact)])


@pytest.mark.parametrize("n_neighbors", [1, 5])
def test_flat_kneighbors_equal_sklearn(random_vectors, n_neighbors):
    gallery, queries = random_vectors
    distances, indices = FaissIndex(gallery).kneighbors(queries, n_neighbors)
    expected_distances, expected = NearestNeighbors(
        metric="cosine", algorithm="brute").fit(gallery).kneighbors(queries, n_neighbors)
    assert distances.dtype == np.float32 and indices.dtype == np.int64
    assert_array_equal(indices, expected)
    assert_allclose(distances, expected_distances, atol=1e-6)


@pytest.mark.parametrize("n_neighbors", [1, 5])
def test_flat_exclude_self_equals_sklearn_on_its_gallery(random_vectors, n_neighbors):
    gallery, _ = random_vectors
    distances, indices = FaissIndex(gallery).kneighbors(gallery, n_neighbors,
                                                        exclude_self=True)
    expected_distances, expected = NearestNeighbors(
        metric="cosine", algorithm="brute").fit(gallery).kneighbors(None, n_neighbors)
    assert_array_equal(indices, expected)
    assert_allclose(distances, expected_distances, atol=1e-6)


def test_equal_distances_are_ordered_by_index(random_vectors):
    # Each vector three times: rows 3j, 3j+1, 3j+2 are the same vector.
    gallery = np.repeat(random_vectors[0][:30], 3, axis=0)
    index = FaissIndex(gallery)
    _, indices = index.kneighbors(gallery, 2)
    # Three rows tie at distance 0 and only two fit: the two smallest indices.
    assert_array_equal(indices, np.repeat(np.arange(0, 90, 3), 3)[:, None] + [0, 1])
    distances, indices = index.kneighbors(gallery, 4, exclude_self=True)
    for row in (0, 1, 2):
        assert_array_equal(indices[row, :2], [i for i in (0, 1, 2) if i != row])
    assert_allclose(distances[:, :2], 0, atol=1e-6)
    assert (np.diff(distances, axis=1) >= 0).all()
    # The next vector's three copies follow in index order.
    assert np.all(np.diff(indices[:, 2:]) == 1)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_reach_recall_095_with_defaults(clustered_vectors,
                                                            clustered_indexes, kind):
    _, queries = clustered_vectors
    _, exact = clustered_indexes["flat"].kneighbors(queries, 10)
    distances, indices = clustered_indexes[kind].kneighbors(queries, 10)
    assert _recall(indices, exact) >= 0.95
    assert (np.diff(distances, axis=1) >= 0).all()


def test_ivf_is_seeded_by_random_state(clustered_vectors):
    gallery, queries = clustered_vectors
    params = {"n_lists": 40, "n_probe": 2}
    first, second = (FaissIndex(gallery, index="ivf", params=params, random_state=3)
                     .kneighbors(queries, 10)[1] for _ in range(2))
    assert_array_equal(first, second)


@pytest.mark.parametrize("exclude_self", [False, True])
def test_flat_radius_neighbors_equal_sklearn(random_vectors, exclude_self):
    gallery, queries = random_vectors
    queries = gallery if exclude_self else queries
    distances, indices = FaissIndex(gallery).radius_neighbors(queries, 0.7,
                                                              exclude_self=exclude_self)
    nn = NearestNeighbors(metric="cosine", algorithm="brute").fit(gallery)
    expected_distances, expected = nn.radius_neighbors(
        None if exclude_self else queries, 0.7, sort_results=True)
    assert distances.dtype == object and len(indices) == len(queries)
    assert sum(map(len, expected)) > len(queries)  # several neighbours per query
    for row in range(len(queries)):
        assert_array_equal(indices[row], expected[row])
        assert_allclose(distances[row], expected_distances[row], atol=1e-6)
        assert indices[row].dtype == np.int64 and distances[row].dtype == np.float32


def test_radius_includes_a_neighbour_exactly_at_the_radius():
    gallery = np.eye(3, dtype=np.float32)
    distances, indices = FaissIndex(gallery).radius_neighbors(gallery[:1], 1.0)
    assert_array_equal(indices[0], [0, 1, 2])
    assert_allclose(distances[0], [0, 1, 1])
    assert_array_equal(FaissIndex(gallery).radius_neighbors(gallery[:1], 0.5)[1][0], [0])


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_radius_neighbors_are_a_sorted_part_of_the_exact(
        clustered_vectors, clustered_indexes, kind):
    _, queries = clustered_vectors
    _, exact = clustered_indexes["flat"].radius_neighbors(queries, 0.3)
    distances, indices = clustered_indexes[kind].radius_neighbors(queries, 0.3)
    assert sum(map(len, indices)) >= 0.9 * sum(map(len, exact))
    for row in range(len(queries)):
        assert np.isin(indices[row], exact[row]).all()
        assert (np.diff(distances[row]) >= 0).all() and (distances[row] <= 0.3).all()


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_bytes_round_trip_gives_identical_results(clustered_vectors, clustered_indexes, kind):
    gallery, queries = clustered_vectors
    index = clustered_indexes[kind]
    data = index.to_bytes()
    assert data.dtype == np.uint8 and data.ndim == 1
    for stored in (data, data.tobytes()):
        loaded = FaissIndex.from_bytes(stored, index=kind, params=None)
        assert loaded.params == index.params and len(loaded) == len(gallery)
        for result, expected in zip(loaded.kneighbors(queries, 10),
                                    index.kneighbors(queries, 10)):
            assert_array_equal(result, expected)
        result, expected = (i.radius_neighbors(queries[:20], 0.4)[1] for i in (loaded, index))
        for row in range(20):
            assert_array_equal(result[row], expected[row])


def test_from_bytes_applies_search_params(clustered_vectors):
    gallery, _ = clustered_vectors
    data = FaissIndex(gallery, index="ivf", params={"n_lists": 40}).to_bytes()
    loaded = FaissIndex.from_bytes(data, index="ivf", params={"n_probe": 3})
    assert loaded.params == {"n_lists": 40, "n_probe": 3}
    assert loaded.faiss_index.nprobe == 3


def test_from_bytes_rejects_another_kind_or_structure(random_vectors):
    gallery, _ = random_vectors
    data = FaissIndex(gallery, index="hnsw", params={"m": 8}).to_bytes()
    with pytest.raises(ValueError, match="IndexHNSWFlat.*not the IndexFlatIP"):
        FaissIndex.from_bytes(data, index="flat", params=None)
    with pytest.raises(ValueError, match="'m' = 16 does not match .* m = 8"):
        FaissIndex.from_bytes(data, index="hnsw", params={"m": 16})
    with pytest.raises(ValueError, match="not a serialized FAISS index"):
        FaissIndex.from_bytes(np.zeros(64, dtype=np.uint8), index="flat")


@pytest.mark.parametrize("kind, params, error, match", [
    ("ivf", {"n_list": 4}, ValueError,
     r"Unknown FAISS parameter\(s\) \['n_list'\] for index='ivf'; allowed: "
     r"\['n_lists', 'n_probe'\]"),
    ("flat", {"m": 4}, ValueError, r"\['m'\] for index='flat'; allowed: none"),
    ("hnsw", {"ef_search": 0}, ValueError, "'ef_search' must be >= 1; got 0"),
    ("hnsw", {"m": 8.0}, TypeError, "'m' must be an int; got float 8.0"),
    ("ivf", {"n_lists": 301}, ValueError, r"'n_lists' must be at most the gallery size \(300\)"),
    ("annoy", None, ValueError, r"index must be one of \['flat', 'hnsw', 'ivf'\]; got 'annoy'"),
])
def test_bad_params_raise(random_vectors, kind, params, error, match):
    with pytest.raises(error, match=match):
        FaissIndex(random_vectors[0], index=kind, params=params)


def test_default_params():
    assert resolve_params("ivf", None, 1_000_000) == {"n_lists": 4000, "n_probe": 128}
    # Fewer lists than 4 * sqrt(n) on small galleries: at least 39 rows per list.
    assert resolve_params("ivf", None, 10_000) == {"n_lists": 256, "n_probe": 32}
    assert resolve_params("ivf", None, 5) == {"n_lists": 1, "n_probe": 1}
    # n_probe is at most n_lists.
    assert resolve_params("ivf", {"n_lists": 4, "n_probe": 10}, 100)["n_probe"] == 4
    assert resolve_params("hnsw", {"m": 16}, 10) == {"m": 16, "ef_construction": 200,
                                                     "ef_search": 128}


def test_kneighbors_checks_its_arguments(random_vectors):
    gallery, queries = random_vectors
    index = FaissIndex(gallery)
    with pytest.raises(ValueError, match=r"n_neighbors <= 299 \(the gallery size minus one"):
        index.kneighbors(gallery, 300, exclude_self=True)
    with pytest.raises(TypeError, match="'n_neighbors' must be an int; got float 2.0"):
        index.kneighbors(queries, 2.0)
    with pytest.raises(ValueError, match="queries have 8 features, but the index holds "
                                         "vectors of 16"):
        index.kneighbors(queries[:, :8], 3)
    with pytest.raises(ValueError, match=r"gallery rows as queries \(rows 290 to 329 of 300"):
        index.kneighbors(queries, 3, exclude_self=True, first_row=290)
    with pytest.raises(ValueError, match=r"rows -1 to 38 of 300"):
        index.radius_neighbors(queries[:40], 0.5, exclude_self=True, first_row=-1)
    with pytest.raises(ValueError, match="radius must be a non-negative"):
        index.radius_neighbors(queries, -0.1)
    with pytest.raises(ValueError, match="embeddings must be a 2-D array"):
        FaissIndex(gallery[0])
    assert index.kneighbors(queries[:0], 3)[1].shape == (0, 3)


def test_too_few_neighbours_found_raise_runtime_error(random_vectors):
    # 30 lists of about 10 vectors, one list searched: fewer than 50 candidates.
    index = FaissIndex(random_vectors[0], index="ivf", params={"n_lists": 30, "n_probe": 1},
                       random_state=0)
    with pytest.raises(RuntimeError, match=r"fewer than 50 neighbours .* raise 'n_probe' "
                                           r"in the FAISS parameters \(now 1\)"):
        index.kneighbors(random_vectors[1], 50)


def test_missing_faiss_says_how_to_install(monkeypatch, random_vectors):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    match = (r"algorithm='faiss' needs the faiss package: pip install "
             r"'sklearn-imgpair\[faiss\]' \(or faiss-cpu\)")
    with pytest.raises(ImportError, match=match):
        import_faiss()
    with pytest.raises(ImportError, match=match):
        FaissIndex(random_vectors[0])


def test_faiss_threads_follow_torch_and_are_restored(monkeypatch):
    # torch's count is faked: in one process, torch and FAISS may share one
    # OpenMP runtime (then setting one sets the other).
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    previous = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(3)
        with faiss_threads(faiss):
            assert faiss.omp_get_max_threads() == 1
        assert faiss.omp_get_max_threads() == 3
    finally:
        faiss.omp_set_num_threads(previous)


def test_ivf_on_a_tiny_gallery_uses_one_list_without_warning(random_vectors, capfd):
    index = FaissIndex(random_vectors[0][:30], index="ivf")
    assert index.params == {"n_lists": 1, "n_probe": 1}
    assert "WARNING" not in capfd.readouterr().err  # FAISS's k-means warns on stderr
    _, indices = index.kneighbors(random_vectors[0][:30], 30)
    assert_array_equal(np.sort(indices, axis=1), np.tile(np.arange(30), (30, 1)))
