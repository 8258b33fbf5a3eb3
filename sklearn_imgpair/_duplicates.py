"""Duplicates and groups of matching images, found through the neighbour search."""

import math
from numbers import Integral, Real

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions, validate_params
from sklearn.utils.validation import validate_data

from sklearn_imgpair._images.lookup import find_cells
from sklearn_imgpair._images.unreadable import ON_ERROR_OPTIONS
from sklearn_imgpair._images.validation import check_paths, distinct_paths
from sklearn_imgpair._neighbors import ImageNeighbors

__all__ = ["ImageMatchClustering", "find_duplicates"]


def _cosine_radius(neighbors, threshold):
    """The cosine distance below which the classifier's probability can pass ``threshold``.

    The head's probability increases with the cosine, so it exceeds
    ``threshold`` exactly above the cosine whose logit is ``logit(threshold)``
    (``CosineMatchHead.inverse``); a little slack keeps float rounding from
    losing a pair at the boundary (the probability itself decides).
    """
    if threshold >= 1.0:
        return None  # no probability exceeds 1
    head = neighbors.embedder_.module_.head
    logit = -math.inf if threshold <= 0.0 else math.log(threshold / (1.0 - threshold))
    cosine = head.inverse(logit)
    return min(max(1.0 - cosine + 1e-6, 0.0), 2.0)


def _match_edges(neighbors, threshold, n_neighbors):
    """Pairs ``i < j`` of gallery rows whose match probability exceeds ``threshold``.

    Returns
    -------
    first, second : ndarray of int
    probabilities : ndarray of float64
        Sorted by decreasing probability, then by ``first`` and ``second``.
    """
    n_images = neighbors.n_samples_fit_
    empty = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0, np.float64)
    if n_images < 2:
        return empty
    if n_neighbors is None:
        radius = _cosine_radius(neighbors, threshold)
        if radius is None:
            return empty
        distances, indices = neighbors.radius_neighbors(radius=radius)
        rows = np.repeat(np.arange(n_images), [len(row) for row in indices])
        columns = np.concatenate(list(indices)).astype(np.int64)
        distances = np.concatenate(list(distances))
    else:
        distances, indices = neighbors.kneighbors(n_neighbors=min(n_neighbors, n_images - 1))
        rows = np.repeat(np.arange(n_images), indices.shape[1])
        columns, distances = indices.ravel(), distances.ravel()
    probabilities = neighbors.match_proba(distances)
    keep = probabilities > threshold
    first, second = np.minimum(rows, columns)[keep], np.maximum(rows, columns)[keep]
    probabilities = probabilities[keep]
    # Each unordered pair once (found from both ends, or from one with k neighbours).
    _, unique = np.unique(first * n_images + second, return_index=True)
    first, second, probabilities = first[unique], second[unique], probabilities[unique]
    order = np.lexsort((second, first, -probabilities))
    return first[order], second[order], probabilities[order]


def _fit_neighbors(X, classifier, on_error, chunk_size):
    """Distinct images of ``X``, a search over them, and each row's image."""
    if classifier is None:
        raise ValueError("A fitted ImagePairClassifier is needed: the match probability and "
                         "its threshold are the classifier's.")
    paths = check_paths(X)
    unique, _, inverse = distinct_paths(paths)
    neighbors = ImageNeighbors(classifier=classifier, on_error=on_error,
                               chunk_size=chunk_size).fit(unique)
    # The gallery row of each image of X, found by content; -1 for those left out (unreadable).
    return neighbors, find_cells(unique, neighbors.gallery_)[inverse.reshape(-1)]


def _threshold(threshold, neighbors):
    return neighbors.match_threshold_ if threshold is None else float(threshold)


