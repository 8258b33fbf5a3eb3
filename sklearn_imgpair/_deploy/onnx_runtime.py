"""OnnxImageMatcher: an exported model run by onnxruntime, without PyTorch.

Nothing here, nor in what it imports, imports torch or timm: images are
checked and read by the same torch-free functions as the estimators use
(:func:`check_pairs`, :func:`check_paths` and :func:`read_pixels`), so that
both see the very same pixels.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral

import numpy as np
from scipy.special import expit
from sklearn.utils._param_validation import Interval, validate_parameter_constraints
from sklearn.utils.metaestimators import available_if

from sklearn_imgpair._deploy.onnx_format import check_graph, read_metadata
from sklearn_imgpair._images.cells import (
    InMemoryImage,
    distinct_images,
    distinct_paths,
    image_names,
)
from sklearn_imgpair._images.pixels import read_pixels
from sklearn_imgpair._images.validation import check_files_exist, check_pairs, check_paths
from sklearn_imgpair._scale.optional import import_optional

__all__ = ["OnnxImageMatcher"]

# Pairs scored per step: memory beyond the embeddings is proportional to this.
_SCORE_CHUNK_SIZE = 2**13
# CosineMatchHead clips cosines to this magnitude before its atanh link.
_COSINE_LIMIT = np.float32(1.0 - 1e-6)
_PARAMETER_CONSTRAINTS = {
    "path": [str, os.PathLike],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "providers": [list, tuple, None],
    "n_threads": [Interval(Integral, 1, None, closed="left"), None],
}


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


def _pool(vectors, image_index, offsets):
    """One unit vector per cell: the normalised mean of its images' vectors.

    The numpy twin of :func:`~sklearn_imgpair._nn.siamese.pool_embeddings`:
    a cell of one image keeps its vector unchanged.
    """
    counts = np.diff(offsets)
    starts = image_index[offsets[:-1]]
    if (counts == 1).all():
        return vectors[starts]
    sums = np.zeros((len(counts), vectors.shape[1]), dtype=vectors.dtype)
    np.add.at(sums, np.repeat(np.arange(len(counts)), counts), vectors[image_index])
    norms = np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return np.where((counts == 1)[:, None], vectors[starts], sums / norms)


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
    batch_size : int, default=32
        Images per run of the graph.
    providers : list, default=None
        onnxruntime execution providers, in order of preference, e.g.
        ``["CUDAExecutionProvider", "CPUExecutionProvider"]``; None runs on
        the CPU.
    n_threads : int, default=None
        onnxruntime's intra-op threads; None lets it choose (one per
        physical core).

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
        ``mean``, ``std``, ``quantization``, ``opset``, ``versions``, ...
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

    Notes
    -----
    Unreadable images raise an error naming their cell (``X[row, column]``)
    and what the image was; there is no ``on_error="warn"``.

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

    def __init__(self, path, *, batch_size=32, providers=None, n_threads=None):
        validate_parameter_constraints(
            _PARAMETER_CONSTRAINTS, {"path": path, "batch_size": batch_size,
                                     "providers": providers, "n_threads": n_threads},
            caller_name=type(self).__name__)
        self.path = os.path.abspath(os.fspath(path))
        self.batch_size = batch_size
        self.providers = providers
        self.n_threads = n_threads
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

    def _read(self, image, name):
        source = image.data if isinstance(image, InMemoryImage) else image
        try:
            return read_pixels(source, self.image_size_).transpose(2, 0, 1)
        except (FileNotFoundError, ValueError, TypeError) as exc:
            raise type(exc)(f"{name}: {exc}") from exc

    def _run(self, images):
        """Embeddings of a batch of uint8 images of shape (n, 3, S, S)."""
        if self.metadata_["estimator"] == "ImageEmbedder":
            return self.session_.run(["embeddings"], {"images": images})[0]
        # The pair graph embeds both inputs in one backbone call: half of the images
        # go to each (the second half padded by one image when n is odd).
        half = (len(images) + 1) // 2
        second = images[half:]
        if len(second) < half:
            second = np.concatenate([second, images[:half - len(second)]])
        first, second = self.session_.run(["embeddings1", "embeddings2"],
                                          {"images1": images[:half], "images2": second})
        return np.concatenate([first, second])[:len(images)]

    def _embed_cells(self, cells, cell_names):
        """Unit vectors of distinct normalised ``cells``, each image read and embedded once."""
        images, image_index, offsets, image_first = distinct_images(cells)
        names = image_names(cells, offsets, image_first, cell_names)
        vectors = np.empty((len(images), self.embedding_dim_), dtype=np.float32)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for start in range(0, len(images), self.batch_size):
                stop = start + self.batch_size
                # PIL releases the GIL while it decodes.
                batch = list(pool.map(self._read, images[start:stop], names[start:stop]))
                vectors[start:stop] = self._run(np.stack(batch))
        return _pool(vectors, image_index, offsets)

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
            Unit-length rows, in the order of ``X``.
        """
        cells, first, inverse = distinct_paths(check_paths(X))
        vectors = self._embed_cells(cells, [f"X[{row}]" for row in first])
        return vectors[inverse]

    # ------------------------------------------------------------------
    # pairs
    # ------------------------------------------------------------------

    def _match_logits(self, X):
        pairs = check_pairs(X)
        check_files_exist(pairs)  # a missing file fails before any work
        cells, first, inverse = distinct_paths(pairs)
        vectors = self._embed_cells(
            cells, [f"X[{position // 2}, {position % 2}]" for position in first])
        index = inverse.reshape(-1, 2)
        scale = np.float32(self.metadata_["head_scale"])
        bias = np.float32(self.metadata_["head_bias"])
        atanh = self.metadata_["head_link"] == "atanh"  # else linear in the cosine
        logits = np.empty(len(index), dtype=np.float32)
        for start in range(0, len(index), _SCORE_CHUNK_SIZE):
            rows = index[start:start + _SCORE_CHUNK_SIZE]
            cosine = np.einsum("ij,ij->i", vectors[rows[:, 0]], vectors[rows[:, 1]])
            if atanh:  # as CosineMatchHead: Fisher's z of the clipped cosine
                cosine = np.arctanh(np.clip(cosine, -_COSINE_LIMIT, _COSINE_LIMIT))
            logits[start:start + len(rows)] = scale * cosine + bias
        return logits

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
        logits = self._match_logits(X)
        return logits if self.metadata_["match_column"] == 1 else -logits

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
        match = expit(self._match_logits(X).astype(np.float64))
        column = self.metadata_["match_column"]
        proba = np.empty((len(match), 2), dtype=np.float64)
        proba[:, column] = match
        proba[:, 1 - column] = 1.0 - match
        return proba

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
        column = self.metadata_["match_column"]
        is_match = self.predict_proba(X)[:, column] > self.threshold
        return np.where(is_match, self.classes_[column], self.classes_[1 - column])
