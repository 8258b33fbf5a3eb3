"""A search that grows and shrinks: partial_fit and remove equal a fit on what is left."""

import shutil

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from PIL import Image

from sklearn_imgpair import ImageEmbedder, ImageNeighbors, UnreadableImageWarning
from sklearn_imgpair._images.cells import public_cell
from sklearn_imgpair._images.lookup import find_cells
from sklearn_imgpair._images.validation import check_paths
from sklearn_imgpair._search.faiss_index import FaissIndex
from sklearn_imgpair._search.vector_index import BruteForceIndex

from conftest import TINY_IMAGE_SIZE, TINY_SWIN

TINY = dict(pretrained=False, image_size=TINY_IMAGE_SIZE, model_kwargs=dict(TINY_SWIN))
# Settings under which the approximate indexes search every vector of these small galleries.
EXHAUSTIVE = {"ivf": {"n_lists": 2, "n_probe": 2}, "hnsw": {"ef_search": 200}}
SEARCHES = [pytest.param(dict(), id="brute"),
            pytest.param(dict(algorithm="faiss", faiss_index="flat"), id="faiss-flat")]
FAISS_KINDS = ["flat", "ivf", "hnsw"]


@pytest.fixture(scope="module")
def gallery(image_pairs):
    return np.unique(image_pairs[0].ravel())


@pytest.fixture(scope="module")
def embedder():
    return ImageEmbedder(**TINY, cache=False, num_workers=0).fit()


def _search(embedder, **params):
    if params.get("algorithm") == "faiss":
        pytest.importorskip("faiss")
    return ImageNeighbors(embedder, n_neighbors=4, random_state=0, **params)


def _unit(X):
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)


def _faiss_params(kind):
    return {"algorithm": "faiss", "faiss_index": kind, "faiss_params": EXHAUSTIVE.get(kind)}


def _state(search):
    """Everything fitted, copied, and what the search finds."""
    return (search.gallery_.copy(), search.embeddings_.copy(), list(search._gallery_keys),
            search.n_samples_fit_, len(search._index),
            search.kneighbors(n_neighbors=3, return_distance=False))


def _assert_same_state(before, after):
    for old, new in zip(before, after):
        if isinstance(old, np.ndarray):
            assert_array_equal(new, old)
        else:
            assert new == old


def _count_embedded(monkeypatch, search):
    """Rows that the search's embedder embeds from now on, in a list."""
    embedded = []
    transform = search.embedder_.transform

    def counting_transform(X):
        embedded.extend(X)
        return transform(X)

    monkeypatch.setattr(search.embedder_, "transform", counting_transform)
    return embedded


# ----------------------------------------------------------------------
# the indexes: add and remove equal a build on the vectors left
# ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["brute", *FAISS_KINDS])
def test_an_index_that_grows_and_shrinks_equals_one_built_on_what_is_left(kind):
    rng = np.random.default_rng(0)
    vectors, queries = _unit(rng.standard_normal((200, 16))), _unit(rng.standard_normal((20, 16)))
    removed = rng.choice(200, size=30, replace=False)
    left = np.delete(vectors, removed, axis=0)
    if kind == "brute":
        index = BruteForceIndex(vectors[:120]).add(vectors[120:]).remove(removed)
    else:
        pytest.importorskip("faiss")
        index = FaissIndex(vectors[:120], index=kind, params=EXHAUSTIVE.get(kind),
                           random_state=0).add(vectors[120:]).remove(removed)
        if kind == "ivf":
            assert index.params["n_lists"] == 2  # trained once, on the first vectors
        # The changed index travels as bytes.
        index = FaissIndex.from_bytes(index.to_bytes(), index=kind, params=EXHAUSTIVE.get(kind))
    assert len(index) == len(left)
    expected_distances, expected = BruteForceIndex(left).kneighbors(queries, 5)
    distances, indices = index.kneighbors(queries, 5)
    assert_array_equal(indices, expected)
    assert_allclose(distances, expected_distances, atol=1e-6)
    assert_array_equal(index.kneighbors(left, 3, exclude_self=True)[1],
                       BruteForceIndex(left).kneighbors(left, 3, exclude_self=True)[1])


