"""make_retrieval_scorer: a ranking metric of leave-one-out neighbours as a ``scoring``."""

from numbers import Integral

import numpy as np
from sklearn.neighbors import NearestNeighbors
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

from sklearn_imgpair.metrics._ranking import (
    encode_labels,
    mean_average_precision_at_r,
    precision_at_1,
    r_precision,
    recall_at_k,
)

__all__ = ["make_retrieval_scorer"]

_METRICS = {
    "recall_at_k": recall_at_k,
    "precision_at_1": precision_at_1,
    "r_precision": r_precision,
    "mean_average_precision_at_r": mean_average_precision_at_r,
}
# Metrics that read each query's first R neighbours rather than a fixed number.
_R_METRICS = {"r_precision", "mean_average_precision_at_r"}
# Unreadable images named in an error message, at most.
_N_NAMED = 5


def _embed(estimator, X):
    """X's embeddings, float64: by ``transform`` if the estimator has it, else by ``embed``."""
    if hasattr(estimator, "transform"):
        embeddings = estimator.transform(X)
    elif hasattr(estimator, "embed"):
        embeddings = estimator.embed(X)
    else:
        raise TypeError(
            "A retrieval scorer needs an estimator that turns X into embeddings, with "
            f"transform(X) or embed(X); {type(estimator).__name__} has neither."
        )
    return np.asarray(embeddings, dtype=np.float64)


def _describe_rows(X, rows):
    """``X[3] ('a.png')`` for each row, or just ``X[3]`` when X cannot be indexed so."""
    try:
        values = np.asarray(X, dtype=object).reshape(-1)
    except (TypeError, ValueError):
        values = None
    return ", ".join(f"X[{row}]" if values is None or row >= len(values)
                     else f"X[{row}] ({values[row]!r})" for row in rows[:_N_NAMED])


def _check_embeddings(embeddings, X, n_samples):
    """Raise a ValueError for a wrong shape or for rows that are not finite."""
    if embeddings.ndim != 2:
        raise ValueError("The estimator's embeddings must be a 2-D array, one row per image; "
                         f"got shape {embeddings.shape}.")
    if embeddings.shape[0] != n_samples:
        raise ValueError(f"The estimator gave {embeddings.shape[0]} embeddings for X, but y "
                         f"has {n_samples} labels; give one label per image.")
    bad = np.flatnonzero(~np.isfinite(embeddings).all(axis=1))
    if len(bad):
        more = f" and {len(bad) - _N_NAMED} more" if len(bad) > _N_NAMED else ""
        raise ValueError(
            f"{len(bad)} of {n_samples} images have no embedding (NaN or infinite values, "
            f"as unreadable images get with on_error='warn'): {_describe_rows(X, bad)}{more}. "
            "A retrieval score ranks every image against all the others; remove or "
            "replace these images."
        )


class _RetrievalScorer:
    """Callable ``scorer(estimator, X, y)``: a ranking metric of X's leave-one-out neighbours.

    Made by :func:`make_retrieval_scorer`; a class rather than a closure so
    that it pickles, as parallel searches need.
    """

    def __init__(self, metric, k):
        self.metric = metric
        self.k = k

    def __repr__(self):
        k = f", k={self.k}" if self.metric == "recall_at_k" else ""
        return f"make_retrieval_scorer(metric={self.metric!r}{k})"

    def _n_neighbors(self, y):
        """Neighbours per image that the metric reads (the error if too few), and len(y)."""
        codes, _, counts = encode_labels(y, y, names=("y", "y"))
        if self.metric in _R_METRICS:
            n_neighbors = int(counts.max()) - 1
            if n_neighbors == 0:
                raise ValueError(
                    f"Every label of y appears once among the {len(codes)} images scored, so "
                    "no image has another of its identity to find. Each scored split needs "
                    "two images of an identity at least (StratifiedKFold keeps each label in "
                    "every fold)."
                )
            return n_neighbors, len(codes)
        n_neighbors = self.k if self.metric == "recall_at_k" else 1
        if n_neighbors > len(codes) - 1:
            raise ValueError(
                f"{self!r} ranks {n_neighbors} other images for each image, so it needs "
                f"{n_neighbors + 1} images at least; got {len(codes)}."
            )
        return n_neighbors, len(codes)

    def __call__(self, estimator, X, y):
        """Score an estimator that embeds images by a ranking metric.

        Parameters
        ----------
        estimator : estimator
            Fitted; with ``transform(X)`` (:class:`~sklearn_imgpair.ImageEmbedder`,
            or a pipeline ending in one) or else ``embed(X)``, that return one
            embedding per image.
        X : array-like of shape (n_samples,)
            Image paths (or what the estimator embeds).
        y : array-like of shape (n_samples,)
            Identity labels: images of one label show the same thing.

        Returns
        -------
        score : float
        """
        embeddings = _embed(estimator, X)
        n_neighbors, n_samples = self._n_neighbors(y)
        _check_embeddings(embeddings, X, n_samples)
        neighbors = NearestNeighbors(n_neighbors=n_neighbors, metric="cosine",
                                     algorithm="brute").fit(embeddings)
        indices = neighbors.kneighbors(return_distance=False)  # each image left out of its own
        kwargs = {"k": self.k} if self.metric == "recall_at_k" else {}
        return _METRICS[self.metric](y, y, indices, exclude_self=True, **kwargs)


