"""Ranking metrics of retrieval: recall@k, precision@1, R-precision and MAP@R."""

from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.utils._param_validation import Interval, validate_params

__all__ = [
    "encode_labels",
    "mean_average_precision_at_r",
    "precision_at_1",
    "r_precision",
    "recall_at_k",
]

_PARAMETERS = {
    "y_query": ["array-like"],
    "y_gallery": ["array-like"],
    "neighbors": ["array-like"],
    "exclude_self": ["boolean"],
}


def _check_labels(y, name):
    """``y`` as a 1-D object array; a ValueError names a missing label's row."""
    values = np.asarray(y, dtype=object)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"{name} must be one label per item (1-D); got shape {values.shape}.")
    if len(values) == 0:
        raise ValueError(f"{name} is empty.")
    missing = np.flatnonzero(pd.isna(values))
    if len(missing):
        raise ValueError(f"{name}[{missing[0]}] is missing (NaN or None); every query and "
                         "gallery item needs a label.")
    return values


def encode_labels(y_query, y_gallery, *, names=("y_query", "y_gallery")):
    """Integer codes of two label arrays, equal codes for equal labels.

    Labels may be any hashable values (strings, integers, ...), compared
    with ``==``; the label ``1`` and the string ``"1"`` differ.

    Parameters
    ----------
    y_query : array-like of shape (n_queries,)
        Labels of the queries.
    y_gallery : array-like of shape (n_gallery,)
        Labels of the gallery items.
    names : tuple of str, default=("y_query", "y_gallery")
        What error messages call the two arrays.

    Returns
    -------
    query_codes : ndarray of shape (n_queries,), dtype=int64
    gallery_codes : ndarray of shape (n_gallery,), dtype=int64
    gallery_counts : ndarray of shape (n_labels,), dtype=int64
        Gallery items per code.

    Raises
    ------
    ValueError
        If an array is not 1-D, is empty or has a missing label (NaN, None).
    """
    query = _check_labels(y_query, names[0])
    gallery = _check_labels(y_gallery, names[1])
    codes, uniques = pd.factorize(np.concatenate([query, gallery]))
    codes = codes.astype(np.int64)
    query_codes, gallery_codes = codes[:len(query)], codes[len(query):]
    return query_codes, gallery_codes, np.bincount(gallery_codes, minlength=len(uniques))


def _check_neighbors(neighbors, n_queries, n_gallery, exclude_self):
    """``neighbors`` as an int array of distinct, in-range gallery indices, one row a query."""
    neighbors = np.asarray(neighbors)
    if neighbors.ndim != 2:
        raise ValueError("neighbors must be a 2-D array of shape (n_queries, n_neighbors), "
                         f"as NearestNeighbors.kneighbors returns; got shape {neighbors.shape}.")
    if not np.issubdtype(neighbors.dtype, np.integer):
        raise TypeError("neighbors must hold integer indices into y_gallery; got dtype "
                        f"{neighbors.dtype}.")
    if neighbors.shape[0] != n_queries:
        raise ValueError(f"neighbors has {neighbors.shape[0]} rows but y_query has {n_queries} "
                         "labels; give one row of neighbours per query.")
    if neighbors.shape[1] == 0:
        raise ValueError("neighbors has no column; give at least one neighbour per query.")
    outside = np.argwhere((neighbors < 0) | (neighbors >= n_gallery))
    if len(outside):
        row, column = outside[0]
        raise ValueError(f"neighbors[{row}, {column}] = {neighbors[row, column]} is not an "
                         f"index of y_gallery (0 to {n_gallery - 1}).")
    ordered = np.sort(neighbors, axis=1)
    repeated = np.argwhere(ordered[:, 1:] == ordered[:, :-1])
    if len(repeated):
        row, column = repeated[0]
        raise ValueError(f"neighbors row {row} lists gallery item {ordered[row, column]} "
                         "more than once.")
    if exclude_self:
        itself = np.argwhere(neighbors == np.arange(n_queries)[:, None])
        if len(itself):
            row = itself[0, 0]
            raise ValueError(
                f"neighbors row {row} holds the query itself (index {row}), but "
                "exclude_self=True says that each query was left out of its own "
                "neighbours, as NearestNeighbors.kneighbors() without X leaves it out. "
                "Query without the query, or pass exclude_self=False."
            )
    return neighbors