def test_an_ivf_index_may_keep_fewer_vectors_than_lists():
    pytest.importorskip("faiss")
    vectors = _unit(np.random.default_rng(1).standard_normal((100, 8)))
    index = FaissIndex(vectors, index="ivf", params={"n_lists": 4, "n_probe": 4},
                       random_state=0).remove(np.arange(97))
    loaded = FaissIndex.from_bytes(index.to_bytes(), index="ivf")
    assert len(loaded) == 3 and loaded.params["n_lists"] == 4
    assert_array_equal(np.sort(loaded.kneighbors(vectors[97:], 1)[1].ravel()), [0, 1, 2])


@pytest.mark.parametrize("kind", ["brute", "flat"])
def test_an_index_refuses_bad_vectors_and_rows_and_stays_as_it_was(kind):
    vectors = _unit(np.random.default_rng(2).standard_normal((10, 8)))
    if kind == "brute":
        index = BruteForceIndex(vectors)
    else:
        pytest.importorskip("faiss")
        index = FaissIndex(vectors)
    with pytest.raises(ValueError, match="have 9 features, but the index holds vectors of 8"):
        index.add(np.ones((2, 9)))
    with pytest.raises(ValueError, match=r"in \[0, 10\); got \[10, -1\]"):
        index.remove([3, 10, -1])
    with pytest.raises(ValueError, match="integers"):
        index.remove([0.5])
    assert len(index) == 10
    assert_array_equal(index.kneighbors(vectors, 1)[1].ravel(), np.arange(10))


# ----------------------------------------------------------------------
# ImageNeighbors.partial_fit
# ----------------------------------------------------------------------


@pytest.mark.parametrize("params", SEARCHES)
def test_partial_fit_equals_one_fit_on_the_union(embedder, gallery, params):
    batches = [gallery[:20], gallery[20:21], np.concatenate([gallery[30:], gallery[:3]]),
               gallery[21:30]]
    grown = _search(embedder, **params)
    for batch in batches:
        grown.partial_fit(batch)  # the first call fits
    union = np.concatenate(batches)
    fitted = _search(embedder, **params).fit(union)
    assert_array_equal(grown.gallery_, union)
    assert grown.n_samples_fit_ == len(union) == len(grown._index)
    assert_allclose(grown.embeddings_, fitted.embeddings_, atol=1e-6)
    for X in (gallery[::5], None):
        distances, indices = grown.kneighbors(X)
        expected_distances, expected = fitted.kneighbors(X)
        assert_array_equal(indices, expected)
        assert_allclose(distances, expected_distances, atol=1e-6)
    radius = float(np.median(fitted.kneighbors()[0][:, -1]))
    for got, expected in zip(grown.radius_neighbors(radius=radius)[1],
                             fitted.radius_neighbors(radius=radius)[1]):
        assert_array_equal(got, expected)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_grow_as_exact_search_where_they_search_everything(
        embedder, gallery, kind):
    grown = _search(embedder, **_faiss_params(kind)).fit(gallery[:24]).partial_fit(gallery[24:])
    exact = _search(embedder).fit(gallery)
    assert_array_equal(grown.kneighbors(gallery[::3])[1], exact.kneighbors(gallery[::3])[1])
    if kind == "ivf":  # the lists of the first fit are kept
        assert grown._index.faiss_index.nlist == 2


def test_partial_fit_embeds_exactly_the_images_not_in_the_gallery(monkeypatch, embedder,
                                                                  gallery):
    search = _search(embedder).fit(gallery[:20])
    embedded = _count_embedded(monkeypatch, search)
    batch = np.concatenate([gallery[5:25], gallery[22:24], gallery[:2]])
    search.partial_fit(batch)
    # gallery[20:25] are new (gallery[22:24] twice in the batch, embedded once by transform).
    assert sorted(set(embedded)) == sorted(gallery[20:25]) and len(embedded) == 7
    assert search.n_samples_fit_ == 20 + len(batch)
    assert_array_equal(search.embeddings_[20], search.embeddings_[5])  # copied, bit for bit
    embedded.clear()
    search.partial_fit(gallery[:25:6])
    assert embedded == []


