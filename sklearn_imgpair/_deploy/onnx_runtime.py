"""OnnxImageMatcher: an exported model run by onnxruntime, without PyTorch.

Nothing here, nor in what it imports, imports torch or timm: images are
checked, read and embedded by the same torch-free functions as the estimators
use (:func:`check_pairs`, :func:`check_paths`, :func:`read_pixels`,
:func:`embed_cells`), and pairs are scored and turned into probabilities by
those of ``_matching``, so that both see the very same pixels and give the same
outputs.
"""

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from sklearn.utils.metaestimators import available_if

from sklearn_imgpair._deploy.onnx_format import check_graph, read_metadata
from sklearn_imgpair._images.batch_size import inference_batch_size
from sklearn_imgpair._images.cells import InMemoryImage
from sklearn_imgpair._images.embedding import embed_rows
from sklearn_imgpair._images.pixels import read_pixels
from sklearn_imgpair._images.unreadable import ON_ERROR_OPTIONS, read_or_report
from sklearn_imgpair._images.validation import check_pairs, check_paths
from sklearn_imgpair._matching import (
    CosineHead,
    class_probabilities,
    decision_scores,
    match_logits,
    predicted_labels,
    score_pairs,
)
from sklearn_imgpair._optional import import_optional

__all__ = ["OnnxImageMatcher", "graph_feed", "read_graph_pixels"]

_PARAMETER_CONSTRAINTS = {
    "path": [str, os.PathLike],
    "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
    "providers": [list, tuple, None],
    "n_threads": [Interval(Integral, 1, None, closed="left"), None],
    "on_error": [StrOptions(ON_ERROR_OPTIONS)],
}


def read_graph_pixels(image, image_size):
    """One image as the graphs take it: ``uint8`` of shape ``(3, image_size, image_size)``.

    ``image`` is a path or an :class:`InMemoryImage` (a single image of a
    normalised cell); it is read by :func:`read_pixels`, as the estimators read it.
    """
    source = image.data if isinstance(image, InMemoryImage) else image
    return read_pixels(source, image_size).transpose(2, 0, 1)


def graph_feed(images, estimator):
    """The inputs of ``estimator``'s graph that embed a batch of images of shape (n, 3, S, S).

    An embedder's graph takes them all as ``images``. The pair graph embeds
    both its inputs in one backbone call: half of the images go to each (the
    second half padded with the first images when n is odd), and its
    ``embeddings1`` then ``embeddings2`` are the batch's, in order.
    """
    if estimator == "ImageEmbedder":
        return {"images": images}
    half = (len(images) + 1) // 2
    second = images[half:]
    if len(second) < half:
        second = np.concatenate([second, images[:half - len(second)]])
    return {"images1": images[:half], "images2": second}


def _open_session(path, providers, n_threads):
    """An onnxruntime session of the file at ``path``; errors name the file."""
    onnxruntime = import_optional("onnxruntime", "OnnxImageMatcher", extra="onnx")
    if not os.path.exists(path):
        raise FileNotFoundError(f"ONNX model file not found: {path!r}.")
    if not os.path.isfile(path):
        raise ValueError(f"ONNX model path is not a file: {path!r}.")
    options = onnxruntime.SessionOptions()
    if n_threads is not None:
        options.intra_op_num_threads = n_threads
    try:
        return onnxruntime.InferenceSession(path, options, providers=list(
            providers or ["CPUExecutionProvider"]))
    except Exception as exc:  # onnxruntime's error types derive from Exception alone
        raise ValueError(f"{path!r} is not an ONNX model, or it is truncated or corrupt: "
                         f"{exc}") from None


def _has_match_head(matcher):
    if matcher.metadata_["estimator"] != "ImagePairClassifier":
        raise AttributeError(
            f"{matcher.path!r} was exported from an ImageEmbedder: it embeds images "
            "(transform) but has no match head to score pairs. Export an "
            "ImagePairClassifier for predict_proba, predict and decision_function.")
    return True