def _matches(y_query, y_gallery, neighbors, exclude_self, n_columns=None):
    """Which ranked neighbours share their query's label, for queries with R > 0.

    Returns
    -------
    matches : ndarray of shape (n_kept, n_columns), dtype=bool
        The first ``n_columns`` neighbours (all of them for None).
    n_relevant : ndarray of shape (n_kept,), dtype=int64
        ``R`` of each kept query.
    """
    query_codes, gallery_codes, counts = encode_labels(y_query, y_gallery)
    if exclude_self and (len(query_codes) != len(gallery_codes)
                         or np.any(query_codes != gallery_codes)):
        raise ValueError(
            "exclude_self=True says that the queries are the gallery, in the same order, "
            f"but y_query ({len(query_codes)} labels) and y_gallery ({len(gallery_codes)} "
            "labels) differ."
        )
    neighbors = _check_neighbors(neighbors, len(query_codes), len(gallery_codes), exclude_self)
    n_relevant = counts[query_codes] - int(exclude_self)
    kept = n_relevant > 0
    if not kept.any():
        raise ValueError(
            "No query has a relevant gallery item (another item with its label), so "
            "retrieval metrics are undefined: every label needs two items at least with "
            "exclude_self=True, or one item in the gallery otherwise."
        )
    ranked = neighbors[kept, :n_columns]
    return gallery_codes[ranked] == query_codes[kept, None], n_relevant[kept]


def _relevance_mask(y_query, y_gallery, neighbors, exclude_self, metric):
    """Matches within the first R neighbours of each kept query, and R."""
    matches, n_relevant = _matches(y_query, y_gallery, neighbors, exclude_self)
    needed = int(n_relevant.max())
    if matches.shape[1] < needed:
        raise ValueError(
            f"{metric} needs the first R neighbours of each query, R being the number of "
            f"gallery items with its label: {needed} columns of neighbors at the most; got "
            f"{matches.shape[1]}. Ask for n_neighbors={needed}."
        )
    matches = matches[:, :needed] & (np.arange(needed) < n_relevant[:, None])
    return matches, n_relevant


@validate_params(
    {**_PARAMETERS, "k": [Interval(Integral, 1, None, closed="left")]},
    prefer_skip_nested_validation=True,
)
def recall_at_k(y_query, y_gallery, neighbors, *, k=1, exclude_self=False):
    """Fraction of queries with an item of their label among their k nearest neighbours.

    This is recall@k as metric-learning papers report it (for example on
    Stanford Online Products): a query is a hit when at least one of its
    ``k`` first neighbours shares its label. It differs from recall in
    information retrieval, the fraction of *all* relevant items found in
    the first ``k``; here one is enough.

    Parameters
    ----------
    y_query : array-like of shape (n_queries,)
        Label of each query (any hashable values: strings, integers).
    y_gallery : array-like of shape (n_gallery,)
        Label of each gallery item.
    neighbors : array-like of int of shape (n_queries, n_neighbors)
        Gallery indices of each query's neighbours, nearest first, as
        :meth:`sklearn.neighbors.NearestNeighbors.kneighbors` returns them
        with ``return_distance=False``. Columns past ``k`` are ignored.
    k : int, default=1
        Neighbours looked at; at most ``n_neighbors``.
    exclude_self : bool, default=False
        The queries are the gallery, in the same order, and each query was
        left out of its own neighbours (``NearestNeighbors.kneighbors()``
        without ``X``, leave-one-out). A query's own item then does not count
        as relevant to it.

    Returns
    -------
    score : float
        Between 0 and 1, the mean over the queries that have an item of
        their label to find.

    Raises
    ------
    ValueError
        If the shapes or lengths disagree, an index is out of range or
        repeated in a row, ``k`` exceeds the columns of ``neighbors``, or no
        query has a relevant item.
    TypeError
        If ``neighbors`` does not hold integers.

    See Also
    --------
    precision_at_1 : The same as ``recall_at_k`` with ``k=1``.
    mean_average_precision_at_r : Rewards the order of all relevant items.
    make_retrieval_scorer : These metrics as a ``scoring`` for ``GridSearchCV``.

    Notes
    -----
    A query is relevant to the gallery items that share its label. Its
    ``R`` is their number: the count of its label in ``y_gallery``, less one
    with ``exclude_self=True``. Queries with ``R = 0`` (no item of their
    label to find) are left out of the average, as pytorch-metric-learning's
    ``AccuracyCalculator`` leaves them out [2]_. If every query is left out,
    the metric is undefined and a ``ValueError`` is raised (where
    ``AccuracyCalculator`` returns 0).

    References
    ----------
    .. [1] K. Musgrave, S. Belongie and S.-N. Lim, "A Metric Learning Reality
       Check", ECCV 2020, https://arxiv.org/abs/2003.08505.
    .. [2] pytorch-metric-learning, ``AccuracyCalculator``,
       https://kevinmusgrave.github.io/pytorch-metric-learning/accuracy_calculation/.

    Examples
    --------
    >>> from sklearn_imgpair.metrics import recall_at_k
    >>> y_gallery = ["cat", "cat", "dog", "dog"]
    >>> neighbors = [[2, 0], [0, 2]]  # nearest first
    >>> recall_at_k(["cat", "dog"], y_gallery, neighbors, k=1)
    0.0
    >>> recall_at_k(["cat", "dog"], y_gallery, neighbors, k=2)
    1.0
    """
    matches, _ = _matches(y_query, y_gallery, neighbors, exclude_self, n_columns=k)
    if k > matches.shape[1]:
        raise ValueError(f"recall_at_k with k={k} needs {k} columns of neighbors; got "
                         f"{matches.shape[1]}.")
    return float(matches[:, :k].any(axis=1).mean())


