"""Sparse graphs of a search's neighbours, as scikit-learn's ``*_neighbors_graph`` give them."""

import numpy as np
from scipy import sparse

__all__ = ["NeighborsGraphMixin", "neighbors_graph"]


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


class NeighborsGraphMixin:
    """``kneighbors_graph`` and ``radius_neighbors_graph`` of a search, from its own searches.

    As scikit-learn's ``KNeighborsMixin`` and ``RadiusNeighborsMixin``: the
    search provides ``kneighbors``, ``radius_neighbors`` and ``n_samples_fit_``.
    """

    def kneighbors_graph(self, X=None, n_neighbors=None, mode="connectivity"):
        """Sparse graph of each query's ``n_neighbors`` nearest gallery images.

        Parameters
        ----------
        X : list, 1-D array, Series or one-column table of image paths, default=None
            Query images, as in :meth:`kneighbors`.
        n_neighbors : int, default=None
            Neighbours per query; None uses ``self.n_neighbors``.
        mode : {"connectivity", "distance"}, default="connectivity"
            ``"connectivity"`` (ones) or ``"distance"`` (cosine distances).

        Returns
        -------
        graph : sparse matrix of shape (n_queries, n_samples_fit)
            In CSR format.
        """
        distances, indices = self.kneighbors(X, n_neighbors)
        return neighbors_graph(distances, indices, mode, self.n_samples_fit_)

    def radius_neighbors_graph(self, X=None, radius=None, mode="connectivity",
                               sort_results=False):
        """Sparse graph of the gallery images within ``radius`` of each query.

        Parameters
        ----------
        X : list, 1-D array, Series or one-column table of image paths, default=None
            Query images, as in :meth:`radius_neighbors`.
        radius : float, default=None
            Cosine distance; None uses ``self.radius``.
        mode : {"connectivity", "distance"}, default="connectivity"
            ``"connectivity"`` (ones) or ``"distance"`` (cosine distances).
        sort_results : bool, default=False
            Accepted for scikit-learn compatibility, as in :meth:`radius_neighbors`.

        Returns
        -------
        graph : sparse matrix of shape (n_queries, n_samples_fit)
            In CSR format.
        """
        distances, indices = self.radius_neighbors(X, radius)
        return neighbors_graph(distances, indices, mode, self.n_samples_fit_)
