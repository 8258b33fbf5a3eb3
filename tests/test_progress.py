"""verbose: progress bars on stderr of the images embedded and the queries searched."""

import re

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from sklearn_imgpair import ImageEmbedder, ImageNeighbors
from sklearn_imgpair._io import embedding_cache as _cache
from sklearn_imgpair._io.container import read_container, write_container
from sklearn_imgpair._persistence.neighbors_file import NEIGHBORS_FORMAT_VERSION
from sklearn_imgpair._search.vector_index import BruteForceIndex, search_readable

from conftest import TINY_IMAGE_SIZE, TINY_SWIN, make_tiny_classifier

TINY = dict(pretrained=False, image_size=TINY_IMAGE_SIZE, model_kwargs=dict(TINY_SWIN))


@pytest.fixture(scope="module")
def gallery(image_pairs):
    return np.unique(image_pairs[0].ravel())


@pytest.fixture(scope="module")
def classifier(image_pairs):
    return make_tiny_classifier(max_epochs=1).fit(*image_pairs)


@pytest.fixture(autouse=True)
def _empty_cache():
    """Counts are of the images embedded: none may be cached by an earlier test."""
    _cache._PROCESS_STORE.clear()
    yield
    _cache._PROCESS_STORE.clear()


def _final_count(err, desc):
    """The last ``n/total`` that the bar ``desc`` printed."""
    counts = re.findall(rf"{desc}: +\d+%\|[^|]*\| *(\d+)/(\d+)", err)
    assert counts, f"no {desc!r} bar in {err!r}"
    return tuple(map(int, counts[-1]))


def test_the_embedder_counts_the_images_it_embeds(capsys, gallery):
    embedder = ImageEmbedder(**TINY, batch_size=4, num_workers=0, verbose=1).fit()
    repeated = np.concatenate([gallery[:10], gallery[:3]])  # a path twice is embedded once
    embedder.transform(repeated)
    assert _final_count(capsys.readouterr().err, "Embedding") == (10, 10)
    # Images found in the cache are not embedded, nor counted.
    embedder.transform(gallery[:12])
    assert _final_count(capsys.readouterr().err, "Embedding") == (2, 2)


def test_verbose_0_prints_nothing(capsys, gallery):
    embedder = ImageEmbedder(**TINY, cache=False)
    search = ImageNeighbors(embedder, n_neighbors=2).fit(gallery)
    search.kneighbors(gallery[:5])
    search.radius_neighbors(radius=0.5)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_a_search_on_a_classifier_passes_its_verbose_to_its_embedder(capsys, classifier,
                                                                     gallery):
    search = ImageNeighbors(classifier=classifier, n_neighbors=2, verbose=1).fit(gallery)
    assert search.embedder_.verbose == 1
    assert _final_count(capsys.readouterr().err, "Embedding") == (len(gallery), len(gallery))
    search.kneighbors(n_neighbors=2)
    assert _final_count(capsys.readouterr().err, "Searching") == (len(gallery), len(gallery))
    search.radius_neighbors(gallery[:5])  # embedded already: the queries' vectors are cached
    assert _final_count(capsys.readouterr().err, "Searching") == (5, 5)


def test_an_embedder_asking_for_a_bar_keeps_it_in_a_silent_search(capsys, gallery):
    search = ImageNeighbors(ImageEmbedder(**TINY, cache=False, verbose=1)).fit(gallery[:6])
    search.kneighbors(n_neighbors=2)
    err = capsys.readouterr().err
    assert _final_count(err, "Embedding") == (6, 6) and "Searching" not in err


def test_verbose_is_saved_and_files_without_it_load(tmp_path, gallery):
    search = ImageNeighbors(ImageEmbedder(**TINY, verbose=1), verbose=1).fit(gallery[:6])
    path = search.save(tmp_path / "search.safetensors")
    loaded = ImageNeighbors.load(path)
    assert loaded.verbose == 1 and loaded.embedder_.verbose == 1
    # A file written before verbose existed.
    content, arrays = read_container(path, "ImageNeighbors",
                                     max_version=NEIGHBORS_FORMAT_VERSION)

    def without_verbose(value):
        if isinstance(value, dict):
            return {key: without_verbose(item) for key, item in value.items()
                    if key != "verbose"}
        return value

    content = without_verbose({key: value for key, value in content.items()
                               if key != "estimator"})
    write_container(path, "ImageNeighbors", content, arrays,
                    format_version=NEIGHBORS_FORMAT_VERSION)
    old = ImageNeighbors.load(path)
    assert old.verbose == 0 and old.embedder_.verbose == 0
    assert_array_equal(old.kneighbors(gallery[:3])[1], search.kneighbors(gallery[:3])[1])


class _Counter:
    def __init__(self):
        self.steps = []

    def update(self, n):
        self.steps.append(n)


@pytest.mark.parametrize("kind", ["brute", "flat", "hnsw"])
def test_searching_in_blocks_for_a_bar_gives_the_same_neighbours(kind):
    rng = np.random.RandomState(0)
    vectors = rng.normal(size=(700, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    if kind == "brute":
        index = BruteForceIndex(vectors, chunk_size=97)
    else:
        faiss_index = pytest.importorskip("sklearn_imgpair._search.faiss_index")
        pytest.importorskip("faiss")
        index = faiss_index.FaissIndex(vectors, index=kind, params=None, random_state=0)
    readable = np.ones(len(vectors), dtype=bool)
    for options in [dict(n_neighbors=5), dict(radius=0.6)]:
        for exclude_self in [True, False]:
            counter = _Counter()
            whole = search_readable(index, vectors, readable, exclude_self=exclude_self,
                                    **options)
            blocks = search_readable(index, vectors, readable, exclude_self=exclude_self,
                                     progress=counter, **options)
            assert sum(counter.steps) == len(vectors) and len(counter.steps) > 1
            for got, expected in zip(blocks, whole):
                if got.dtype == object:
                    for row_got, row_expected in zip(got, expected):
                        assert_array_equal(row_got, row_expected)
                else:
                    assert_array_equal(got, expected)
            if exclude_self:  # no query is its own neighbour
                assert all(row not in set(np.atleast_1d(neighbours))
                           for row, neighbours in enumerate(blocks[1]))