@validate_params(_PARAMETERS, prefer_skip_nested_validation=True)
def precision_at_1(y_query, y_gallery, neighbors, *, exclude_self=False):
    """Fraction of queries whose nearest neighbour shares their label.

    As pytorch-metric-learning's ``AccuracyCalculator`` computes
    ``precision_at_1``; equal to :func:`recall_at_k` with ``k=1``.

    Parameters
    ----------
    y_query : array-like of shape (n_queries,)
        Label of each query (any hashable values: strings, integers).
    y_gallery : array-like of shape (n_gallery,)
        Label of each gallery item.
    neighbors : array-like of int of shape (n_queries, n_neighbors)
        Gallery indices of each query's neighbours, nearest first; only the
        first column is read.
    exclude_self : bool, default=False
        The queries are the gallery, in the same order, and each query was
        left out of its own neighbours (see :func:`recall_at_k`).

    Returns
    -------
    score : float
        Between 0 and 1.

    Raises
    ------
    ValueError
        If the shapes or lengths disagree, an index is out of range, or no
        query has a relevant item.
    TypeError
        If ``neighbors`` does not hold integers.

    See Also
    --------
    recall_at_k : A hit among the first ``k`` neighbours.

    Notes
    -----
    A query is relevant to the gallery items that share its label. Its
    ``R`` is their number: the count of its label in ``y_gallery``, less one
    with ``exclude_self=True``. Queries with ``R = 0`` (no item of their
    label to find) are left out of the average, as pytorch-metric-learning's
    ``AccuracyCalculator`` leaves them out [2]_. If every query is left out,
    the metric is undefined and a ``ValueError`` is raised (where
    ``AccuracyCalculator`` returns 0).

    References
    ----------
    .. [1] K. Musgrave, S. Belongie and S.-N. Lim, "A Metric Learning Reality
       Check", ECCV 2020, https://arxiv.org/abs/2003.08505.
    .. [2] pytorch-metric-learning, ``AccuracyCalculator``,
       https://kevinmusgrave.github.io/pytorch-metric-learning/accuracy_calculation/.

    Examples
    --------
    >>> from sklearn_imgpair.metrics import precision_at_1
    >>> precision_at_1([0, 1], [0, 0, 1, 1], [[0, 2], [0, 2]])
    0.5
    """
    matches, _ = _matches(y_query, y_gallery, neighbors, exclude_self, n_columns=1)
    return float(matches[:, 0].mean())


@validate_params(_PARAMETERS, prefer_skip_nested_validation=True)
def r_precision(y_query, y_gallery, neighbors, *, exclude_self=False):
    """Mean over the queries of the fraction of relevant items among the first R.

    For a query with ``R`` relevant gallery items (items of its label), its
    R-precision is the number of relevant items among its first ``R``
    neighbours, divided by ``R``. Definition of pytorch-metric-learning's
    ``AccuracyCalculator`` and of Musgrave et al. [1]_.

    Parameters
    ----------
    y_query : array-like of shape (n_queries,)
        Label of each query (any hashable values: strings, integers).
    y_gallery : array-like of shape (n_gallery,)
        Label of each gallery item.
    neighbors : array-like of int of shape (n_queries, n_neighbors)
        Gallery indices of each query's neighbours, nearest first. It needs
        as many columns as the largest ``R``; more are ignored.
    exclude_self : bool, default=False
        The queries are the gallery, in the same order, and each query was
        left out of its own neighbours (see :func:`recall_at_k`); ``R`` is
        then the count of the query's label less one.

    Returns
    -------
    score : float
        Between 0 and 1.

    Raises
    ------
    ValueError
        If the shapes or lengths disagree, an index is out of range or
        repeated in a row, ``neighbors`` has fewer columns than the largest
        ``R`` (the message says how many it needs), or no query has a
        relevant item.
    TypeError
        If ``neighbors`` does not hold integers.

    See Also
    --------
    mean_average_precision_at_r : Also rewards ranking the relevant items first.

    Notes
    -----
    A query is relevant to the gallery items that share its label. Its
    ``R`` is their number: the count of its label in ``y_gallery``, less one
    with ``exclude_self=True``. Queries with ``R = 0`` (no item of their
    label to find) are left out of the average, as pytorch-metric-learning's
    ``AccuracyCalculator`` leaves them out [2]_. If every query is left out,
    the metric is undefined and a ``ValueError`` is raised (where
    ``AccuracyCalculator`` returns 0).

    References
    ----------
    .. [1] K. Musgrave, S. Belongie and S.-N. Lim, "A Metric Learning Reality
       Check", ECCV 2020, https://arxiv.org/abs/2003.08505.
    .. [2] pytorch-metric-learning, ``AccuracyCalculator``,
       https://kevinmusgrave.github.io/pytorch-metric-learning/accuracy_calculation/.

    Examples
    --------
    >>> from sklearn_imgpair.metrics import r_precision
    >>> y = ["a", "a", "a", "b", "b"]
    >>> neighbors = [[1, 3, 2], [3, 0, 4], [0, 1, 3], [0, 4, 1], [0, 1, 2]]
    >>> r_precision(y, y, neighbors, exclude_self=True)  # (1/2 + 1/2 + 1 + 0 + 0) / 5
    0.4
    """
    matches, n_relevant = _relevance_mask(y_query, y_gallery, neighbors, exclude_self,
                                          "r_precision")
    return float(np.mean(matches.sum(axis=1) / n_relevant))


