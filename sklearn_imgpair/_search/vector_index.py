"""Exact cosine search over unit vectors, a chunk of queries at a time."""

import warnings
from numbers import Integral

import numpy as np
import sklearn
import torch

# Candidates kept per query beyond the k asked for, re-ranked in float64: enough
# that float32 rounding of the similarity (about 1e-7) cannot push a true
# neighbour out of the list. Rows with more near-ties than that take every
# tied column (see BruteForceIndex.kneighbors).
RERANK_MARGIN = 8
# Slack on similarities for the float32 pass (ties, radius); the float64 pass decides.
SIMILARITY_SLACK = 1e-5
# Fewest queries searched at once when a progress bar is advanced (at most 100 steps).
PROGRESS_BLOCK = 256
# Most bytes of query vectors handed to an index at once: a self-search (X=None)
# of a memory-mapped gallery reads it a block at a time, never all into memory.
QUERY_BLOCK_BYTES = 64 * 2**20

__all__ = ["BruteForceIndex", "QUERY_BLOCK_BYTES", "RERANK_MARGIN", "SIMILARITY_SLACK",
           "check_positions", "check_n_neighbors", "check_vectors", "chunk_rows",
           "cosine_distances", "search_readable", "sort_neighbors"]


def chunk_rows(n_columns, chunk_size=None, *, row_bytes=0):
    """Queries per chunk so that a chunk's work fits the working memory.

    Parameters
    ----------
    n_columns : int
        Gallery vectors each query is compared with.
    chunk_size : int or None, default=None
        Queries per chunk; None fits a chunk's float32 similarities (and a
        boolean mask of the same shape) plus ``row_bytes`` per query into
        scikit-learn's ``working_memory`` (:func:`sklearn.set_config`,
        1024 MB by default), as
        :func:`sklearn.metrics.pairwise_distances_chunked` does.
    row_bytes : int, default=0
        Further bytes per query (the float64 re-ranking of candidates).

    Returns
    -------
    n_rows : int
    """
    if chunk_size is not None:
        return int(chunk_size)
    budget = sklearn.get_config()["working_memory"] * 2**20
    return max(1, int(budget // (max(n_columns, 1) * 5 + row_bytes)))


def check_vectors(X, what, n_features=None):
    """``X`` as a C-contiguous float32 matrix of ``n_features`` columns, or ``ValueError``."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array of vectors; got shape {X.shape}.")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{what} have {X.shape[1]} features, but the index holds vectors "
                         f"of {n_features}.")
    return X


def check_n_neighbors(n_neighbors, n_samples_fit, *, exclude_self=False):
    """``n_neighbors`` as a positive int that a gallery of ``n_samples_fit`` can give.

    With ``exclude_self`` (the gallery queried against itself) one less.
    Messages are scikit-learn's.
    """
    if not isinstance(n_neighbors, Integral) or isinstance(n_neighbors, bool):
        raise TypeError(f"n_neighbors does not take {type(n_neighbors).__name__} value, "
                        "enter integer value")
    if n_neighbors <= 0:
        raise ValueError(f"Expected n_neighbors > 0. Got {n_neighbors}")
    if n_neighbors > n_samples_fit - exclude_self:
        bound = ("n_samples_fit - 1 (X=None leaves each image out of its own list)"
                 if exclude_self else "n_samples_fit")
        raise ValueError(f"Expected n_neighbors <= {bound}, but n_neighbors = {n_neighbors}, "
                         f"n_samples_fit = {n_samples_fit}.")
    return int(n_neighbors)


def check_positions(positions, n_samples):
    """Gallery rows to remove: sorted, each once, every one in ``[0, n_samples)``.

    Parameters
    ----------
    positions : array-like of int
        Rows of the gallery, in any order, repeats allowed.
    n_samples : int
        Gallery size.

    Returns
    -------
    positions : ndarray of shape (n_removed,), dtype=int64

    Raises
    ------
    ValueError
        If a position is not an integer or lies outside the gallery.
    """
    array = np.asarray(positions)
    if array.size == 0:
        return np.empty(0, dtype=np.int64)
    if array.ndim > 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"indices must be a 1-D array of integers; got {array.dtype} of "
                         f"shape {array.shape}.")
    outside = array[(array < 0) | (array >= n_samples)]
    if len(outside):
        raise ValueError(f"indices must be gallery rows in [0, {n_samples}); got "
                         f"{outside[:5].tolist()}.")
    return np.unique(array.astype(np.int64))


def cosine_distances(queries, gallery):
    """float64 ``1 - cos`` of unit rows, clipped to [0, 2] as scikit-learn clips.

    ``gallery`` is ``(n, k, d)`` for ``queries`` of shape ``(n, d)``: one set
    of candidates per query.
    """
    similarities = np.einsum("qd,qkd->qk", queries.astype(np.float64),
                             gallery.astype(np.float64))
    return np.clip(1.0 - similarities, 0.0, 2.0)


def sort_neighbors(distances, indices):
    """Sort each row by distance, ties by smaller index (rows of equal length).

    Returns
    -------
    distances, indices : ndarray
    """
    order = np.lexsort((indices, distances), axis=-1)
    return (np.take_along_axis(distances, order, axis=-1),
            np.take_along_axis(indices, order, axis=-1))


def _tensor(array):
    """``torch.from_numpy(array)``, sharing its memory even where it is read-only.

    torch warns that it cannot protect a read-only array from writes; the
    index never writes to its gallery nor to its queries, so that warning
    says nothing here.
    """
    with warnings.catch_warnings():
        # Matched by its text: if torch rewords it, the filter stops matching and
        # tests/persistence/test_mapped_load.py fails, whose searches of memory-mapped
        # (read-only) embeddings run with warnings as errors
        # (test_the_loaded_embeddings_are_a_read_only_map_that_finds_what_a_read_finds,
        # test_a_self_search_of_a_mapped_gallery_reads_it_in_blocks_without_a_copy).
        # torch warns once per process: run that file on its own to check.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable",
                                category=UserWarning)
        return torch.from_numpy(array)


class BruteForceIndex:
    """Exact nearest neighbours by cosine distance, in chunks on a torch device.

    Each chunk of queries is compared with the whole gallery in one matrix
    product (float32), the best ``k`` plus a margin are kept, and those
    candidates are re-ranked with float64 similarities, ties broken by the
    smaller gallery index. Results therefore do not depend on ``chunk_size``
    nor on the BLAS that ran the product. Memory beyond the gallery is
    ``chunk_size * n_gallery`` floats.

    Parameters
    ----------
    embeddings : ndarray of shape (n_gallery, d), dtype=float32
        Unit-length gallery vectors; not copied on CPU, where the search
        reads them in place: a read-only array, such as the memory-mapped
        embeddings of a loaded search, is searched without being read into
        memory first (:meth:`add` and :meth:`remove` make new arrays).
    chunk_size : int or None, default=None
        Queries compared at once (see :func:`chunk_rows`).
    device : str or torch.device, default="cpu"
        Where the matrix products run.
    """

    def __init__(self, embeddings, *, chunk_size=None, device="cpu"):
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.chunk_size = chunk_size
        self.device = torch.device(device)
        self._gallery = _tensor(self.embeddings).to(self.device)

    def __len__(self):
        return len(self.embeddings)

    def add(self, vectors):
        """Append unit vectors to the gallery; they take the next rows.

        Parameters
        ----------
        vectors : ndarray of shape (n_new, d)
            Unit-length vectors of the gallery's dimension.

        Returns
        -------
        self : BruteForceIndex
        """
        vectors = check_vectors(vectors, "vectors", self.embeddings.shape[1])
        embeddings = np.concatenate([self.embeddings, vectors])
        # On the CPU the tensor shares the array's memory; elsewhere only the new rows travel.
        gallery = (torch.from_numpy(embeddings) if self.device.type == "cpu"
                   else torch.cat([self._gallery, torch.from_numpy(vectors).to(self.device)]))
        self.embeddings, self._gallery = embeddings, gallery
        return self

    def remove(self, positions):
        """Remove gallery rows; the rows after them move up, in order.

        Parameters
        ----------
        positions : array-like of int
            Rows to remove (see :func:`check_positions`).

        Returns
        -------
        self : BruteForceIndex
        """
        keep = np.ones(len(self), dtype=bool)
        keep[check_positions(positions, len(self))] = False
        embeddings = np.ascontiguousarray(self.embeddings[keep])
        gallery = (torch.from_numpy(embeddings) if self.device.type == "cpu"
                   else self._gallery[torch.from_numpy(keep).to(self.device)])
        self.embeddings, self._gallery = embeddings, gallery
        return self

    def _chunks(self, queries, exclude_self, row_bytes=0, first_row=0):
        """Yield ``(start, stop, similarities)`` float32 blocks, self-matches at -inf.

        With ``exclude_self``, query ``i`` is gallery row ``first_row + i``.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        rows = chunk_rows(len(self), self.chunk_size, row_bytes=row_bytes)
        with torch.no_grad():
            for start in range(0, len(queries), rows):
                # A slice, so a read-only (memory-mapped) view, never a copy of all queries.
                block = _tensor(queries[start:start + rows]).to(self.device)
                similarities = block @ self._gallery.T
                if exclude_self:
                    own = torch.arange(first_row + start, first_row + start + len(block),
                                       device=self.device)
                    similarities[torch.arange(len(block), device=self.device), own] = -np.inf
                yield start, start + len(block), similarities

    def _rerank(self, query, columns, n_neighbors):
        """The ``n_neighbors`` best of ``columns`` for one query, by float64 distance."""
        distances = cosine_distances(query[None], self.embeddings[columns][None])[0]
        order = np.lexsort((columns, distances))[:n_neighbors]
        return distances[order], columns[order]

    def kneighbors(self, queries, n_neighbors, *, exclude_self=False, first_row=0):
        """The ``n_neighbors`` nearest gallery vectors of each query.

        Parameters
        ----------
        queries : ndarray of shape (n_queries, d)
            Unit-length vectors.
        n_neighbors : int
            Neighbours per query, at most the gallery size (minus one with
            ``exclude_self``).
        exclude_self : bool, default=False
            The queries are the gallery, in order: leave each one out of its
            own list.
        first_row : int, default=0
            With ``exclude_self``, the gallery row of the first query (the
            queries are then the rows from ``first_row`` on).

        Returns
        -------
        distances : ndarray of shape (n_queries, n_neighbors), dtype=float64
            Cosine distances ``1 - cos``, ascending, in [0, 2].
        indices : ndarray of shape (n_queries, n_neighbors), dtype=int64
            Gallery rows; equal distances in increasing index order.

        Notes
        -----
        The float32 pass keeps the best ``n_neighbors + 8`` columns of each
        query; a query with more columns than that within float32 rounding of
        its k-th similarity (copies of one image, say) takes all of them, so
        that ties are always broken by the smaller index, whatever the chunk.
        """
        queries = np.asarray(queries, dtype=np.float32)
        n_candidates = min(n_neighbors + RERANK_MARGIN, len(self) - int(exclude_self))
        dim = self.embeddings.shape[1]
        distances = np.empty((len(queries), n_neighbors))
        indices = np.empty((len(queries), n_neighbors), dtype=np.int64)
        chunks = self._chunks(queries, exclude_self, row_bytes=n_candidates * dim * 16,
                              first_row=first_row)
        for start, stop, similarities in chunks:
            values, top = similarities.topk(n_candidates, dim=1)
            # Rows whose k-th similarity ties with columns beyond the candidates.
            floor = values[:, n_neighbors - 1:n_neighbors] - SIMILARITY_SLACK
            crowded = ((similarities >= floor).sum(dim=1) > n_candidates).cpu().numpy()
            top = top.cpu().numpy()
            exact = cosine_distances(queries[start:stop], self.embeddings[top])
            exact, top = sort_neighbors(exact, top)
            distances[start:stop] = exact[:, :n_neighbors]
            indices[start:stop] = top[:, :n_neighbors]
            for offset in np.flatnonzero(crowded):
                columns = torch.nonzero(similarities[offset] >= floor[offset]).cpu().numpy()
                row = start + offset
                distances[row], indices[row] = self._rerank(
                    queries[row], columns[:, 0].astype(np.int64), n_neighbors)
        return distances, indices

    def radius_neighbors(self, queries, radius, *, exclude_self=False, first_row=0):
        """Every gallery vector within ``radius`` (cosine distance) of each query.

        ``exclude_self`` and ``first_row`` are as in :meth:`kneighbors`.

        Returns
        -------
        distances, indices : ndarray of shape (n_queries,), dtype=object
            Per query, float64 distances and int64 gallery rows, sorted by
            distance, ties by index.
        """
        queries = np.asarray(queries, dtype=np.float32)
        distances = np.empty(len(queries), dtype=object)
        indices = np.empty(len(queries), dtype=object)
        # torch.nonzero takes 16 bytes per hit, and every column may be one.
        for start, stop, similarities in self._chunks(queries, exclude_self,
                                                      row_bytes=len(self) * 16,
                                                      first_row=first_row):
            hits = torch.nonzero(similarities >= 1.0 - radius - SIMILARITY_SLACK).cpu().numpy()
            bounds = np.searchsorted(hits[:, 0], np.arange(stop - start + 1))
            for offset in range(stop - start):
                columns = hits[bounds[offset]:bounds[offset + 1], 1].astype(np.int64)
                query = queries[start + offset].astype(np.float64)
                exact = np.clip(1.0 - self.embeddings[columns].astype(np.float64) @ query,
                                0.0, 2.0)
                keep = exact <= radius
                order = np.lexsort((columns[keep], exact[keep]))
                distances[start + offset] = exact[keep][order]
                indices[start + offset] = columns[keep][order]
        return distances, indices


def _query_blocks(rows, step):
    """Yield ``(block, size)`` for ``step`` rows at a time of the sorted query ``rows``.

    ``block`` is a ``slice`` where the rows are contiguous (a view of the
    queries, not a copy), an index array where unreadable rows fall between.
    """
    for start in range(0, len(rows), step):
        block = rows[start:start + step]
        first, last = int(block[0]), int(block[-1])
        yield (slice(first, last + 1) if last - first + 1 == len(block) else block), len(block)


def search_readable(index, queries, readable, *, n_neighbors=None, radius=None,
                    exclude_self=False, progress=None):
    """An index's ``kneighbors`` (given ``n_neighbors``) or ``radius_neighbors`` of queries.

    Only the ``readable`` rows of ``queries`` are searched; the others get
    NaN distances and index -1 (``kneighbors``) or empty arrays. Queries go
    to the index in blocks of at most :data:`QUERY_BLOCK_BYTES`, each a
    slice of ``queries`` (a view: a memory-mapped gallery searched against
    itself is read a block at a time, never copied whole) where its rows are
    contiguous. With ``progress`` (an object with ``update(n)``, such as a
    tqdm bar) blocks are smaller, at most a hundredth of the queries above
    :data:`PROGRESS_BLOCK`, and ``progress`` is advanced by each block's
    size. Results do not depend on the blocks.

    Parameters
    ----------
    index : BruteForceIndex or FaissIndex
        The index searched.
    queries : ndarray of shape (n_queries, d)
        Unit vectors; with ``exclude_self``, the index's own vectors in order.
    readable : ndarray of shape (n_queries,), dtype=bool
        The rows to search; all of them with ``exclude_self``.
    n_neighbors, radius : int or float, default=None
        Give one: ``kneighbors`` with ``n_neighbors``, else ``radius_neighbors``.
    exclude_self : bool, default=False
        Query ``i`` is gallery row ``i``: leave it out of its own list.
    progress : object with ``update(n)``, default=None
        Advanced as blocks are searched.

    Returns
    -------
    distances, indices : ndarray
        One row per query, as the index's method returns them.

    Raises
    ------
    ValueError
        If ``exclude_self`` is given with rows that are not readable: each
        block's queries must then be the gallery rows from its first on.
    """
    n_queries = len(queries)
    if n_neighbors is not None:
        distances = np.full((n_queries, n_neighbors), np.nan)
        indices = np.full((n_queries, n_neighbors), -1, dtype=np.int64)
    else:
        distances, indices = np.empty(n_queries, dtype=object), np.empty(n_queries, dtype=object)
        for row in np.flatnonzero(~readable):
            distances[row], indices[row] = np.empty(0), np.empty(0, dtype=np.int64)
    rows = np.flatnonzero(readable)
    if exclude_self and len(rows) != n_queries:
        raise ValueError(f"exclude_self=True searches the gallery against itself, every row "
                         f"readable; rows {np.flatnonzero(~readable)[:5].tolist()} are not.")
    step = max(1, QUERY_BLOCK_BYTES // max(4 * queries.shape[1], 1))
    if progress is not None:
        step = min(step, max(PROGRESS_BLOCK, -(-len(rows) // 100)))
    for block, size in _query_blocks(rows, step):
        # With exclude_self every row is readable, so each block is a slice, whose
        # queries are the gallery rows from its start on.
        options = {"exclude_self": True, "first_row": block.start} if exclude_self else {}
        distances[block], indices[block] = (
            index.kneighbors(queries[block], n_neighbors, **options)
            if n_neighbors is not None else
            index.radius_neighbors(queries[block], radius, **options))
        if progress is not None:
            progress.update(size)
    return distances, indices
