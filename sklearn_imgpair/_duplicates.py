"""Duplicates and groups of matching images, found through the neighbour search."""

import warnings
from numbers import Integral, Real

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.frozen import FrozenEstimator
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions, validate_params
from sklearn.utils.validation import check_is_fitted, validate_data

from sklearn_imgpair._images.lookup import find_cells
from sklearn_imgpair._images.unreadable import ON_ERROR_OPTIONS
from sklearn_imgpair._images.validation import check_paths, distinct_paths
from sklearn_imgpair._neighbors import ImageNeighbors
from sklearn_imgpair._search.scores import (
    COSINE_THRESHOLD,
    cosine_radius,
    pair_scores,
    resolve_threshold,
    score_name,
)

__all__ = ["COSINE_THRESHOLD", "ImageMatchClustering", "find_duplicates", "pair_scores",
           "resolve_threshold", "score_name"]

# Parameter constraints shared by find_duplicates and ImageMatchClustering.
_CONSTRAINTS = {
    "classifier": [HasMethods(["predict_proba"]), None],
    "embedder": [HasMethods(["fit", "transform"]), None],
    "search": [ImageNeighbors, FrozenEstimator, None],
    # A probability (0 to 1) with a classifier, a cosine (-1 to 1) without: see
    # resolve_threshold.
    "threshold": [Interval(Real, -1, 1, closed="both"), None],
    "n_neighbors": [Interval(Integral, 1, None, closed="left"), None],
    "on_error": [StrOptions(ON_ERROR_OPTIONS)],
    "chunk_size": [Interval(Integral, 1, None, closed="left"), None],
    "verbose": ["verbose"],
}


def _match_edges(neighbors, threshold, n_neighbors, among=None):
    """Pairs ``i < j`` of gallery rows whose score exceeds ``threshold``.

    ``among`` (a boolean mask of the gallery's rows, None for all) keeps
    only the pairs of two rows in it: the gallery is searched whole, and
    pairs reaching outside ``among`` are dropped.

    Returns
    -------
    first, second : ndarray of int
    scores : ndarray of float64
        Match probabilities, or cosine similarities for a search without a
        classifier; sorted by decreasing score, then by ``first`` and ``second``.
    """
    n_images = neighbors.n_samples_fit_
    empty = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0, np.float64)
    if n_images < 2:
        return empty
    if n_neighbors is None:
        radius = cosine_radius(neighbors, threshold)
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
    if among is not None:
        inside = among[rows] & among[columns]
        rows, columns, distances = rows[inside], columns[inside], distances[inside]
    scores = pair_scores(neighbors, distances)
    keep = scores > threshold
    first, second = np.minimum(rows, columns)[keep], np.maximum(rows, columns)[keep]
    scores = scores[keep]
    # Each unordered pair once (found from both ends, or from one with k neighbours).
    _, unique = np.unique(first * n_images + second, return_index=True)
    first, second, scores = first[unique], second[unique], scores[unique]
    order = np.lexsort((second, first, -scores))
    return first[order], second[order], scores[order]


def _check_source(caller, classifier, embedder, search):
    """``ValueError`` unless exactly one of ``classifier``, ``embedder``, ``search`` is given."""
    given = [name for name, value in [("classifier", classifier), ("embedder", embedder),
                                      ("search", search)] if value is not None]
    if len(given) != 1:
        raise ValueError(
            f"{caller} needs exactly one of classifier= (a fitted ImagePairClassifier), "
            "embedder= (an ImageEmbedder) or search= (a fitted ImageNeighbors); got "
            f"{' and '.join(given) if given else 'none'}.")


def _fitted_search(search):
    """The fitted :class:`ImageNeighbors` in ``search``, out of a FrozenEstimator."""
    inner = search.estimator if isinstance(search, FrozenEstimator) else search
    if not isinstance(inner, ImageNeighbors):
        raise TypeError(f"search must be a fitted ImageNeighbors, or one in a FrozenEstimator; "
                        f"got a FrozenEstimator of {type(inner).__name__}.")
    check_is_fitted(inner)
    return inner


