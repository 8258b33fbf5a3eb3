"""ImageEmbedder: images (paths or in memory) in, L2-normalised embedding vectors out."""

import copy
import os
from numbers import Integral

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin, clone
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from sklearn_imgpair._classifier import fitted_classifier
from sklearn_imgpair._deploy.onnx_export import export_embedder
from sklearn_imgpair._images.embedding import embed_rows
from sklearn_imgpair._images.unreadable import ON_ERROR_OPTIONS
from sklearn_imgpair._images.validation import check_paths
from sklearn_imgpair._io.embedding_cache import EmbeddingCache, model_fingerprint, settings_key
from sklearn_imgpair._nn.backbone import BACKBONE_PARAMETER_CONSTRAINTS
from sklearn_imgpair._nn.device import (
    RUNTIME_PARAMETER_CONSTRAINTS,
    check_device,
    check_precision,
    fitted_precision,
    resolve_device,
    seeded,
)
from sklearn_imgpair._nn.siamese import (
    SiameseNet,
    embedding_dim,
    image_embedder,
    siamese_net_kwargs,
)
from sklearn_imgpair._persistence.embedder_file import load_embedder, save_embedder

__all__ = ["ImageEmbedder", "search_embedder"]


class ImageEmbedder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Turn images into L2-normalised embedding vectors.

    The backbone is a timm model, built exactly as :class:`ImagePairClassifier`
    builds its own, or the backbone of a fitted classifier (``classifier=``),
    in which case the vectors are the ones whose cosine the classifier scores.
    ``fit`` learns nothing from the data: it builds (or copies) the network.

    Images are paths, or images in memory (the bytes of an image file, PIL
    images, ``uint8`` arrays; see :func:`check_paths`), and a row may hold
    several images of one item (a list or tuple, or paths joined by
    ``";"``), whose vector is the L2-normalised mean of its images' vectors.
    Each distinct image is decoded once per ``transform``, and embeddings are
    cached by model weights and image identity (a file's absolute path, size
    and modification time; an in-memory image's content), so that refitting
    clones (as ``GridSearchCV`` does) or transforming the same images again
    costs no second pass. The cache lives in process memory (``cache``) and,
    with ``memory``, also on disk.

    Parameters
    ----------
    model_name : str, default="swin_tiny_patch4_window7_224"
        Name of the timm backbone.

    pretrained : bool, default=True
        Load the model's pretrained weights (local cache or model hub).

    weights_path : str or path-like, default=None
        Local checkpoint of the backbone (``.pth``, ``.bin``, ``.safetensors``).

    model_kwargs : dict, default=None
        Extra keyword arguments for :func:`timm.create_model`.

    image_size : int, default=None
        Side length the images are resized to; None uses the model's size.

    batch_size : int or "auto", default="auto"
        Images per forward pass. ``"auto"`` chooses it for the device the
        network is on and ``image_size_``: 8 images of 224 px on a CPU (the
        fastest measured), 128 on CUDA, as many pixels at other sizes.

    device : str or torch.device, default="auto"
        Where the network runs: ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``),
        ``"mps"``, or ``"auto"``: CUDA when available, else MPS (Apple
        GPUs), else the CPU; the same values as the classifier's ``device``.

    classifier : ImagePairClassifier or FrozenEstimator, default=None
        A fitted classifier whose network is copied; the backbone parameters
        above are then ignored. ``clone`` (and so ``GridSearchCV`` or
        ``PairFeatures``) returns an unfitted copy of a plain estimator; wrap
        the classifier in :class:`sklearn.frozen.FrozenEstimator` to keep it
        fitted through cloning.

    cache : bool, default=True
        Keep embeddings in process memory (512 MB shared by all embedders,
        least recently used out), keyed by model weights and file identity.
        Results are the same either way; False recomputes every time.

    memory : str, path-like or joblib.Memory, default=None
        Folder (or :class:`joblib.Memory`) for an on-disk embedding cache that
        several processes and sessions share. None uses no disk.

    random_state : int, RandomState instance or None, default=0
        Seeds the random initialisation when ``pretrained=False`` and no
        weights are given, as the classifier's ``random_state`` seeds its
        own. The default 0 (the classifier's is None) makes two fits of an
        untrained embedder give the same vectors, so that clones in a grid
        search share cached embeddings.

    on_error : {"raise", "warn"}, default="raise"
        What an image that cannot be read (missing, empty, truncated, not an
        image, above PIL's pixel limit) does in ``transform``: ``"raise"``
        raises an error naming the row and image; ``"warn"`` gives exactly
        the rows of that image NaN vectors and issues one
        :class:`UnreadableImageWarning` listing them. No image is ever
        replaced silently, and NaN vectors are never cached.

    num_workers : int or None, default=None
        Processes that decode images in parallel with the network
        (:class:`torch.utils.data.DataLoader` workers). None sizes them to
        the machine: on CUDA every core but one (at most 16); on CPU one per
        8 cores, so none below 8 cores, where workers would take cores from
        the model's own threads; and never more than the batches to read.
        0 decodes in the main process.

    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Arithmetic of the backbone, by :func:`torch.autocast`; the vectors
        are float32 and unit length either way. ``"bf16"`` runs on CPUs with
        bfloat16 instructions (AVX512-BF16 or AMX; elsewhere it is emulated,
        slow, and ``fit`` warns) and on recent GPUs: about 2-3 times faster
        for swin_tiny on such a CPU, with vectors within a cosine of 0.9999
        of fp32. ``"fp16"`` is for CUDA only. ``"auto"`` is ``"bf16"`` where
        the device computes it natively (such a CPU, a GPU of compute
        capability 8.0 or more), else ``"fp32"`` (``precision_``). ``fit``
        raises a ``ValueError`` where the device cannot do it. Cached vectors
        are kept apart per precision that runs.

    verbose : int, default=0
        0 prints nothing; 1 or more shows a progress bar (tqdm, on stderr)
        of the images ``transform`` embeds, those found in the cache left out.

    Attributes
    ----------
    module_ : SiameseNet
        The network; ``module_.embed`` maps images to vectors.

    image_size_ : int
        Side length the images are resized to.

    embedding_dim_ : int
        Length of each output vector.

    precision_ : {"fp32", "bf16", "fp16"}
        The precision ``transform`` runs in on this machine: ``precision``,
        with ``"auto"`` resolved for the device the network is on.

    n_features_in_ : int
        Always 1: one column of images. Defined only when ``fit`` was
        given ``X``, as scikit-learn defines it; ``fit()`` sees no data.

    feature_names_in_ : ndarray of shape (1,)
        The column name, when ``X`` in ``fit`` was a DataFrame with string
        column names.

    See Also
    --------
    ImagePairClassifier : Fits the backbone on labelled pairs.
    PairFeatures : Pair features for scikit-learn classifiers.

    Notes
    -----
    ``X`` is one column of images, so the estimator tags say
    ``one_d_array=True``, ``string=True`` and ``two_d_array=False``, as
    :class:`~sklearn.feature_extraction.text.CountVectorizer`'s say of its
    documents; ``preserves_dtype`` is empty because the vectors are float32
    whatever ``X`` is.

    When ``fit`` was given ``X``, ``transform`` checks the column names of
    ``X`` against it as scikit-learn's estimators do: another name is an
    error, names present on one side only a warning. After ``fit()``
    without ``X`` there is nothing to compare with, and any names pass.

    Examples
    --------
    >>> from sklearn_imgpair import ImageEmbedder
    >>> embedder = ImageEmbedder(pretrained=False, image_size=32, model_kwargs=TINY_SWIN)
    >>> vectors = embedder.fit_transform(X[:5, 0])
    >>> vectors.shape, vectors.dtype
    ((5, 32), dtype('float32'))
    """

    _parameter_constraints = {
        **BACKBONE_PARAMETER_CONSTRAINTS,
        **RUNTIME_PARAMETER_CONSTRAINTS,
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "classifier": [HasMethods(["predict_proba"]), None],
        "cache": ["boolean"],
        "memory": [str, os.PathLike, HasMethods(["cache"]), None],
        "on_error": [StrOptions(ON_ERROR_OPTIONS)],
        "verbose": ["verbose"],
    }

    def __init__(self, model_name="swin_tiny_patch4_window7_224", *, pretrained=True,
                 weights_path=None, model_kwargs=None, image_size=None, batch_size="auto",
                 device="auto", classifier=None, cache=True, memory=None, random_state=0,
                 on_error="raise", num_workers=None, precision="auto", verbose=0):
        self.model_name = model_name
        self.pretrained = pretrained
        self.weights_path = weights_path
        self.model_kwargs = model_kwargs
        self.image_size = image_size
        self.batch_size = batch_size
        self.device = device
        self.classifier = classifier
        self.cache = cache
        self.memory = memory
        self.random_state = random_state
        self.on_error = on_error
        self.num_workers = num_workers
        self.precision = precision
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.one_d_array = True
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []  # float32 vectors, whatever X holds
        return tags

    def __setstate__(self, state):
        state.setdefault("verbose", 0)  # pickled before verbose existed
        super().__setstate__(state)

    def _build_module(self):
        """Return the network, its input size and the architecture that rebuilds it."""
        if self.classifier is not None:
            # A FrozenEstimator keeps a fitted classifier fitted through clone().
            classifier = fitted_classifier(self.classifier)
            architecture = {"model_name": classifier.model_name,
                            "model_kwargs": classifier.model_kwargs,
                            "image_size": classifier.image_size_}
            return copy.deepcopy(classifier.module_), classifier.image_size_, architecture
        with seeded(self.random_state):
            kwargs, image_size = siamese_net_kwargs(
                self.model_name, pretrained=self.pretrained, weights_path=self.weights_path,
                image_size=self.image_size, model_kwargs=self.model_kwargs)
            module = SiameseNet(**kwargs)
        architecture = {"model_name": self.model_name, "model_kwargs": self.model_kwargs,
                        "image_size": self.image_size}
        return module, image_size, architecture

    def _set_network(self, module, image_size, architecture, feature_names=None, *,
                     n_features_in=None):
        """Make ``module`` the fitted network (from ``fit`` or :meth:`_from_file`).

        ``feature_names`` and ``n_features_in`` restore, from a model file,
        what ``fit`` saw of ``X`` (feature names imply one feature); None
        leaves ``feature_names_in_`` and ``n_features_in_`` as they are.
        """
        self.module_ = module.to(resolve_device(self.device)).eval()
        self.image_size_ = image_size
        self.embedding_dim_ = embedding_dim(module)
        if feature_names is not None:
            self.feature_names_in_ = np.asarray(feature_names, dtype=object)
            n_features_in = len(self.feature_names_in_) if n_features_in is None else n_features_in
        if n_features_in is not None:
            self.n_features_in_ = int(n_features_in)
        self._architecture = architecture
        self._fingerprint = model_fingerprint(self.module_, image_size)
        return self

    def fit(self, X=None, y=None):
        """Build the network (or copy the classifier's); nothing is learnt from X.

        Parameters
        ----------
        X : list, 1-D array, Series or one-column table of images, default=None
            Validated when given.
        y : None
            Ignored.

        Returns
        -------
        self : ImageEmbedder
        """
        self._validate_params()
        check_device(self.device)
        check_precision(self.precision, self.device)
        if X is None:
            # scikit-learn defines n_features_in_ only when fit saw X.
            for name in ("n_features_in_", "feature_names_in_"):
                if hasattr(self, name):
                    delattr(self, name)
        else:
            check_paths(X)
            # Sets or deletes feature_names_in_. ensure_2d=False: scikit-learn
            # counts no features in a 1-D list of strings, so we set the count.
            validate_data(self, X, skip_check_array=True, ensure_2d=False)
            self.n_features_in_ = 1
        return self._set_network(*self._build_module())

    @property
    def _n_features_out(self):
        return self.embedding_dim_

    @property
    def precision_(self):
        """The precision ``transform`` runs in here: ``precision``, ``"auto"`` resolved."""
        return fitted_precision(self)

    def _embedding_cache(self):
        fingerprint = settings_key(self._fingerprint, self.module_, self.precision_)
        location = getattr(self.memory, "location", self.memory)
        return EmbeddingCache(fingerprint, location, in_memory=self.cache)

    def transform(self, X):
        """Embed images; a row of several images gets their normalised mean vector.

        Parameters
        ----------
        X : list, 1-D array, Series or one-column table of images
            Paths, in-memory images (bytes of an image file, PIL images,
            ``uint8`` arrays) or several images of one item per row (see
            :func:`check_paths`). Each distinct image is read once.

        Returns
        -------
        embeddings : ndarray of shape (n_images, embedding_dim), dtype=float32
            Unit-length rows, in the order of ``X``.
        """
        check_is_fitted(self)
        cells = check_paths(X)
        if hasattr(self, "n_features_in_"):  # fit saw X: compare column names
            validate_data(self, X, reset=False, skip_check_array=True, ensure_2d=False)
        # Where the network is: "auto" was resolved by fit, perhaps on another machine.
        embed_images = image_embedder(
            self.module_, image_size=self.image_size_, on_error=self.on_error,
            batch_size=self.batch_size, device=next(self.module_.parameters()).device,
            precision=self.precision, num_workers=self.num_workers, verbose=self.verbose)
        return embed_rows(cells, embed_images, on_error=self.on_error,
                          cache=self._embedding_cache())

    def save(self, path):
        """Save the fitted embedder to one file that holds no pickle.

        The network's weights are written as safetensors, the parameters, the
        architecture and preprocessing, a format version and the library
        versions as JSON, with a SHA-256 checksum, atomically (see
        :meth:`ImagePairClassifier.save`). The ``classifier`` parameter is
        saved as None: the weights copied from it are in the file.

        Parameters
        ----------
        path : str or path-like
            The file to write, by convention with a ``.safetensors`` suffix.

        Returns
        -------
        path : str
            The absolute path written.
        """
        check_is_fitted(self)
        return save_embedder(self, path)

    @classmethod
    def load(cls, path, *, device=None):
        """Load an embedder saved with :meth:`save`, without running code from the file.

        Works offline and without the original weights file.

        Parameters
        ----------
        path : str or path-like
            A file written by :meth:`save`.
        device : str or torch.device, default=None
            Where the network runs; None keeps the saved device, or uses
            ``"cpu"`` (with a warning) when that is not available.

        Returns
        -------
        embedder : ImageEmbedder
            A fitted embedder that gives the saved one's vectors.

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If the file is not such a model file, is truncated, corrupt or
            modified, or was written by a newer version of the format.
        """
        return load_embedder(cls, path, device=device)

    def _to_file(self):
        """What a model file needs of the fitted embedder beyond its public state.

        Returns
        -------
        state : dict
            ``"architecture"``: the ``model_name``, ``model_kwargs`` and
            ``image_size`` that rebuild ``module_`` without download (the
            classifier's, for an embedder copied from one).
        """
        return {"architecture": self._architecture}

    @classmethod
    def _from_file(cls, params, *, module, image_size, architecture, feature_names_in=None,
                   n_features_in=None):
        """A fitted embedder of ``params`` whose network is ``module``, read from a model file.

        Parameters
        ----------
        params : dict
            The saved parameters, validated here.
        module : SiameseNet
            The rebuilt network, holding the saved weights.
        image_size : int
            Its input size.
        architecture : dict
            As :meth:`_to_file` gave it.
        feature_names_in : array-like of str, default=None
            The saved ``feature_names_in_`` (they imply ``n_features_in_=1``).
        n_features_in : int, default=None
            The saved ``n_features_in_``; None where ``fit`` saw no ``X``.

        Returns
        -------
        embedder : ImageEmbedder
        """
        embedder = cls(**params)
        embedder._validate_params()
        return embedder._set_network(module, image_size, architecture, feature_names_in,
                                     n_features_in=n_features_in)

    def export_onnx(self, path, *, opset=None, quantize=None, calibration_images=None):
        """Export the fitted embedder to an ONNX file that runs without PyTorch.

        The file holds the embedding graph and its metadata, and is run by
        :class:`sklearn_imgpair.onnx.OnnxImageMatcher` (``transform``) or by
        any ONNX runtime. The graph computes in float32, whatever
        ``precision`` is.

        * Input ``images``: ``uint8`` RGB images of shape
          ``(N, 3, image_size_, image_size_)``, decoded and resized as
          ``transform`` does (scaling to [0, 1] and the mean/std
          normalisation happen inside the graph); ``N`` is dynamic.
        * Output ``embeddings``: unit-length vectors of shape
          ``(N, embedding_dim_)``.
        * Metadata (``metadata_props``): the format name
          (``sklearn-imgpair-onnx``) and version, ``estimator``,
          ``model_name``, ``image_size``, ``mean``, ``std``,
          ``embedding_dim``, ``quantization``, ``opset`` and the library
          versions.

        Parameters
        ----------
        path : str or path-like
            The file to write, by convention with a ``.onnx`` suffix; it is
            written atomically.
        opset : int, default=None
            ONNX opset, 18 or later; None uses the exporter's default.
        quantize : {"int8"}, default=None
            ``"int8"``: dynamic quantisation of the weights with onnxruntime
            (see :meth:`ImagePairClassifier.export_onnx`). None keeps float32.
        calibration_images : array-like of shape (n_images,), default=None
            With ``quantize="int8"``: static quantisation, calibrated on
            these images (as :meth:`transform` takes them).

        Returns
        -------
        path : str
            The absolute path written.

        Raises
        ------
        ImportError
            If the ``onnx`` extra (onnx, onnxscript, onnxruntime) or torch
            >= 2.6 is missing.
        RuntimeError
            If the exported graph does not reproduce the network on random
            images.
        """
        check_is_fitted(self)
        return export_embedder(self, path, model_name=self._architecture["model_name"],
                               opset=opset, quantize=quantize,
                               calibration_images=calibration_images)


def search_embedder(embedder, classifier):
    """The unfitted embedder of a search, and its match threshold (None without a classifier).

    ``embedder`` is cloned (None, without ``classifier``: ``ImageEmbedder()``).
    A fitted ``classifier`` (or a FrozenEstimator of one) gives an embedder that
    copies its network, on its device, in its precision and with its batch size
    of prediction (``iterator_valid__batch_size``, else ``"auto"``), and its
    ``threshold``. ``ValueError`` if both are given.
    """
    if classifier is None:
        return (ImageEmbedder() if embedder is None else clone(embedder)), None
    if embedder is not None:
        raise ValueError("Give ImageNeighbors an embedder or a classifier, not both.")
    classifier = fitted_classifier(classifier)
    embedder = ImageEmbedder(
        classifier=classifier,
        batch_size=classifier.get_params_for("iterator_valid").get("batch_size", "auto"),
        device=str(next(classifier.module_.parameters()).device),
        precision=classifier.precision, num_workers=classifier.num_workers)
    return embedder, float(classifier.threshold)