def test_partial_fit_reads_no_image_already_in_the_gallery(decode_counts, gallery):
    counts = decode_counts
    search = ImageNeighbors(ImageEmbedder(**TINY, cache=False, num_workers=0)).fit(gallery[:10])
    counts.clear()
    search.partial_fit(np.concatenate([gallery[:10], gallery[10:12]]))
    assert sorted(counts) == sorted(gallery[10:12]) and set(counts.values()) == {1}


def test_an_image_in_memory_or_a_changed_file_is_known_by_its_content(monkeypatch, tmp_path,
                                                                      embedder, gallery):
    from PIL import Image

    pixels = np.asarray(Image.open(gallery[0]).convert("RGB"))
    copy = shutil.copy(gallery[1], tmp_path / "item.png")
    items = np.empty(2, dtype=object)
    items[:] = [pixels, str(copy)]
    search = _search(embedder).fit(items)
    embedded = _count_embedded(monkeypatch, search)
    again = np.empty(1, dtype=object)
    again[0] = pixels.copy()  # another array, the same content
    search.partial_fit(again)
    assert embedded == []
    # The same path, but another image: embedded again.
    shutil.copy(gallery[2], copy)
    search.partial_fit([str(copy)])
    assert embedded == [str(copy)]
    assert_allclose(search.embeddings_[3], embedder.transform([gallery[2]])[0], atol=1e-6)


def test_partial_fit_leaves_unreadable_images_out_with_on_error_warn(tmp_path, embedder,
                                                                    gallery):
    from sklearn_imgpair import UnreadableImageWarning

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    search = _search(embedder, on_error="warn").fit(gallery[:8])
    with pytest.warns(UnreadableImageWarning, match="left out of the gallery") as caught:
        search.partial_fit([gallery[8], str(broken), gallery[9]])
    assert_array_equal(caught[0].message.rows, [1])
    assert_array_equal(search.gallery_, gallery[:10])
    assert len(search._index) == 10
    # Only unreadable images: nothing is added, the gallery is not empty.
    with pytest.warns(UnreadableImageWarning):
        search.partial_fit([str(broken)])
    assert search.n_samples_fit_ == len(search._index) == 10


def test_images_are_found_in_the_gallery_left_by_partial_fit_and_remove(tmp_path, embedder,
                                                                         gallery):
    # find_duplicates and ImageMatchClustering find the gallery row of each image this way:
    # from gallery_ as it is now, not from rows kept by the first fit.
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with Image.open(gallery[4]) as image:
        in_memory = np.asarray(image.convert("RGB"))
    search = _search(embedder, on_error="warn")
    with pytest.warns(UnreadableImageWarning):
        search.fit([gallery[0], str(broken), gallery[1]])
    search.partial_fit([gallery[2], in_memory, gallery[3]]).remove([gallery[0]])
    images = check_paths([gallery[0], gallery[1], str(broken), gallery[2], in_memory,
                          gallery[3], gallery[5]])
    assert_array_equal(find_cells(images, search.gallery_), [-1, 0, -1, 1, 2, 3, -1])
    # The images' own objects, as in find_duplicates' gallery, are found without hashing.
    own = np.empty(3, dtype=object)
    own[:] = [public_cell(cell) for cell in images[[4, 0, 4]]]
    assert_array_equal(find_cells(images, own), [1, -1, -1, -1, 0, -1, -1])


