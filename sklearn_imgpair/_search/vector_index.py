"""Exact cosine search over unit vectors, a chunk of queries at a time."""

import numpy as np
import sklearn
import torch

__all__ = ["BruteForceIndex", "chunk_rows", "sort_neighbors"]

# Candidates kept per query beyond the k asked for, re-ranked in float64: enough
# that float32 rounding of the similarity (about 1e-7) cannot push a true
# neighbour out of the list unless more than this many vectors tie with it.
_RERANK_MARGIN = 8
# Slack on the radius for the float32 pass; the float64 pass decides.
_RADIUS_SLACK = 1e-5


def chunk_rows(n_columns, chunk_size=None):
    """Queries per chunk so that a chunk of similarities fits the working memory.

    Parameters
    ----------
    n_columns : int
        Gallery vectors each query is compared with.
    chunk_size : int or None, default=None
        Queries per chunk; None fits a float32 block of ``chunk_size *
        n_columns`` similarities (and its top-k work) into scikit-learn's
        ``working_memory`` (:func:`sklearn.set_config`, 1024 MB by default),
        as :func:`sklearn.metrics.pairwise_distances_chunked` does.

    Returns
    -------
    n_rows : int
    """
    if chunk_size is not None:
        return int(chunk_size)
    budget = sklearn.get_config()["working_memory"] * 2**20
    # The similarities and a boolean mask of the same shape (tie checks).
    return max(1, int(budget // (max(n_columns, 1) * 5)))


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

    def _chunks(self, queries, exclude_self):
        """Yield ``(start, stop, similarities)`` float32 blocks, self-matches at -inf."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        rows = chunk_rows(len(self), self.chunk_size)
        with torch.no_grad():
            for start in range(0, len(queries), rows):
                block = torch.from_numpy(queries[start:start + rows]).to(self.device)
                similarities = block @ self._gallery.T
                if exclude_self:
                    own = torch.arange(start, start + len(block), device=self.device)
                    similarities[torch.arange(len(block), device=self.device), own] = -np.inf
                yield start, start + len(block), similarities

    def _exact_distances(self, queries, indices):
        """float64 cosine distances between ``queries[i]`` and ``gallery[indices[i]]``."""
        gallery = self.embeddings[indices].astype(np.float64)
        return 1.0 - np.einsum("qd,qkd->qk", queries.astype(np.float64), gallery)

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
            Cosine distances ``1 - cos``, ascending.
        indices : ndarray of shape (n_queries, n_neighbors), dtype=int64
            Gallery rows; equal distances in increasing index order.
        """
        queries = np.asarray(queries, dtype=np.float32)
        n_candidates = min(n_neighbors + _RERANK_MARGIN, len(self) - int(exclude_self))
        distances = np.empty((len(queries), n_neighbors))
        indices = np.empty((len(queries), n_neighbors), dtype=np.int64)
        for start, stop, similarities in self._chunks(queries, exclude_self):
            top = similarities.topk(n_candidates, dim=1).indices.cpu().numpy()
            exact = self._exact_distances(queries[start:stop], top)
            exact, top = sort_neighbors(exact, top)
            distances[start:stop] = exact[:, :n_neighbors]
            indices[start:stop] = top[:, :n_neighbors]
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
        for start, stop, similarities in self._chunks(queries, exclude_self):
            hits = torch.nonzero(similarities >= 1.0 - radius - _RADIUS_SLACK).cpu().numpy()
            bounds = np.searchsorted(hits[:, 0], np.arange(stop - start + 1))
            for offset in range(stop - start):
                columns = hits[bounds[offset]:bounds[offset + 1], 1].astype(np.int64)
                query = queries[start + offset].astype(np.float64)
                exact = 1.0 - self.embeddings[columns].astype(np.float64) @ query
                keep = exact <= radius
                order = np.lexsort((columns[keep], exact[keep]))
                distances[start + offset] = exact[keep][order]
                indices[start + offset] = columns[keep][order]
        return distances, indices