@validate_params(
    {
        "X": ["array-like"],
        "classifier": [HasMethods(["predict_proba"])],
        "threshold": [Interval(Real, 0, 1, closed="both"), None],
        "n_neighbors": [Interval(Integral, 1, None, closed="left"), None],
        "on_error": [StrOptions(ON_ERROR_OPTIONS)],
        "chunk_size": [Interval(Integral, 1, None, closed="left"), None],
    },
    prefer_skip_nested_validation=True,
)
def find_duplicates(X, classifier, *, threshold=None, n_neighbors=None, on_error="raise",
                    chunk_size=None):
    """Find the pairs of images that the classifier calls a match.

    Each distinct image is embedded once and the pairs come from the
    neighbour search of :class:`ImageNeighbors`, so the n² pairs are never
    scored one by one.

    Parameters
    ----------
    X : list, 1-D array, Series or one-column table of image paths
        The images; a path given twice is one image.
    classifier : ImagePairClassifier or FrozenEstimator
        A fitted classifier: its network embeds, its head gives the
        probability.
    threshold : float, default=None
        A pair is a duplicate when its match probability exceeds it, as in
        the classifier's ``predict``; None uses the classifier's
        ``threshold``.
    n_neighbors : int, default=None
        None finds every pair above the threshold (an exact search by
        cosine radius: the probability grows with the cosine). An integer
        looks only among each image's ``n_neighbors`` nearest images: faster
        on large folders, but an image with more duplicates than that may
        miss some.
    on_error : {"raise", "warn"}, default="raise"
        ``"warn"`` leaves unreadable images out, with one warning.
    chunk_size : int, default=None
        Images compared with all the others at once (see
        :class:`ImageNeighbors`).

    Returns
    -------
    duplicates : DataFrame
        Columns ``Image1``, ``Image2`` (``Image1`` first in ``X``) and
        ``probability``: each unordered pair once, no image paired with
        itself, most likely first.

    Examples
    --------
    >>> from sklearn_imgpair import ImagePairClassifier, find_duplicates
    >>> clf = ImagePairClassifier(pretrained=False, image_size=32, model_kwargs=TINY_SWIN,
    ...                           max_epochs=1).fit(X, y)
    >>> pairs = find_duplicates(X[:10, 0], clf, threshold=0.5)
    >>> list(pairs.columns)
    ['Image1', 'Image2', 'probability']
    """
    neighbors, _ = _fit_neighbors(X, classifier, on_error, chunk_size)
    edges = _match_edges(neighbors, _threshold(threshold, neighbors), n_neighbors)
    return _pairs_table(neighbors, *edges)


def _pairs_table(neighbors, first, second, probabilities):
    """The table of :func:`find_duplicates` from gallery rows and their probabilities."""
    return pd.DataFrame({"Image1": neighbors.gallery_[first].astype(object),
                         "Image2": neighbors.gallery_[second].astype(object),
                         "probability": probabilities})


def _complete_linkage(neighbors, first, second, threshold):
    """Merge along edges, most likely first, while every pair inside a group matches."""
    members = {row: [row] for row in range(neighbors.n_samples_fit_)}
    group = np.arange(neighbors.n_samples_fit_)
    for a, b in zip(group[first], group[second]):
        a, b = group[a], group[b]  # groups may have merged since
        if a == b:
            continue
        cosines = neighbors.embeddings_[members[a]] @ neighbors.embeddings_[members[b]].T
        if neighbors.match_proba(1.0 - cosines.astype(np.float64)).min() <= threshold:
            continue
        if len(members[a]) < len(members[b]):
            a, b = b, a
        group[members[b]] = a
        members[a].extend(members.pop(b))
    return group