def _rows_in(search, cells, first):
    """The gallery row of each of ``cells``: by content, else by path; ``ValueError`` if none.

    ``first`` (each cell's first row in ``X``) names an image that is not in
    the gallery.
    """
    with warnings.catch_warnings():
        # cells are normalised already: their column name, if X had one, is gone.
        warnings.filterwarnings("ignore", message="X does not have valid feature names",
                                category=UserWarning)
        rows = search.gallery_rows(cells, match="content")
        by_path = rows < 0
        if by_path.any():
            rows[by_path] = search.gallery_rows(cells[by_path], match="path")
    if (rows < 0).any():
        missing = np.flatnonzero(rows < 0)  # in order of first row in X
        image = cells[missing[0]]
        image = repr(image) if isinstance(image, str) else f"an image ({type(image).__name__})"
        raise ValueError(f"X[{first[missing[0]]}] = {image} is not in the search's gallery (of "
                         f"{search.n_samples_fit_} images); {len(missing)} image(s) of X "
                         "are not. Add them with search.partial_fit first.")
    return rows


def _fit_neighbors(X, caller, *, classifier, embedder, search, on_error, chunk_size, verbose):
    """A search holding the distinct images of ``X``, each row's gallery row, and a mask.

    Rows left out of the gallery (unreadable, ``on_error="warn"``) get -1.
    The mask marks the gallery rows of ``X`` (None: all of them): a given
    ``search`` is used as it is, never copied, and may hold other images.
    """
    _check_source(caller, classifier, embedder, search)
    paths = check_paths(X)
    unique, first, inverse = distinct_paths(paths)
    if search is not None:
        neighbors = _fitted_search(search)
        rows = _rows_in(neighbors, unique, first)
        among = np.zeros(neighbors.n_samples_fit_, dtype=bool)
        among[rows] = True
    else:
        neighbors = ImageNeighbors(embedder, classifier=classifier, on_error=on_error,
                                   chunk_size=chunk_size, verbose=verbose).fit(unique)
        # The gallery row of each image of X, found by content.
        rows, among = find_cells(unique, neighbors.gallery_), None
    return neighbors, rows[inverse.reshape(-1)], among