@validate_params(
    {
        "metric": [StrOptions(set(_METRICS))],
        "k": [Interval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def make_retrieval_scorer(metric="recall_at_k", *, k=1):
    """Make a scorer that ranks images by cosine similarity of their embeddings.

    The scorer, called as ``scorer(estimator, X, y)`` by
    :class:`~sklearn.model_selection.GridSearchCV`,
    :func:`~sklearn.model_selection.cross_validate` and the like (alone or in
    a dict of scorers), embeds the images ``X`` with the fitted estimator,
    lets each image query all the others (leave-one-out: exact cosine
    nearest neighbours, :class:`~sklearn.neighbors.NearestNeighbors` with
    ``metric="cosine"`` and ``algorithm="brute"``) and scores the ranking
    with ``y`` as identity labels: images of one label show the same
    thing, so they are each other's relevant items. This is the usual
    evaluation of metric learning, where the test images are both queries
    and gallery.

    Parameters
    ----------
    metric : {"recall_at_k", "precision_at_1", "r_precision", \
            "mean_average_precision_at_r"}, default="recall_at_k"
        The ranking metric, computed with ``exclude_self=True``: see
        :func:`recall_at_k`, :func:`precision_at_1`, :func:`r_precision`,
        :func:`mean_average_precision_at_r`.
    k : int, default=1
        Neighbours that ``recall_at_k`` looks at; ignored by the other
        metrics.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y) -> float``, greater is better. The
        estimator embeds with ``transform(X)`` when it has it
        (:class:`~sklearn_imgpair.ImageEmbedder`, a pipeline ending in one),
        else with ``embed(X)``; either returns an ``(n_samples, n_features)``
        array. The scorer raises a ``ValueError`` naming the images whose
        embedding holds NaN (unreadable images with ``on_error="warn"``), and
        one when the scored split is too small for the metric (fewer than
        ``k + 1`` images, or no label seen twice).

    See Also
    --------
    recall_at_k, precision_at_1, r_precision, mean_average_precision_at_r :
        The metrics on precomputed neighbours.

    Notes
    -----
    Each scored split (a test fold) must hold several images of its
    identities: split with :class:`~sklearn.model_selection.StratifiedKFold`
    (every identity in every fold), or with
    :class:`~sklearn.model_selection.GroupKFold` and ``groups=y`` to score on
    identities never seen in fitting. Queries whose identity has no other
    image in the split are left out of the average.

    In a search, next to other scorers::

        scoring = {"recall@1": make_retrieval_scorer("recall_at_k", k=1),
                   "map@r": make_retrieval_scorer("mean_average_precision_at_r")}
        search = GridSearchCV(ImageEmbedder(...), param_grid, scoring=scoring,
                              refit="map@r", cv=StratifiedKFold(3))
        search.fit(paths, identities)

    Examples
    --------
    >>> import os
    >>> from sklearn_imgpair import ImageEmbedder
    >>> from sklearn_imgpair.metrics import make_retrieval_scorer
    >>> paths = sorted(set(X.ravel()))  # images of the synthetic products
    >>> products = [os.path.basename(path).split("_")[0] for path in paths]
    >>> embedder = ImageEmbedder(pretrained=False, image_size=32, model_kwargs=TINY_SWIN)
    >>> scorer = make_retrieval_scorer("mean_average_precision_at_r")
    >>> scorer
    make_retrieval_scorer(metric='mean_average_precision_at_r')
    >>> 0.0 <= scorer(embedder.fit(), paths, products) <= 1.0
    True
    """
    return _RetrievalScorer(metric, k)
