"""Scores of a search's pairs: the match probabilities of a classifier's head, or cosines.

A search built on a classifier scores a pair by the classifier's calibrated
match probability (its head applied to the cosine of the two embeddings);
one built on an embedder alone by the cosine similarity itself.
"""

import math

import numpy as np
import torch
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

__all__ = ["COSINE_THRESHOLD", "MatchProbabilityMixin", "cosine_radius", "pair_scores",
           "resolve_threshold", "score_name"]

# The default threshold on the cosine similarity of two embeddings, without a
# classifier's head: imagededup's default ``min_similarity_threshold`` for CNN
# encodings.
COSINE_THRESHOLD = 0.9


def _has_match_head(self):
    """``kneighbors_proba`` exists for a search built on a classifier."""
    if getattr(self, "match_threshold_", None) is None and self.classifier is None:
        raise AttributeError("kneighbors_proba needs ImageNeighbors(classifier=...): the "
                             "match probability is the classifier's.")
    return True


class MatchProbabilityMixin:
    """``kneighbors_proba`` and ``match_proba`` of a search built on a classifier.

    The search provides ``kneighbors``, ``classifier``, ``match_threshold_``
    and ``embedder_``, whose network holds the classifier's head.
    """

    @available_if(_has_match_head)
    def kneighbors_proba(self, X=None, n_neighbors=None):
        """Find the nearest gallery images and their match probabilities.

        The probability is the classifier's: its head applied to the cosine
        of the two embeddings, so it equals ``predict_proba`` of the
        classifier on the pair ``(query, neighbour)`` up to float rounding
        (which the calibrated head's atanh amplifies for cosines near 1:
        within 1e-4 in our tests). It falls as the
        distance grows, so neighbours come most likely match first.

        Parameters
        ----------
        X : list, 1-D array, Series or one-column table of image paths, default=None
            Query images; None queries the gallery, each image left out of
            its own list.
        n_neighbors : int, default=None
            Neighbours per query; None uses ``self.n_neighbors``.

        Returns
        -------
        probabilities : ndarray of shape (n_queries, n_neighbors), dtype=float64
            Match probabilities (NaN for unreadable queries).
        indices : ndarray of shape (n_queries, n_neighbors), dtype=int64
            Rows of ``gallery_``.
        """
        distances, indices = self.kneighbors(X, n_neighbors)
        return self.match_proba(distances), indices

    @available_if(_has_match_head)
    def match_proba(self, distances):
        """Turn cosine distances into the classifier's match probabilities.

        Parameters
        ----------
        distances : array-like of float
            Cosine distances, as :meth:`kneighbors` returns them.

        Returns
        -------
        probabilities : ndarray of the same shape, dtype=float64
        """
        check_is_fitted(self)
        head = self.embedder_.module_.head
        cosine = torch.as_tensor(1.0 - np.asarray(distances, dtype=np.float64),
                                 dtype=torch.float32, device=head.bias.device)
        with torch.no_grad():
            return torch.sigmoid(head(cosine).double()).cpu().numpy()


def _has_head(neighbors):
    """Whether the search gives match probabilities (it was built on a classifier)."""
    return neighbors.match_threshold_ is not None


def pair_scores(neighbors, distances):
    """The scores of pairs at cosine ``distances`` in a search.

    Parameters
    ----------
    neighbors : ImageNeighbors
        A fitted search.
    distances : array-like of float
        Cosine distances, as its ``kneighbors`` returns them.

    Returns
    -------
    scores : ndarray of the same shape, dtype=float64
        Match probabilities (the classifier's head) for a search built on a
        classifier, cosine similarities ``1 - distance`` otherwise.
    """
    if _has_head(neighbors):
        return neighbors.match_proba(distances)
    return 1.0 - np.asarray(distances, dtype=np.float64)


def score_name(neighbors):
    """The name of the scores of :func:`pair_scores`: ``"probability"`` or ``"similarity"``.

    Parameters
    ----------
    neighbors : ImageNeighbors
        A fitted search.

    Returns
    -------
    name : str
        ``"probability"`` for a search built on a classifier, else ``"similarity"``.
    """
    return "probability" if _has_head(neighbors) else "similarity"


def resolve_threshold(threshold, neighbors):
    """The threshold on the scores of a search's pairs (:func:`pair_scores`).

    Parameters
    ----------
    threshold : float or None
        As given by the user; None takes the default.
    neighbors : ImageNeighbors
        A fitted search.

    Returns
    -------
    threshold : float
        ``threshold``, or by default the classifier's ``threshold`` (a
        search built on a classifier) or :data:`COSINE_THRESHOLD`.

    Raises
    ------
    ValueError
        If ``threshold`` is negative while the scores are probabilities.
    """
    if threshold is None:
        return neighbors.match_threshold_ if _has_head(neighbors) else COSINE_THRESHOLD
    if _has_head(neighbors) and threshold < 0:
        raise ValueError(f"threshold is a match probability with a classifier, between 0 and "
                         f"1; got {threshold}.")
    return float(threshold)


def cosine_radius(neighbors, threshold):
    """The cosine distance below which a pair's score can pass ``threshold``.

    Without a head the score is the cosine itself. With one, the head's
    probability increases with the cosine, so it exceeds ``threshold``
    exactly above the cosine whose logit is ``logit(threshold)``
    (``CosineMatchHead.inverse``). A little slack keeps float rounding from
    losing a pair at the boundary (the score itself decides).
    """
    if threshold >= 1.0:
        return None  # no probability nor cosine exceeds 1
    if not _has_head(neighbors):
        cosine = threshold
    else:
        head = neighbors.embedder_.module_.head
        logit = -math.inf if threshold <= 0.0 else math.log(threshold / (1.0 - threshold))
        cosine = head.inverse(logit)
    return min(max(1.0 - cosine + 1e-6, 0.0), 2.0)