@validate_params(
    {"X": ["array-like"], **_CONSTRAINTS},
    prefer_skip_nested_validation=True,
)
def find_duplicates(X, classifier=None, *, embedder=None, search=None, threshold=None,
                    n_neighbors=None, on_error="raise", chunk_size=None, verbose=0):
    """Find the pairs of images that match: by a classifier, or by the cosine of embeddings.

    Each distinct image is embedded once and the pairs come from the
    neighbour search of :class:`ImageNeighbors`, so the n² pairs are never
    scored one by one. Give exactly one of ``classifier``, ``embedder`` and
    ``search``.

    Parameters
    ----------
    X : list, 1-D array, Series or one-column table of image paths
        The images; a path given twice is one image.
    classifier : ImagePairClassifier or FrozenEstimator, default=None
        A fitted classifier: its network embeds, its head gives the match
        probability.
    embedder : ImageEmbedder, default=None
        An embedder, e.g. ``ImageEmbedder()`` with a pretrained backbone and
        no training run: cloned and fitted as :class:`ImageNeighbors` does.
        Pairs are then scored by the cosine similarity of their embeddings.
    search : ImageNeighbors or FrozenEstimator, default=None
        A fitted search, e.g. ``ImageNeighbors.load("catalogue.safetensors")``,
        whose stored vectors are used: nothing is embedded. Every image of
        ``X`` must be in its gallery: found by content (the same unchanged
        file, by a relative or an absolute path, or the same image in
        memory), else by the same path string as in ``search.gallery_``
        (see :meth:`ImageNeighbors.gallery_rows`). The search runs over its
        whole gallery, as it is (never copied nor changed), and only the
        pairs of two images of ``X`` are kept; with ``n_neighbors``, the
        candidates of an image are its nearest in the whole gallery.
        Probabilities if it was built on a classifier, cosine similarities
        otherwise. ``on_error``, ``chunk_size`` and ``verbose`` do not
        apply: its progress bars are the search's own ``verbose``. Wrap it
        in :class:`~sklearn.frozen.FrozenEstimator` to keep it fitted
        through :func:`~sklearn.base.clone`.
    threshold : float, default=None
        A pair is a duplicate when its score exceeds it. With a classifier
        (or a search built on one) the score is the match probability (0 to
        1), as in the classifier's ``predict``, and None uses the
        classifier's ``threshold``. With an embedder (or a search without a
        classifier) the score is the cosine similarity of the two embeddings
        (-1 to 1; 1 for the same image), and None uses 0.9 (imagededup's
        default). Cosines depend on the backbone: raise it to keep only
        near-identical copies, lower it to find other views of one object,
        looking at the ``similarity`` of a first run on your images.
    n_neighbors : int, default=None
        None finds every pair above the threshold (an exact search by
        cosine radius: the score grows with the cosine). An integer looks
        only among each image's ``n_neighbors`` nearest images: faster on
        large folders, but an image with more duplicates than that may miss
        some.
    on_error : {"raise", "warn"}, default="raise"
        ``"warn"`` leaves unreadable images out, with one warning.
    chunk_size : int, default=None
        Images compared with all the others at once (see
        :class:`ImageNeighbors`).
    verbose : int, default=0
        1 or more shows progress bars (on stderr) of the images embedded and
        of the search for their neighbours (with ``search``, its own
        ``verbose`` does).

    Returns
    -------
    duplicates : DataFrame
        Columns ``Image1``, ``Image2`` (``Image1`` first in ``X``; with
        ``search``, first in its gallery and as its gallery holds them)
        and ``probability`` (with a classifier's head)
        or ``similarity`` (the cosine, without one): each unordered pair
        once, no image paired with itself, highest score first.

    Raises
    ------
    ValueError
        If not exactly one of ``classifier``, ``embedder`` and ``search`` is
        given, an image of ``X`` is not in ``search``'s gallery, or a
        probability threshold is negative.

    See Also
    --------
    ImageMatchClustering : Groups of duplicates.

    Examples
    --------
    >>> from sklearn_imgpair import ImageEmbedder, ImagePairClassifier, find_duplicates
    >>> clf = ImagePairClassifier(pretrained=False, image_size=32, model_kwargs=TINY_SWIN,
    ...                           max_epochs=1).fit(X, y)
    >>> pairs = find_duplicates(X[:10, 0], clf, threshold=0.5)
    >>> list(pairs.columns)
    ['Image1', 'Image2', 'probability']

    Without a training run, by the cosine of a backbone's embeddings:

    >>> embedder = ImageEmbedder(pretrained=False, image_size=32, model_kwargs=TINY_SWIN)
    >>> pairs = find_duplicates(X[:10, 0], embedder=embedder, threshold=0.99)
    >>> list(pairs.columns)
    ['Image1', 'Image2', 'similarity']
    """
    neighbors, _, among = _fit_neighbors(X, "find_duplicates", classifier=classifier,
                                         embedder=embedder, search=search, on_error=on_error,
                                         chunk_size=chunk_size, verbose=verbose)
    edges = _match_edges(neighbors, resolve_threshold(threshold, neighbors), n_neighbors,
                         among)
    return _pairs_table(neighbors, *edges)


def _pairs_table(neighbors, first, second, scores):
    """The table of :func:`find_duplicates` from gallery rows and their scores."""
    return pd.DataFrame({"Image1": neighbors.gallery_[first].astype(object),
                         "Image2": neighbors.gallery_[second].astype(object),
                         score_name(neighbors): scores})


def _complete_linkage(neighbors, first, second, threshold):
    """Merge along edges, highest score first, while every pair inside a group matches.

    Returns the group of each gallery row; a row on no edge is its own group.
    """
    group = np.arange(neighbors.n_samples_fit_)
    members = {}  # the rows of each group of several rows
    for a, b in zip(first, second):
        a, b = group[a], group[b]  # groups may have merged since
        if a == b:
            continue
        ours, theirs = members.get(a, [a]), members.get(b, [b])
        cosines = neighbors.embeddings_[ours] @ neighbors.embeddings_[theirs].T
        if pair_scores(neighbors, 1.0 - cosines.astype(np.float64)).min() <= threshold:
            continue
        if len(ours) < len(theirs):
            a, b, ours, theirs = b, a, theirs, ours
        group[theirs] = a
        members[a] = ours + theirs
        members.pop(b, None)
    return group


