"""From embeddings to match scores, and from match logits to class outputs, without torch.

What the two pair matchers share: :class:`ImagePairClassifier` (a torch network)
and :class:`~sklearn_imgpair.onnx.OnnxImageMatcher` (an ONNX graph, no torch)
embed the images of pairs and score them (:func:`match_logits`), a chunk of
pairs at a time (:func:`score_pairs`), and turn match logits into the outputs
of ``decision_function``, ``predict_proba`` and ``predict``, in the order of
``classes_``. :class:`CosineHead` is the numpy form of the network's cosine
match head, for the matcher that has no torch. The module sits beside the
estimators, not in ``_nn`` (torch) nor in ``_deploy`` (ONNX), because both use
it and it imports neither."""

import numpy as np
from scipy.special import expit

from sklearn_imgpair._images.embedding import embed_cells
from sklearn_imgpair._images.unreadable import warn_unreadable
from sklearn_imgpair._images.validation import check_files_exist

__all__ = ["SCORE_CHUNK_SIZE", "CosineHead", "class_probabilities", "decision_scores",
           "match_column", "match_logits", "predicted_labels", "score_pairs"]

# Pairs scored per step of score_pairs: 8192 pairs of 768-d float32 vectors
# gather 50 MB, whatever the number of pairs.
SCORE_CHUNK_SIZE = 2**13

HEAD_LINKS = ("atanh", "linear")


class CosineHead:
    """Match logits ``scale * link(cosine) + bias`` of unit vectors, in float32 numpy.

    The numpy form of :class:`~sklearn_imgpair._nn.siamese.CosineMatchHead`,
    whose parameters it takes (an exported model's metadata records them).

    Parameters
    ----------
    scale : float
        The positive multiplier of the transformed cosine.
    bias : float
        Added to the product.
    link : {"linear", "atanh"}
        ``"linear"``: the cosine itself; ``"atanh"``: Fisher's z of the
        cosine, clipped to ``1 - 1e-6`` in magnitude as the network clips it.
    """

    # The network's head clips cosines to this magnitude before its atanh link.
    COSINE_LIMIT = np.float32(1.0 - 1e-6)

    def __init__(self, scale, bias, link):
        if link not in HEAD_LINKS:
            raise ValueError(f"link must be one of {HEAD_LINKS}; got {link!r}.")
        self.scale = np.float32(scale)
        self.bias = np.float32(bias)
        self.link = link

    def __call__(self, cosine):
        """Match logits of cosines, an array of float32."""
        if self.link == "atanh":
            cosine = np.arctanh(np.clip(cosine, -self.COSINE_LIMIT, self.COSINE_LIMIT))
        return self.scale * cosine + self.bias

    def similarity(self, embeddings_1, embeddings_2):
        """Match logits of two aligned arrays of unit vectors of shape ``(n, d)``."""
        return self(np.einsum("ij,ij->i", embeddings_1, embeddings_2))


def score_pairs(embeddings, index, similarity, chunk_size=None):
    """Match logits of pairs of rows of ``embeddings``, a chunk of pairs at a time.

    Parameters
    ----------
    embeddings : ndarray or Tensor of shape (n_images, d)
        Unit vectors (NaN rows for unreadable images); a torch tensor stays
        where it is, on its device.
    index : ndarray of shape (n_pairs, 2)
        Rows of ``embeddings`` to compare.
    similarity : callable
        ``similarity(embeddings_1, embeddings_2)`` returns the match logits of
        two aligned batches of rows as a numpy array, e.g.
        :meth:`CosineHead.similarity`.
    chunk_size : int, default=None
        Pairs per step (None: ``SCORE_CHUNK_SIZE``, 8192); memory beyond
        ``embeddings`` is proportional to ``chunk_size * d``.

    Returns
    -------
    logits : ndarray of shape (n_pairs,), dtype=float32
    """
    chunk_size = SCORE_CHUNK_SIZE if chunk_size is None else chunk_size
    logits = np.empty(len(index), dtype=np.float32)
    for start in range(0, len(index), chunk_size):
        rows = index[start:start + chunk_size]
        logits[start:start + len(rows)] = similarity(embeddings[rows[:, 0]],
                                                     embeddings[rows[:, 1]])
    return logits