@pytest.mark.parametrize("params", SEARCHES)
def test_gallery_rows_find_images_by_content_or_by_path(monkeypatch, tmp_path, embedder,
                                                        gallery, params):
    folder = tmp_path / "photos"
    folder.mkdir()
    folder = folder.resolve()  # the working directory's own spelling, symbolic links resolved
    paths = [str(shutil.copy(gallery[i], folder / f"{i}.png")) for i in range(4)]
    with Image.open(gallery[4]) as image:
        pixels = np.asarray(image.convert("RGB"))
    items = np.empty(5, dtype=object)
    items[:] = [*paths, pixels]
    search = _search(embedder, **params).fit(items)
    monkeypatch.chdir(folder)
    X = np.empty(6, dtype=object)
    X[:] = ["2.png", paths[0], pixels.copy(), "missing.png", paths[3], paths[1]]
    assert_array_equal(search.gallery_rows(X), [2, 0, 4, -1, 3, 1])
    assert_array_equal(search.gallery_rows(X, match="path"), [-1, 0, 4, -1, 3, 1])
    # A file changed since it was embedded, and one deleted: known by their path only.
    shutil.copy(gallery[5], paths[1])
    (folder / "3.png").unlink()
    rows = search.gallery_rows(X)
    assert rows.dtype == np.int64
    assert_array_equal(rows, [2, 0, 4, -1, -1, -1])
    assert_array_equal(search.gallery_rows(X, match="path"), [-1, 0, 4, -1, 3, 1])
    # After remove, rows are those of the gallery left.
    search.remove(indices=[0])
    assert_array_equal(search.gallery_rows(X), [1, -1, 3, -1, -1, -1])
    with pytest.raises(ValueError, match="match must be 'content' or 'path'; got 'name'"):
        search.gallery_rows(X, match="name")


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
@pytest.mark.parametrize("make_bad_call", [
    pytest.param(lambda search, broken, gallery: search.partial_fit([gallery[30], broken]),
                 id="unreadable"),
    pytest.param(lambda search, broken, gallery: search.partial_fit(
        np.column_stack([gallery[30:32], gallery[30:32]])), id="two-columns"),
    pytest.param(lambda search, broken, gallery: search.partial_fit(
        pd.DataFrame({"other": gallery[30:32]})), id="column-name"),
    pytest.param(lambda search, broken, gallery: search.remove([gallery[0], "gone.png"]),
                 id="remove-unknown"),
    pytest.param(lambda search, broken, gallery: search.remove(indices=[0, 99]),
                 id="remove-out-of-range"),
    pytest.param(lambda search, broken, gallery: search.remove(indices=np.arange(8)),
                 id="remove-everything"),
])
@pytest.mark.parametrize("params", [dict(), *(_faiss_params(kind) for kind in FAISS_KINDS)],
                         ids=["brute", *FAISS_KINDS])
def test_a_failed_partial_fit_or_remove_changes_nothing(tmp_path, embedder, gallery, params,
                                                        make_bad_call):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    search = _search(embedder, **params).fit(pd.DataFrame({"image": gallery[:8]}))
    before = _state(search)
    with pytest.raises(ValueError):
        make_bad_call(search, str(broken), gallery)
    _assert_same_state(before, _state(search))


def test_bad_calls_say_what_is_wrong(tmp_path, embedder, gallery):
    search = _search(embedder).fit(gallery[:8])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"X\[1\].*broken\.png"):
        search.partial_fit([gallery[9], str(broken)])
    with pytest.raises(ValueError, match=r"1 of the images to remove are not in the gallery: "
                                         r"'gone\.png'"):
        search.remove([gallery[0], "gone.png"])
    with pytest.raises(ValueError, match=r"gallery rows in \[0, 8\); got \[8\]"):
        search.remove(indices=[8])
    with pytest.raises(ValueError, match="leave the gallery empty"):
        search.remove(gallery[:8])
    with pytest.raises(ValueError, match=r"images to remove \(X\) or their rows"):
        search.remove()
    with pytest.raises(ValueError, match=r"images to remove \(X\) or their rows"):
        search.remove(gallery[:1], indices=[0])


# ----------------------------------------------------------------------
# ImageNeighbors.remove
# ----------------------------------------------------------------------


@pytest.mark.parametrize("params", [dict(), *(_faiss_params(kind) for kind in FAISS_KINDS)],
                         ids=["brute", *FAISS_KINDS])
def test_remove_by_index_or_path_equals_a_fit_on_the_rest(monkeypatch, embedder, gallery,
                                                          params):
    items = np.concatenate([gallery[:30], gallery[3:4]])  # gallery[3] in rows 3 and 30
    search = _search(embedder, **params).fit(items)
    embedded = _count_embedded(monkeypatch, search)
    search.remove(indices=[0, 7, 7, 12]).remove([gallery[3], gallery[20]])
    assert embedded == []
    rest = np.delete(items, [0, 3, 7, 12, 20, 30])
    assert_array_equal(search.gallery_, rest)
    assert search.n_samples_fit_ == len(rest) == len(search._index) == len(search._gallery_keys)
    fitted = _search(embedder, **params).fit(rest)
    assert_allclose(search.embeddings_, fitted.embeddings_, atol=1e-6)
    for X in (gallery[::4], None):
        distances, indices = search.kneighbors(X)
        expected_distances, expected = fitted.kneighbors(X)
        assert_array_equal(indices, expected)
        assert_allclose(distances, expected_distances, atol=1e-5)
    # A removed image is no neighbour; asked for again, it is embedded again.
    assert search.kneighbors([gallery[3]], n_neighbors=1)[0][0, 0] > 1e-6
    embedded.clear()
    search.partial_fit([gallery[3]])
    assert embedded == [gallery[3]]
    assert search.kneighbors([gallery[3]], n_neighbors=1)[1][0, 0] == len(rest)