class ImageMatchClustering(ClusterMixin, BaseEstimator):
    """Group images that match: by a classifier, or by the cosine of embeddings.

    Candidate pairs come from the neighbour search (:func:`find_duplicates`),
    never from scoring all n² pairs. Give exactly one of ``classifier``,
    ``embedder`` and ``search``; it is checked in ``fit``.

    Parameters
    ----------
    classifier : ImagePairClassifier or FrozenEstimator, default=None
        A fitted classifier: pairs are scored by its match probability.
    embedder : ImageEmbedder, default=None
        An embedder (cloned and fitted, as :class:`ImageNeighbors` does):
        pairs are scored by the cosine similarity of their embeddings, with
        no training run (see :func:`find_duplicates`).
    search : ImageNeighbors or FrozenEstimator, default=None
        A fitted search whose stored vectors are used, nothing embedded:
        every image of ``X`` must be in its gallery (see
        :func:`find_duplicates`); it is used as it is, not copied nor
        changed. Wrap it in :class:`~sklearn.frozen.FrozenEstimator` to
        keep it fitted through :func:`~sklearn.base.clone` (as
        ``GridSearchCV`` clones): a plain search is cloned unfitted.
    threshold : float, default=None
        Score a pair must exceed: the match probability (0 to 1) with a
        classifier (None: the classifier's ``threshold``), the cosine
        similarity (-1 to 1) without one (None: 0.9).
    linkage : {"single", "complete"}, default="single"
        ``"single"``: groups are the connected components of the graph of
        matching pairs (a chain of matches joins two images). ``"complete"``:
        pairs are merged highest score first, and two groups only when every
        pair across them matches, so that within a group every pair matches
        (a greedy complete linkage).
    n_neighbors : int, default=None
        Candidates per image (see :func:`find_duplicates`); None takes every
        pair above the threshold.
    on_error : {"raise", "warn"}, default="raise"
        ``"warn"``: an unreadable image gets the label -1, with one warning.
    chunk_size : int, default=None
        See :class:`ImageNeighbors`.
    verbose : int, default=0
        1 or more shows progress bars (on stderr) of the images embedded and
        of the search for their neighbours. With ``search``, the bars are
        the search's own ``verbose``.

    Attributes
    ----------
    labels_ : ndarray of shape (n_images,)
        Group of each row of ``X``, numbered from 0 in order of first
        appearance; rows of one path share a group.
    n_clusters_ : int
        Number of groups.
    neighbors_ : ImageNeighbors
        The search over the distinct images. With ``search``, the search
        given (out of its FrozenEstimator); not copied: its gallery may
        hold images that are not in ``X``.
    duplicates_ : DataFrame
        The pairs above the threshold that the groups were built from, as
        :func:`find_duplicates` returns them (``Image1``, ``Image2``, and
        ``probability`` or ``similarity``); with ``linkage="complete"`` a
        pair may join two groups that stayed apart.
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

    A saved search groups its own images without embedding them again:

    >>> from sklearn_imgpair import ImageNeighbors
    >>> search = ImageNeighbors(classifier=clf).fit(X[:10, 0])
    >>> clustering = ImageMatchClustering(search=search).fit(search.gallery_)
    >>> clustering.labels_.shape == (search.n_samples_fit_,)
    True
    """

    _parameter_constraints = {**_CONSTRAINTS, "linkage": [StrOptions({"single", "complete"})]}

    def __init__(self, classifier=None, *, embedder=None, search=None, threshold=None,
                 linkage="single", n_neighbors=None, on_error="raise", chunk_size=None,
                 verbose=0):
        self.classifier = classifier
        self.embedder = embedder
        self.search = search
        self.threshold = threshold
        self.linkage = linkage
        self.n_neighbors = n_neighbors
        self.on_error = on_error
        self.chunk_size = chunk_size
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.one_d_array = True
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags

    def __setstate__(self, state):
        for name in ("embedder", "search"):  # pickled before they existed
            state.setdefault(name, None)
        state.setdefault("verbose", 0)
        super().__setstate__(state)

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
        neighbors, image_rows, among = _fit_neighbors(
            X, type(self).__name__, classifier=self.classifier, embedder=self.embedder,
            search=self.search, on_error=self.on_error, chunk_size=self.chunk_size,
            verbose=self.verbose)
        threshold = resolve_threshold(self.threshold, neighbors)
        first, second, scores = _match_edges(neighbors, threshold, self.n_neighbors, among)
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
        self.duplicates_ = _pairs_table(neighbors, first, second, scores)
        # Sets or deletes feature_names_in_; scikit-learn counts no features in
        # a 1-D list of strings (ensure_2d=False), so we set the count.
        validate_data(self, X, skip_check_array=True, ensure_2d=False)
        self.n_features_in_ = 1
        return self