def match_logits(pairs, embed_images, score, *, on_error="raise"):
    """Match logits of pairs of images, each distinct image embedded once.

    Parameters
    ----------
    pairs : ndarray of shape (n_pairs, 2), dtype=object
        Normalised cells (see :func:`check_pairs`).
    embed_images : callable
        Embeds distinct images, as :func:`embed_cells` takes it.
    score : callable
        ``score(embeddings, index)`` returns the float32 match logits of the
        pairs of rows ``index`` (of shape ``(n_pairs, 2)``) of
        ``embeddings``, e.g. by :func:`score_pairs`.
    on_error : {"raise", "warn"}, default="raise"
        ``"raise"``: a missing file fails before any image is read, and an
        unreadable image raises an error naming its cell. ``"warn"``: the
        pairs of unreadable images get NaN logits, with one
        :class:`UnreadableImageWarning` issued for the caller of
        ``predict_proba`` (or ``decision_function``).

    Returns
    -------
    logits : ndarray of shape (n_pairs,), dtype=float32
    """
    if on_error == "raise":
        check_files_exist(pairs)
    embeddings, inverse, failures = embed_cells(pairs, embed_images, on_error=on_error)
    # Pairs are scored in chunks: memory grows with the distinct images only.
    logits = score(embeddings, inverse.reshape(-1, 2))
    if failures:
        warn_unreadable(failures, np.flatnonzero(np.isnan(logits)), "get NaN probabilities",
                        stacklevel=5)
    return logits


def match_column(classes, match_label):
    """The column of ``classes`` that holds ``match_label``, or None where none does.

    Parameters
    ----------
    classes : ndarray of shape (2,)
        The labels, in the order of ``classes_``.
    match_label : int, str or bool
        The label of a match.

    Returns
    -------
    column : {0, 1} or None
    """
    columns = np.flatnonzero(np.asarray(classes) == match_label)
    return int(columns[0]) if len(columns) == 1 else None


def decision_scores(logits, match_column):
    """Match logits signed for ``classes_[1]``, as scikit-learn's ``decision_function``.

    Parameters
    ----------
    logits : ndarray of shape (n_pairs,)
        Match logits (NaN for unreadable pairs).
    match_column : {0, 1}
        The column of ``classes_`` that is a match.

    Returns
    -------
    scores : ndarray of shape (n_pairs,)
    """
    return logits if match_column == 1 else -logits


def class_probabilities(logits, match_column):
    """Probabilities of the two classes, in ``classes_`` order, from match logits.

    Parameters
    ----------
    logits : ndarray of shape (n_pairs,)
        Match logits (NaN for unreadable pairs, whose rows stay NaN).
    match_column : {0, 1}
        The column of ``classes_`` that is a match.

    Returns
    -------
    proba : ndarray of shape (n_pairs, 2), dtype=float64
        float64: the calibrated head's logits reach 20 and more for close
        pairs, whose float32 sigmoids would all round to 1.0 and tie.
    """
    match = expit(np.asarray(logits).astype(np.float64))
    proba = np.empty((len(match), 2), dtype=np.float64)
    proba[:, match_column] = match
    proba[:, 1 - match_column] = 1.0 - match
    return proba


def predicted_labels(proba, classes, match_column, threshold):
    """The match label where the match probability exceeds ``threshold``, else the other.

    Parameters
    ----------
    proba : ndarray of shape (n_pairs, 2)
        As :func:`class_probabilities` returns it.
    classes : ndarray of shape (2,)
        ``classes_``.
    match_column : {0, 1}
        The column of ``classes_`` that is a match.
    threshold : float
        Match probability above which a pair is a match.

    Returns
    -------
    y_pred : ndarray of shape (n_pairs,)
        Labels from ``classes``.
    """
    is_match = proba[:, match_column] > threshold
    return np.where(is_match, classes[match_column], classes[1 - match_column])