class ImageMatchClustering(ClusterMixin, BaseEstimator):
    """Group images whose match probability passes the classifier's threshold.

    Candidate pairs come from the neighbour search (:func:`find_duplicates`),
    never from scoring all n² pairs.

    Parameters
    ----------
    classifier : ImagePairClassifier or FrozenEstimator, default=None
        A fitted classifier (required; None only so that the estimator can be
        built without arguments, as scikit-learn expects).
    threshold : float, default=None
        Match probability a pair must exceed; None uses the classifier's.
    linkage : {"single", "complete"}, default="single"
        ``"single"``: groups are the connected components of the graph of
        matching pairs (a chain of matches joins two images). ``"complete"``:
        pairs are merged most likely first, and two groups only when every
        pair across them matches, so that within a group every pair matches
        (a greedy complete linkage).
    n_neighbors : int, default=None
        Candidates per image (see :func:`find_duplicates`); None takes every
        pair above the threshold.
    on_error : {"raise", "warn"}, default="raise"
        ``"warn"``: an unreadable image gets the label -1, with one warning.
    chunk_size : int, default=None
        See :class:`ImageNeighbors`.

    Attributes
    ----------
    labels_ : ndarray of shape (n_images,)
        Group of each row of ``X``, numbered from 0 in order of first
        appearance; rows of one path share a group.
    n_clusters_ : int
        Number of groups.
    neighbors_ : ImageNeighbors
        The search over the distinct images.
    duplicates_ : DataFrame
        The pairs above the threshold that the groups were built from, as
        :func:`find_duplicates` returns them (``Image1``, ``Image2``,
        ``probability``); with ``linkage="complete"`` a pair may join two
        groups that stayed apart.
    n_features_in_ : int
        Always 1: one column of images.
    feature_names_in_ : ndarray of shape (1,)
        The column name, when ``X`` was a DataFrame with string column names.

    Examples
    --------
    >>> from sklearn_imgpair import ImageMatchClustering, ImagePairClassifier
    >>> clf = ImagePairClassifier(pretrained=False, image_size=32, model_kwargs=TINY_SWIN,
    ...                           max_epochs=1).fit(X, y)
    >>> labels = ImageMatchClustering(clf).fit_predict(X[:10, 0])
    >>> labels.shape
    (10,)
    """

    _parameter_constraints = {
        "classifier": [HasMethods(["predict_proba"]), None],
        "threshold": [Interval(Real, 0, 1, closed="both"), None],
        "linkage": [StrOptions({"single", "complete"})],
        "n_neighbors": [Interval(Integral, 1, None, closed="left"), None],
        "on_error": [StrOptions(ON_ERROR_OPTIONS)],
        "chunk_size": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(self, classifier=None, *, threshold=None, linkage="single", n_neighbors=None,
                 on_error="raise", chunk_size=None):
        self.classifier = classifier
        self.threshold = threshold
        self.linkage = linkage
        self.n_neighbors = n_neighbors
        self.on_error = on_error
        self.chunk_size = chunk_size

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.one_d_array = True
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags

    def fit(self, X, y=None):
        """Group the images of ``X``.

        Parameters
        ----------
        X : list, 1-D array, Series or one-column table of image paths
            The images to group; a path given twice is one image.
        y : None
            Ignored.

        Returns
        -------
        self : ImageMatchClustering
        """
        self._validate_params()
        neighbors, image_rows = _fit_neighbors(X, self.classifier, self.on_error,
                                               self.chunk_size)
        threshold = _threshold(self.threshold, neighbors)
        first, second, probabilities = _match_edges(neighbors, threshold, self.n_neighbors)
        n_images = neighbors.n_samples_fit_
        if self.linkage == "single":
            graph = sparse.coo_matrix((np.ones(len(first)), (first, second)),
                                      shape=(n_images, n_images))
            _, group = connected_components(graph, directed=False)
        else:
            group = _complete_linkage(neighbors, first, second, threshold)
        row_groups = np.where(image_rows >= 0, group[np.maximum(image_rows, 0)], -1)
        readable = row_groups[row_groups >= 0]
        _, first_seen, numbered = np.unique(readable, return_index=True, return_inverse=True)
        rank = np.argsort(np.argsort(first_seen))  # groups in order of first appearance
        labels = np.full(len(row_groups), -1, dtype=np.int64)
        labels[row_groups >= 0] = rank[numbered]
        self.labels_ = labels
        self.n_clusters_ = len(first_seen)
        self.neighbors_ = neighbors
        self.duplicates_ = _pairs_table(neighbors, first, second, probabilities)
        # Sets or deletes feature_names_in_; scikit-learn counts no features in
        # a 1-D list of strings (ensure_2d=False), so we set the count.
        validate_data(self, X, skip_check_array=True, ensure_2d=False)
        self.n_features_in_ = 1
        return self
