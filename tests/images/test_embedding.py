"""embed_cells: the one embedding path (distinct images, cache, failures, pooling), no torch."""

import inspect

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from sklearn_imgpair import UnreadableImageWarning
from sklearn_imgpair._images.cells import InMemoryImage
from sklearn_imgpair._images.embedding import embed_cells, embed_rows, pool_embeddings
from sklearn_imgpair._images.validation import check_pairs, check_paths
from sklearn_imgpair._io.embedding_cache import EmbeddingCache


def _fake_embedder(bad=(), log=None):
    """An ``embed_images`` whose vector of an image is a unit vector made from its name."""

    def embed_images(images, names):
        if log is not None:
            log.append(list(images))
        vectors, errors = [], []
        for image, name in zip(images, names):
            key = image if isinstance(image, str) else image.key
            rng = np.random.default_rng(sum(map(ord, key)))
            vector = rng.standard_normal(4).astype(np.float32)
            vectors.append(vector / np.linalg.norm(vector))
            errors.append(f"{name}: cannot read {key}" if key in bad else "")
        return np.array(vectors, dtype=np.float32).reshape(-1, 4), errors

    return embed_images


def test_each_distinct_image_is_embedded_once_and_pairs_map_to_their_rows():
    pairs = check_pairs([["a.png", "b.png"], ["b.png", "a.png"], ["a.png", "c.png"]])
    log = []
    embeddings, inverse, failures = embed_cells(pairs, _fake_embedder(log=log))
    assert log == [["a.png", "b.png", "c.png"]]
    assert embeddings.shape == (3, 4) and embeddings.dtype == np.float32
    assert_array_equal(inverse.reshape(-1, 2), [[0, 1], [1, 0], [0, 2]])
    assert failures == []


def test_a_cell_of_several_images_gets_the_normalised_mean():
    cells = check_paths(["a.png;b.png", "a.png"])
    embeddings, inverse, _ = embed_cells(cells, _fake_embedder())
    single, _, _ = embed_cells(check_paths(["a.png", "b.png"]), _fake_embedder())
    mean = single.sum(axis=0)
    assert_allclose(embeddings[inverse[0]], mean / np.linalg.norm(mean), rtol=1e-6)
    assert_array_equal(embeddings[inverse[1]], single[0])  # bit for bit


def test_pool_embeddings_by_hand():
    vectors = np.array([[1, 0], [0, 1], [np.nan, np.nan]], dtype=np.float32)
    image_index = np.array([0, 0, 1, 1, 2])
    offsets = np.array([0, 1, 3, 5])
    pooled = pool_embeddings(vectors, image_index, offsets)
    assert_array_equal(pooled[0], [1, 0])
    assert_allclose(pooled[1], [np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-6)
    assert np.isnan(pooled[2]).all()  # a cell with an unreadable image


def test_unreadable_images_get_nan_and_are_reported_by_their_first_cell():
    pairs = check_pairs([["a.png", "b.png"], ["c.png;b.png", "a.png"]])
    embeddings, inverse, failures = embed_cells(pairs, _fake_embedder(bad={"b.png"}),
                                                on_error="warn")
    assert failures == ["X[0, 1]: cannot read b.png"]
    rows = embeddings[inverse.reshape(-1, 2)]
    assert np.isnan(rows[0, 1]).all() and np.isnan(rows[1, 0]).all()
    assert not np.isnan(rows[0, 0]).any() and not np.isnan(rows[1, 1]).any()


def test_the_cache_is_read_before_embedding_and_never_keeps_nan(tmp_path):
    paths = []
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"x")
        paths.append(str(tmp_path / name))
    cache = EmbeddingCache("fingerprint", in_memory=False, directory=tmp_path / "cache")
    cells = check_paths(paths + [b"bytes"])
    image = cells[2]
    assert isinstance(image, InMemoryImage)
    log = []
    first, _, failures = embed_cells(cells, _fake_embedder(bad={image.key}, log=log),
                                     on_error="warn", cache=cache)
    assert len(failures) == 1 and np.isnan(first[2]).all()
    again, _, failures = embed_cells(cells, _fake_embedder(bad={image.key}, log=log),
                                     on_error="warn", cache=cache)
    assert log[1] == [image]  # the readable images came from the cache
    assert_array_equal(again[:2], first[:2]) and len(failures) == 1


def test_a_missing_file_is_named_when_its_cache_key_is_computed(tmp_path):
    cache = EmbeddingCache("fingerprint", in_memory=False)
    cells = check_paths([str(tmp_path / "lost.png")])
    with pytest.raises(FileNotFoundError, match=r"X\[0\]: image file not found: .*lost.png"):
        embed_cells(cells, _fake_embedder(), cache=cache)
    lost = str(tmp_path / "lost.png")
    embeddings, _, failures = embed_cells(cells, _fake_embedder(bad={lost}), on_error="warn",
                                          cache=cache)
    assert np.isnan(embeddings).all() and failures == [f"X[0]: cannot read {lost}"]


def test_embed_rows_warns_once_for_the_caller_of_its_caller():
    def transform(cells):
        return embed_rows(cells, _fake_embedder(bad={"b.png"}), on_error="warn")

    line = inspect.currentframe().f_lineno + 2
    with pytest.warns(UnreadableImageWarning, match="get NaN embeddings") as record:
        vectors = transform(check_paths(["a.png", "b.png", "b.png"]))
    assert len(record) == 1 and record[0].lineno == line
    assert record[0].message.rows.tolist() == [1, 2]
    assert np.isnan(vectors[1:]).all() and not np.isnan(vectors[0]).any()
