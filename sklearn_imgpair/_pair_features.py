"""PairFeatures: pairs of images into features for any scikit-learn model."""

import warnings

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils._param_validation import HasMethods
from sklearn.utils.validation import check_is_fitted

from sklearn_imgpair._embedder import ImageEmbedder
from sklearn_imgpair._images.cells import distinct_paths
from sklearn_imgpair._images.validation import (
    check_files_exist,
    check_pair_features,
    check_pairs,
)
from sklearn_imgpair._training.mining import match_components

__all__ = ["PairFeatures", "pair_groups"]


class PairFeatures(TransformerMixin, BaseEstimator):
    """Features of image pairs from a frozen embedder: cosine, ``|e1 - e2|``, ``e1 * e2``.

    The embedder turns each distinct image into a unit vector ``e``; each
    pair then becomes ``[cosine, |e1 - e2|, e1 * e2]``, a representation that
    is symmetric in the two images and that any scikit-learn classifier can
    learn from::

        make_pipeline(PairFeatures(ImageEmbedder(...)), LogisticRegression())

    Embeddings are cached by the embedder (by weights and image identity),
    so a grid search over the classifier's parameters embeds each image
    once. Cells are those of :class:`ImagePairClassifier`: paths, in-memory
    images or several images of one item (embedded as their normalised mean
    vector).

    Parameters
    ----------
    embedder : ImageEmbedder, default=None
        Unfitted embedder to clone and fit; None uses ``ImageEmbedder()``.

    Attributes
    ----------
    embedder_ : ImageEmbedder
        The fitted embedder.

    n_features_in_ : int
        Always 2: two image columns.

    See Also
    --------
    pair_groups : Groups for leakage-free cross-validation of pairs.
    """

    _parameter_constraints = {"embedder": [HasMethods(["fit", "transform"]), None]}

    def __init__(self, embedder=None):
        self.embedder = embedder

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []  # float32 features, whatever X holds
        return tags

    def fit(self, X, y=None):
        """Validate the pairs and fit (build) the embedder.

        Parameters
        ----------
        X : DataFrame, ndarray of shape (n_pairs, 2) or list of pairs
            Images, two per pair (see :func:`check_pairs`).
        y : None
            Ignored.

        Returns
        -------
        self : PairFeatures
        """
        self._validate_params()
        check_pairs(X)
        self.embedder_ = clone(self.embedder if self.embedder is not None else ImageEmbedder())
        self.embedder_.fit()
        check_pair_features(self, X, reset=True)
        return self

    def transform(self, X):
        """Embed both images of every pair and combine them.

        Parameters
        ----------
        X : DataFrame, ndarray of shape (n_pairs, 2) or list of pairs
            Images, two per pair (see :func:`check_pairs`).

        Returns
        -------
        features : ndarray of shape (n_pairs, 1 + 2 * embedding_dim), dtype=float32
        """
        check_is_fitted(self)
        pairs = check_pairs(X)
        check_pair_features(self, X, reset=False)
        check_files_exist(pairs)
        unique, _, inverse = distinct_paths(pairs)
        embeddings = self.embedder_.transform(unique)
        inverse = inverse.reshape(-1, 2)
        first, second = embeddings[inverse[:, 0]], embeddings[inverse[:, 1]]
        cosine = (first * second).sum(axis=1, keepdims=True)
        return np.hstack([cosine, np.abs(first - second), first * second]).astype(np.float32)

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns: ``cosine``, ``absdiff<i>``, ``product<i>``.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Ignored: the names do not depend on the input columns.

        Returns
        -------
        feature_names_out : ndarray of str objects
            ``1 + 2 * embedding_dim`` names.
        """
        check_is_fitted(self)
        dim = self.embedder_.embedding_dim_
        names = (["cosine"] + [f"absdiff{i}" for i in range(dim)]
                 + [f"product{i}" for i in range(dim)])
        return np.asarray(names, dtype=object)


def pair_groups(X):
    """Group pairs that share images, for leakage-free cross-validation.

    Pairs are joined when they share an image, directly or through a chain of
    pairs (connected components of the graph whose nodes are images and
    whose edges are pairs). Passing the result as ``groups`` to
    :class:`~sklearn.model_selection.GroupKFold` (or any group-aware
    splitter) keeps every image on one side of each split.

    Where negatives are drawn between any two identities, the pairs often
    link almost all images into one component; then no split without shared
    images exists, and a warning says so. Draw negatives within categories
    (see ``make_image_pairs(n_categories=...)``) to get independent groups.

    Parameters
    ----------
    X : DataFrame, ndarray of shape (n_pairs, 2) or list of pairs
        Image paths.

    Returns
    -------
    groups : ndarray of shape (n_pairs,), dtype=int
        Group label of each pair.

    Examples
    --------
    >>> from sklearn_imgpair import pair_groups
    >>> pair_groups([("a.png", "b.png"), ("c.png", "d.png"), ("e.png", "f.png"),
    ...              ("b.png", "g.png")])
    array([0, 1, 2, 0])
    """
    pairs = check_pairs(X)
    groups = match_components(pairs, np.ones(len(pairs), dtype=bool))[:, 0]
    largest = np.bincount(groups).max()
    if len(groups) > 1 and largest > len(groups) / 2:
        warnings.warn(
            f"One group holds {largest} of {len(groups)} pairs: the pairs link most "
            "images together, so no split keeps every image on one side. Splits by "
            "these groups stay leakage-free but very uneven.", UserWarning, stacklevel=2)
    return groups