@validate_params(_PARAMETERS, prefer_skip_nested_validation=True)
def mean_average_precision_at_r(y_query, y_gallery, neighbors, *, exclude_self=False):
    """MAP@R: mean average precision over each query's first R neighbours.

    For a query with ``R`` relevant gallery items (items of its label),
    ``AP@R = (1 / R) * sum(P(i) * rel(i) for i in 1..R)``, where ``rel(i)``
    says whether the ``i``-th neighbour is relevant and ``P(i)`` is the
    precision of the first ``i`` neighbours. It is 1 only when the ``R``
    nearest neighbours are exactly the relevant items, and unlike
    :func:`r_precision` it rewards those found earlier. Introduced by
    Musgrave et al. [1]_; computed as pytorch-metric-learning's
    ``AccuracyCalculator`` computes ``mean_average_precision_at_r``.

    Parameters
    ----------
    y_query : array-like of shape (n_queries,)
        Label of each query (any hashable values: strings, integers).
    y_gallery : array-like of shape (n_gallery,)
        Label of each gallery item.
    neighbors : array-like of int of shape (n_queries, n_neighbors)
        Gallery indices of each query's neighbours, nearest first. It needs
        as many columns as the largest ``R``; more are ignored.
    exclude_self : bool, default=False
        The queries are the gallery, in the same order, and each query was
        left out of its own neighbours (see :func:`recall_at_k`); ``R`` is
        then the count of the query's label less one.

    Returns
    -------
    score : float
        Between 0 and 1.

    Raises
    ------
    ValueError
        If the shapes or lengths disagree, an index is out of range or
        repeated in a row, ``neighbors`` has fewer columns than the largest
        ``R`` (the message says how many it needs), or no query has a
        relevant item.
    TypeError
        If ``neighbors`` does not hold integers.

    See Also
    --------
    r_precision : The fraction of relevant items in the first R, in any order.

    Notes
    -----
    A query is relevant to the gallery items that share its label. Its
    ``R`` is their number: the count of its label in ``y_gallery``, less one
    with ``exclude_self=True``. Queries with ``R = 0`` (no item of their
    label to find) are left out of the average, as pytorch-metric-learning's
    ``AccuracyCalculator`` leaves them out [2]_. If every query is left out,
    the metric is undefined and a ``ValueError`` is raised (where
    ``AccuracyCalculator`` returns 0).

    References
    ----------
    .. [1] K. Musgrave, S. Belongie and S.-N. Lim, "A Metric Learning Reality
       Check", ECCV 2020, https://arxiv.org/abs/2003.08505.
    .. [2] pytorch-metric-learning, ``AccuracyCalculator``,
       https://kevinmusgrave.github.io/pytorch-metric-learning/accuracy_calculation/.

    Examples
    --------
    >>> from sklearn_imgpair.metrics import mean_average_precision_at_r
    >>> y = ["a", "a", "a", "b", "b"]
    >>> neighbors = [[1, 3, 2], [3, 0, 4], [0, 1, 3], [0, 4, 1], [0, 1, 2]]
    >>> mean_average_precision_at_r(y, y, neighbors, exclude_self=True)  # (1/2 + 1/4 + 1) / 5
    0.35
    """
    matches, n_relevant = _relevance_mask(y_query, y_gallery, neighbors, exclude_self,
                                          "mean_average_precision_at_r")
    precision = np.cumsum(matches, axis=1) / np.arange(1, matches.shape[1] + 1)
    return float(np.mean((precision * matches).sum(axis=1) / n_relevant))