class OnnxImageMatcher:
    """Match and embed images with an exported ONNX model, without PyTorch.

    Loads a file written by :meth:`~sklearn_imgpair.ImagePairClassifier.export_onnx` or
    :meth:`~sklearn_imgpair.ImageEmbedder.export_onnx` (or ``sklearn-imgpair export``) into an
    :class:`onnxruntime.InferenceSession` and offers the estimator's
    prediction methods on the same inputs: paths, the bytes of image files,
    PIL images, ``uint8`` arrays and cells of several images (see
    :func:`~sklearn_imgpair.check_pairs`). Images are read by the estimators' own decoder;
    each distinct image (the same content, for in-memory ones) is decoded and
    embedded once per call, however many pairs share it, and a cell of
    several images gets the normalised mean of their embeddings. Pairs are
    scored with the classifier's head, ``scale * link(cosine) + bias``, from
    the file's metadata (``head_link``: ``atanh`` for a calibrated head, the
    identity for an uncalibrated one and in files of format version 1).
    Needs the ``onnx`` extra (``onnxruntime``), not PyTorch.

    Parameters
    ----------
    path : str or path-like
        The ``.onnx`` file.
    batch_size : int or "auto", default="auto"
        Images per run of the graph; ``"auto"`` chooses for the execution
        provider and the image size as the estimators do (8 images of 224
        px on a CPU; see the user guide's "Precision and batch size chosen
        for the machine").
    providers : list, default=None
        onnxruntime execution providers, in order of preference, e.g.
        ``["CUDAExecutionProvider", "CPUExecutionProvider"]``; None runs on
        the CPU.
    n_threads : int, default=None
        onnxruntime's intra-op threads; None lets it choose (one per
        physical core).
    on_error : {"raise", "warn"}, default="raise"
        What an image that cannot be read (missing, empty, truncated, not an
        image, above PIL's pixel limit) does: ``"raise"`` raises an error
        naming its cell (``X[row, column]``, or ``X[row]`` in
        :meth:`transform`) and what the image was; ``"warn"`` gives exactly
        the rows of that image NaN (probabilities, scores, vectors) and
        issues one :class:`~sklearn_imgpair.UnreadableImageWarning` listing
        them, as the estimators' ``on_error`` does. :meth:`predict` turns a
        NaN probability into the label of no match.

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
        The classifier's labels (classifier files only).
    match_label : int, str or bool
        The label of a match (classifier files only).
    threshold : float
        Match probability above which :meth:`predict` returns
        ``match_label`` (classifier files only); the exported classifier's,
        and it may be set.
    image_size_ : int
        Side length the images are resized to.
    embedding_dim_ : int
        Length of the embedding vectors.
    metadata_ : dict
        Everything the file records: ``estimator``, ``model_name``,
        ``mean``, ``std``, ``quantization`` (``"none"``, ``"int8"`` for
        dynamic int8, ``"int8-static"`` for static int8), ``calibration``
        (static int8: its ``method`` and ``n_images``; else None),
        ``opset``, ``versions``, ...
    session_ : onnxruntime.InferenceSession
        The loaded graph.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not an ONNX model (or is truncated), is an ONNX model
        without this library's metadata, was written in a newer format
        version, or its graph does not match its metadata (other inputs,
        another image size).
    ImportError
        If onnxruntime is not installed.

    See Also
    --------
    sklearn_imgpair.ImagePairClassifier.export_onnx : Writes the classifier's file.
    sklearn_imgpair.ImageEmbedder.export_onnx : Writes the embedder's file.

    Examples
    --------
    >>> from sklearn_imgpair import ImageEmbedder
    >>> from sklearn_imgpair.onnx import OnnxImageMatcher
    >>> embedder = ImageEmbedder(pretrained=False, image_size=32, model_kwargs=TINY_SWIN).fit()
    >>> path = embedder.export_onnx(f"{tmp_dir}/embedder.onnx")
    >>> matcher = OnnxImageMatcher(path)
    >>> matcher.transform(X[:5, 0]).shape
    (5, 32)
    """

    on_error = "raise"  # matchers pickled before on_error existed

    def __init__(self, path, *, batch_size="auto", providers=None, n_threads=None,
                 on_error="raise"):
        validate_parameter_constraints(
            _PARAMETER_CONSTRAINTS, {"path": path, "batch_size": batch_size,
                                     "providers": providers, "n_threads": n_threads,
                                     "on_error": on_error},
            caller_name=type(self).__name__)
        self.path = os.path.abspath(os.fspath(path))
        self.batch_size = batch_size
        self.providers = providers
        self.n_threads = n_threads
        self.on_error = on_error
        self._load()

    def _load(self):
        session = _open_session(self.path, self.providers, self.n_threads)
        metadata = read_metadata(session.get_modelmeta().custom_metadata_map, self.path)
        check_graph(session.get_inputs(), session.get_outputs(), metadata, self.path)
        self.session_, self.metadata_ = session, metadata
        self.image_size_ = metadata["image_size"]
        self.embedding_dim_ = metadata["embedding_dim"]
        if metadata["estimator"] == "ImagePairClassifier":
            self.classes_ = metadata["classes"]
            self.match_label = self.classes_[metadata["match_column"]]
            self.threshold = metadata["threshold"]

    def __getstate__(self):  # an InferenceSession cannot be pickled: the file is read again
        state = self.__dict__.copy()
        del state["session_"]
        return state

    def __setstate__(self, state):
        threshold = state.get("threshold")
        self.__dict__.update(state)
        self._load()
        if threshold is not None:
            self.threshold = threshold

    def __repr__(self):
        return (f"{type(self).__name__}({self.path!r}: {self.metadata_['estimator']}, "
                f"{self.metadata_['model_name']}, {self.image_size_} px, "
                f"{self.metadata_['quantization']})")

    # ------------------------------------------------------------------
    # embedding
    # ------------------------------------------------------------------

    def _read(self, image):
        return read_graph_pixels(image, self.image_size_)

    def _run(self, images):
        """Embeddings of a batch of uint8 images of shape (n, 3, S, S)."""
        estimator = self.metadata_["estimator"]
        outputs = ["embeddings"] if estimator == "ImageEmbedder" else ["embeddings1", "embeddings2"]
        found = self.session_.run(outputs, graph_feed(images, estimator))
        return np.concatenate(found)[:len(images)]

    def _embed_images(self, images, names):
        """Embed distinct single images, a batch at a time (see :func:`embed_cells`)."""
        vectors = np.empty((len(images), self.embedding_dim_), dtype=np.float32)
        errors = []
        placeholder = np.zeros((3, self.image_size_, self.image_size_), dtype=np.uint8)

        def read(image, name):
            return read_or_report(self._read, image, name, self.on_error)

        batch_size = self.batch_size
        if batch_size == "auto":
            provider = self.session_.get_providers()[0]
            batch_size = inference_batch_size(
                "cuda" if provider == "CUDAExecutionProvider" else "cpu", self.image_size_)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for start in range(0, len(images), batch_size):
                stop = start + batch_size
                # PIL releases the GIL while it decodes.
                batch = list(pool.map(read, images[start:stop], names[start:stop]))
                vectors[start:stop] = self._run(np.stack(
                    [placeholder if pixels is None else pixels for pixels, _ in batch]))
                errors.extend(error for _, error in batch)
        return vectors, errors

    def transform(self, X):
        """Embed images.

        Parameters
        ----------
        X : list, 1-D array, Series or one-column table of images
            Paths or in-memory images, as :meth:`~sklearn_imgpair.ImageEmbedder.transform`
            takes them.

        Returns
        -------
        embeddings : ndarray of shape (n_images, embedding_dim), dtype=float32
            Unit-length rows, in the order of ``X`` (NaN rows for unreadable
            images with ``on_error="warn"``).
        """
        return embed_rows(check_paths(X), self._embed_images, on_error=self.on_error)

    # ------------------------------------------------------------------
    # pairs
    # ------------------------------------------------------------------

    def _match_logits(self, X):
        head = CosineHead(self.metadata_["head_scale"], self.metadata_["head_bias"],
                          self.metadata_["head_link"])
        return match_logits(check_pairs(X), self._embed_images,
                            functools.partial(score_pairs, similarity=head.similarity),
                            on_error=self.on_error)

    @available_if(_has_match_head)
    def decision_function(self, X):
        """Match logits, signed for ``classes_[1]`` as the classifier's.

        Parameters
        ----------
        X : DataFrame, ndarray of shape (n_pairs, 2) or list of pairs
            Images, two per pair, as :meth:`~sklearn_imgpair.ImagePairClassifier.predict_proba`
            takes them.

        Returns
        -------
        scores : ndarray of shape (n_pairs,), dtype=float32
        """
        return decision_scores(self._match_logits(X), self.metadata_["match_column"])

    @available_if(_has_match_head)
    def predict_proba(self, X):
        """Probabilities of the two classes, in ``classes_`` order.

        Parameters
        ----------
        X : DataFrame, ndarray of shape (n_pairs, 2) or list of pairs
            Images, two per pair.

        Returns
        -------
        proba : ndarray of shape (n_pairs, 2), dtype=float64
            As the classifier's (float64: close pairs' probabilities do not
            all round to 1.0).
        """
        return class_probabilities(self._match_logits(X), self.metadata_["match_column"])

    @available_if(_has_match_head)
    def predict(self, X):
        """Predict ``match_label`` where the match probability exceeds ``threshold``.

        Parameters
        ----------
        X : DataFrame, ndarray of shape (n_pairs, 2) or list of pairs
            Images, two per pair.

        Returns
        -------
        y_pred : ndarray of shape (n_pairs,)
            Labels from ``classes_``.
        """
        return predicted_labels(self.predict_proba(X), self.classes_,
                                self.metadata_["match_column"], self.threshold)
