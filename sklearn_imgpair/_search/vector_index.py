"""Exact cosine search over unit vectors, a chunk of queries at a time."""

import numpy as np
import sklearn
import torch
from scipy import sparse

# Candidates kept per query beyond the k asked for, re-ranked in float64: enough
# that float32 rounding of the similarity (about 1e-7) cannot push a true
# neighbour out of the list. Rows with more near-ties than that take every
# tied column (see BruteForceIndex.kneighbors).
RERANK_MARGIN = 8
# Slack on similarities for the float32 pass (ties, radius); the float64 pass decides.
SIMILARITY_SLACK = 1e-5

__all__ = ["BruteForceIndex", "RERANK_MARGIN", "SIMILARITY_SLACK", "chunk_rows",
           "cosine_distances", "neighbors_graph", "sort_neighbors"]


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
        Unit-length gallery vectors; not copied on CPU.
    chunk_size : int or None, default=None
        Queries compared at once (see :func:`chunk_rows`).
    device : str or torch.device, default="cpu"
        Where the matrix products run.
    """

    def __init__(self, embeddings, *, chunk_size=None, device="cpu"):
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.chunk_size = chunk_size
        self.device = torch.device(device)
        self._gallery = torch.from_numpy(self.embeddings).to(self.device)

    def __len__(self):
        return len(self.embeddings)

    def _chunks(self, queries, exclude_self, row_bytes=0):
        """Yield ``(start, stop, similarities)`` float32 blocks, self-matches at -inf."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        rows = chunk_rows(len(self), self.chunk_size, row_bytes=row_bytes)
        with torch.no_grad():
            for start in range(0, len(queries), rows):
                block = torch.from_numpy(queries[start:start + rows]).to(self.device)
                similarities = block @ self._gallery.T
                if exclude_self:
                    own = torch.arange(start, start + len(block), device=self.device)
                    similarities[torch.arange(len(block), device=self.device), own] = -np.inf
                yield start, start + len(block), similarities

    def _rerank(self, query, columns, n_neighbors):
        """The ``n_neighbors`` best of ``columns`` for one query, by float64 distance."""
        distances = cosine_distances(query[None], self.embeddings[columns][None])[0]
        order = np.lexsort((columns, distances))[:n_neighbors]
        return distances[order], columns[order]

    def kneighbors(self, queries, n_neighbors, *, exclude_self=False):
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
        chunks = self._chunks(queries, exclude_self, row_bytes=n_candidates * dim * 16)
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

    def radius_neighbors(self, queries, radius, *, exclude_self=False):
        """Every gallery vector within ``radius`` (cosine distance) of each query.

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
                                                      row_bytes=len(self) * 16):
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


def neighbors_graph(distances, indices, mode, n_samples_fit):
    """CSR graph of each query's neighbours, as scikit-learn's ``*_neighbors_graph``.

    ``distances`` and ``indices`` hold one row per query, as ``kneighbors``
    or ``radius_neighbors`` of either index return them; index -1 (an
    unreadable query's) is no neighbour. ``mode`` is ``"connectivity"``
    (ones) or ``"distance"``.
    """
    if mode not in ("connectivity", "distance"):
        raise ValueError(f'Unsupported mode, must be one of "connectivity", or '
                         f'"distance" but got "{mode}" instead')
    lengths = np.array([len(row) for row in indices])
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    columns = np.concatenate(list(indices)) if len(indices) else np.empty(0, np.int64)
    values = (np.ones(len(columns)) if mode == "connectivity"
              else np.concatenate(list(distances)) if len(distances) else np.empty(0))
    keep = columns >= 0  # unreadable queries have no neighbours
    if not keep.all():
        lengths = np.array([int((np.asarray(row) >= 0).sum()) for row in indices])
        indptr = np.concatenate([[0], np.cumsum(lengths)])
    return sparse.csr_matrix((values[keep], columns[keep], indptr),
                             shape=(len(indices), n_samples_fit))
