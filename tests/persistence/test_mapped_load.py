"""ImageNeighbors.load memory-maps the gallery's embeddings, verified, and works on them."""

import json
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from sklearn_imgpair import ImageEmbedder, ImageNeighbors
from sklearn_imgpair._search import vector_index

from conftest import TINY_IMAGE_SIZE, TINY_SWIN

FILES_V3 = Path(__file__).resolve().parent / "data" / "files_v3"
SEARCHES = [pytest.param(dict(), id="brute"),
            pytest.param(dict(algorithm="faiss", faiss_index="flat"), id="faiss-flat"),
            pytest.param(dict(algorithm="faiss", faiss_index="ivf",
                              faiss_params={"n_lists": 2, "n_probe": 2}), id="faiss-ivf")]


@pytest.fixture(scope="module")
def gallery(image_pairs):
    return np.unique(image_pairs[0].ravel())


@pytest.fixture(scope="module")
def embedder():
    return ImageEmbedder(pretrained=False, image_size=TINY_IMAGE_SIZE,
                         model_kwargs=dict(TINY_SWIN), cache=False, num_workers=0).fit()


def _vectors(n_rows, dim, seed=0):
    vectors = np.random.default_rng(seed).standard_normal((n_rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _saved(params, embedder, gallery, path):
    """A search over ``gallery`` with vectors given (no image is read), saved to ``path``."""
    if params.get("algorithm") == "faiss":
        pytest.importorskip("faiss")
    search = ImageNeighbors(embedder, n_neighbors=3, random_state=0, **params)
    search.fit(gallery, embeddings=_vectors(len(gallery), embedder.embedding_dim_))
    search.save(path)
    return search


def _tensor_offset(path, name):
    """Where the bytes of tensor ``name`` start in a safetensors file."""
    with open(path, "rb") as file:
        (size,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(size))
    return 8 + size + header[name]["data_offsets"][0]


@pytest.mark.parametrize("params", SEARCHES)
def test_the_loaded_embeddings_are_a_read_only_map_that_finds_what_a_read_finds(
        params, embedder, gallery, tmp_path):
    path = tmp_path / "search.safetensors"
    search = _saved(params, embedder, gallery, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's warning about a read-only array included
        mapped = ImageNeighbors.load(path)
        found = mapped.kneighbors(gallery[:5])
    read = ImageNeighbors.load(path, mmap_mode=None)
    assert isinstance(mapped.embeddings_, np.memmap)
    assert not mapped.embeddings_.flags.writeable
    assert not isinstance(read.embeddings_, np.memmap) and read.embeddings_.flags.writeable
    assert_array_equal(mapped.embeddings_, search.embeddings_)
    assert_array_equal(read.embeddings_, search.embeddings_)
    for mapped_result, read_result in zip(found, read.kneighbors(gallery[:5])):
        assert_array_equal(mapped_result, read_result)
    assert_array_equal(mapped.kneighbors()[1], search.kneighbors()[1])


def test_the_exact_index_searches_the_mapped_array_without_a_copy(embedder, gallery, tmp_path):
    path = tmp_path / "search.safetensors"
    _saved({}, embedder, gallery, path)
    loaded = ImageNeighbors.load(path)
    index = loaded._index
    assert np.shares_memory(index.embeddings, loaded.embeddings_)
    assert index._gallery.data_ptr() == loaded.embeddings_.ctypes.data


@pytest.mark.parametrize("params", SEARCHES)
def test_a_self_search_of_a_mapped_gallery_reads_it_in_blocks_without_a_copy(
        params, embedder, gallery, tmp_path, monkeypatch):
    path = tmp_path / "search.safetensors"
    search = _saved(params, embedder, gallery, path)
    mapped = ImageNeighbors.load(path)
    # Blocks of 7 queries, so that a gallery of a few dozen images takes several.
    monkeypatch.setattr(vector_index, "QUERY_BLOCK_BYTES", 7 * 4 * mapped.embedding_dim_)
    blocks = []
    for name in ("kneighbors", "radius_neighbors"):
        method = getattr(mapped._index, name)

        def spy(queries, *args, method=method, **kwargs):
            blocks.append((queries, kwargs["first_row"]))
            return method(queries, *args, **kwargs)

        monkeypatch.setattr(mapped._index, name, spy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's warning about a read-only array included
        found = mapped.kneighbors()
        within = mapped.radius_neighbors(radius=0.8)
    assert len(blocks) == 2 * -(-len(gallery) // 7)
    for queries, first_row in blocks:
        # Each block is a view of the mapped file: the rows from first_row on, not a copy.
        assert 0 < len(queries) <= 7 and not queries.flags.writeable
        assert np.shares_memory(queries, mapped.embeddings_)
        assert queries.ctypes.data == mapped.embeddings_[first_row:].ctypes.data
    for got, expected in zip(found, search.kneighbors()):
        assert_array_equal(got, expected)
    for got, expected in zip(within, search.radius_neighbors(radius=0.8)):
        for row_got, row_expected in zip(got, expected):
            assert_array_equal(row_got, row_expected)


@pytest.mark.parametrize("params", SEARCHES)
def test_a_mapped_search_grows_shrinks_and_replaces_its_own_file(params, embedder, gallery,
                                                                 tmp_path):
    path = tmp_path / "search.safetensors"
    _saved(params, embedder, gallery[:20], path)
    mapped, read = ImageNeighbors.load(path), ImageNeighbors.load(path, mmap_mode=None)
    new = _vectors(len(gallery) - 20, embedder.embedding_dim_, seed=1)
    for search in (mapped, read):
        search.partial_fit(gallery[20:], embeddings=new).remove(indices=[0, 5])
    assert_array_equal(mapped.embeddings_, read.embeddings_)
    assert_array_equal(mapped.kneighbors()[1], read.kneighbors()[1])
    # Saving over the file that is mapped: the new file replaces it; a search
    # still mapping the old one keeps its vectors.
    still_mapped = ImageNeighbors.load(path)
    before = np.array(still_mapped.embeddings_)
    mapped.save(path)
    again = ImageNeighbors.load(path)
    assert_array_equal(again.embeddings_, read.embeddings_)
    assert_array_equal(again.kneighbors()[1], read.kneighbors()[1])
    assert_array_equal(still_mapped.embeddings_, before)
    again.save(path)  # a search saved over the file its own embeddings map
    assert_array_equal(ImageNeighbors.load(path).embeddings_, read.embeddings_)


@pytest.mark.parametrize("mmap_mode", ["r", None])
def test_a_changed_byte_of_the_embeddings_is_refused(mmap_mode, embedder, gallery, tmp_path):
    path = tmp_path / "search.safetensors"
    _saved({}, embedder, gallery, path)
    data = bytearray(path.read_bytes())
    data[_tensor_offset(path, "embeddings_") + 4 * embedder.embedding_dim_ + 1] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum does not match"):
        ImageNeighbors.load(path, mmap_mode=mmap_mode)


def test_a_file_of_an_earlier_version_loads_mapped(monkeypatch):
    monkeypatch.chdir(FILES_V3)
    mapped = ImageNeighbors.load("neighbors_brute.safetensors")
    read = ImageNeighbors.load("neighbors_brute.safetensors", mmap_mode=None)
    assert isinstance(mapped.embeddings_, np.memmap)
    assert_array_equal(mapped.embeddings_, read.embeddings_)
    assert_array_equal(mapped.kneighbors()[1], read.kneighbors()[1])


def test_an_unknown_mmap_mode_is_refused(embedder, gallery, tmp_path):
    path = tmp_path / "search.safetensors"
    _saved({}, embedder, gallery, path)
    with pytest.raises(ValueError, match="mmap_mode must be 'r' or None; got 'r\\+'"):
        ImageNeighbors.load(path, mmap_mode="r+")