# ----------------------------------------------------------------------
# save and load
# ----------------------------------------------------------------------


@pytest.mark.parametrize("params", [dict(), *(_faiss_params(kind) for kind in FAISS_KINDS)],
                         ids=["brute", *FAISS_KINDS])
def test_a_grown_and_shrunk_search_travels_in_its_file(monkeypatch, tmp_path, embedder,
                                                       gallery, params):
    search = _search(embedder, **params).fit(gallery[:14]).partial_fit(gallery[14:28])
    search.remove(indices=np.arange(0, 28, 3))
    loaded = ImageNeighbors.load(search.save(tmp_path / "grown.safetensors"))
    assert_array_equal(loaded.gallery_, search.gallery_)
    assert loaded._gallery_keys == search._gallery_keys
    assert_array_equal(loaded.kneighbors(gallery[::5])[1], search.kneighbors(gallery[::5])[1])
    assert_array_equal(loaded.kneighbors()[1], search.kneighbors()[1])
    # The loaded search knows its gallery's content: only the new image is embedded.
    embedded = _count_embedded(monkeypatch, loaded)
    loaded.partial_fit(gallery[25:30])  # row 27 was removed
    assert embedded == [gallery[27], gallery[28], gallery[29]]
    loaded.remove(indices=[0])
    again = ImageNeighbors.load(loaded.save(tmp_path / "again.safetensors"))
    assert_array_equal(again.kneighbors(gallery[:4])[1], loaded.kneighbors(gallery[:4])[1])


# ----------------------------------------------------------------------
# vectors computed elsewhere (a Dask cluster): fit(X, embeddings=...)
# ----------------------------------------------------------------------


@pytest.mark.parametrize("params", SEARCHES)
def test_given_embeddings_build_the_search_without_reading_an_image(
        embedder, gallery, params, monkeypatch):
    vectors = embedder.transform(gallery)
    expected = _search(embedder, **params).fit(gallery)
    search = _search(embedder, **params)
    # No image is read: the embedders fitted inside the search never transform.
    monkeypatch.setattr(ImageEmbedder, "transform", lambda self, X: pytest.fail("embedded"))
    search.fit(gallery[:30], embeddings=vectors[:30])
    search.partial_fit(gallery[30:], embeddings=vectors[30:])
    assert_array_equal(search.gallery_, gallery)
    assert_array_equal(search.embeddings_, vectors)
    assert_array_equal(search.kneighbors(n_neighbors=3)[1], expected.kneighbors(n_neighbors=3)[1])
    assert search._gallery_keys == expected._gallery_keys  # partial_fit reuses them later


@pytest.mark.parametrize("embeddings, message", [
    (np.ones((5, 3), dtype=np.float32), r"shape \(6, \d+\)"),
    ("nan-row", r"embeddings\[2\] is not a finite unit vector"),
    ("long-row", r"embeddings\[4\] is not a finite unit vector \(norm 2"),
])
def test_given_embeddings_are_checked_and_leave_the_search_unchanged(
        embedder, gallery, embeddings, message):
    vectors = embedder.transform(gallery[:6])
    if isinstance(embeddings, np.ndarray):
        pass
    elif embeddings == "nan-row":
        embeddings = vectors.copy()
        embeddings[2] = np.nan
    else:
        embeddings = vectors.copy()
        embeddings[4] *= 2
    search = _search(embedder).fit(gallery[6:12])
    before = _state(search)
    with pytest.raises(ValueError, match=message):
        search.partial_fit(gallery[:6], embeddings=embeddings)
    _assert_same_state(before, _state(search))
    with pytest.raises(ValueError, match=message):
        _search(embedder).fit(gallery[:6], embeddings=embeddings)
