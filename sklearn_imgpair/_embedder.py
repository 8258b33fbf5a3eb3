"""ImageEmbedder: image paths in, L2-normalised embedding vectors out."""

import copy
import os
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import _check_feature_names, check_is_fitted

from sklearn_imgpair._backbone import (
    BACKBONE_PARAMETER_CONSTRAINTS,
    create_backbone,
    resolve_preprocessing,
)
from sklearn_imgpair._cache import EmbeddingCache, file_key, model_fingerprint
from sklearn_imgpair._dataset import ImageDataset
from sklearn_imgpair._module import SiameseNet
from sklearn_imgpair._runtime import (
    PRECISIONS,
    autocast,
    check_precision,
    loader_kwargs,
    to_device,
)
from sklearn_imgpair._seeding import seeded
from sklearn_imgpair._validation import check_paths

__all__ = ["ImageEmbedder", "embed_images"]


def embed_images(module, batches, device):
    """Embed every batch of ``(images, _)`` with ``module.embed`` in eval mode.

    Parameters
    ----------
    module : SiameseNet
        Network whose ``embed`` maps uint8 images to unit vectors.
    batches : iterable of (Tensor, Any)
        Batches as an :class:`ImageDataset` loader yields them.
    device : str or torch.device
        Where the network runs.

    Returns
    -------
    embeddings : Tensor of shape (n_images, d)
    """
    module.eval()
    chunks = []
    with torch.no_grad():
        for images, _ in batches:
            chunks.append(module.embed(to_device(images, device)))
    return torch.cat(chunks)


def _resolve_device(device):
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class ImageEmbedder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Turn image paths into L2-normalised embedding vectors.

    The backbone is a timm model, built exactly as :class:`ImagePairClassifier`
    builds its own, or the backbone of a fitted classifier (``classifier=``),
    in which case the vectors are the ones whose cosine the classifier scores.
    ``fit`` learns nothing from the data: it builds (or copies) the network.

    Each distinct path is decoded once per ``transform``, and embeddings are
    cached by model weights and file identity (absolute path, size and
    modification time), so that refitting clones (as ``GridSearchCV`` does)
    or transforming the same images again costs no second pass. The cache
    lives in process memory (``cache``) and, with ``memory``, also on disk.

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

    batch_size : int, default=32
        Images per forward pass.

    device : str, default="cpu"
        ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``), or ``"auto"`` for CUDA when
        available.

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

    random_state : int or None, default=0
        Seeds the random initialisation when ``pretrained=False`` and no
        weights are given, so that two fits give the same vectors.

    num_workers : int or None, default=None
        Processes that decode images in parallel with the network
        (:class:`torch.utils.data.DataLoader` workers). None sizes them to
        the machine: on CUDA every core but one (at most 16); on CPU one per
        8 cores, so none below 8 cores, where workers would take cores from
        the model's own threads; and never more than the batches to read.
        0 decodes in the main process.

    precision : {"fp32", "bf16", "fp16"}, default="fp32"
        Arithmetic of the backbone, by :func:`torch.autocast`; the vectors
        are float32 and unit length either way. ``"bf16"`` runs on CPUs with
        bfloat16 instructions (AVX512-BF16 or AMX; elsewhere it is emulated,
        slow, and ``fit`` warns) and on recent GPUs: about 2-3 times faster
        for swin_tiny on such a CPU, with vectors within a cosine of 0.9999
        of fp32. ``"fp16"`` is for CUDA only. ``fit`` raises a
        ``ValueError`` where the device cannot do it. Cached vectors are
        kept apart per precision.

    Attributes
    ----------
    module_ : SiameseNet
        The network; ``module_.embed`` maps images to vectors.

    image_size_ : int
        Side length the images are resized to.

    embedding_dim_ : int
        Length of each output vector.

    n_features_in_ : int
        Always 1: one column of image paths.

    feature_names_in_ : ndarray of shape (1,)
        The column name, when ``X`` in ``fit`` was a DataFrame with string
        column names.

    See Also
    --------
    ImagePairClassifier : Fits the backbone on labelled pairs.
    PairFeatures : Pair features for scikit-learn classifiers.

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
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "classifier": [HasMethods(["predict_proba"]), None],
        "cache": ["boolean"],
        "memory": [str, os.PathLike, HasMethods(["cache"]), None],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
        "num_workers": [Interval(Integral, 0, None, closed="left"), None],
        "precision": [StrOptions(set(PRECISIONS))],
    }

    def __init__(self, model_name="swin_tiny_patch4_window7_224", *, pretrained=True,
                 weights_path=None, model_kwargs=None, image_size=None, batch_size=32,
                 device="cpu", classifier=None, cache=True, memory=None, random_state=0,
                 num_workers=None, precision="fp32"):
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
        self.num_workers = num_workers
        self.precision = precision

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.one_d_array = True
        tags.input_tags.two_d_array = True
        tags.requires_fit = True
        return tags

    def _build_module(self):
        if self.classifier is not None:
            # A FrozenEstimator keeps a fitted classifier fitted through clone().
            classifier = getattr(self.classifier, "estimator", self.classifier)
            classifier.check_is_fitted()
            return copy.deepcopy(classifier.module_), classifier.image_size_
        with seeded(self.random_state):
            backbone = create_backbone(self.model_name, pretrained=self.pretrained,
                                       weights_path=self.weights_path,
                                       image_size=self.image_size,
                                       model_kwargs=self.model_kwargs)
        preprocessing = resolve_preprocessing(backbone, self.image_size)
        module = SiameseNet(backbone, mean=preprocessing["mean"], std=preprocessing["std"])
        return module, preprocessing["image_size"]

    def fit(self, X=None, y=None):
        """Build the network (or copy the classifier's); nothing is learnt from X.

        Parameters
        ----------
        X : list, 1-D array, Series or one-column table of image paths, default=None
            Validated when given.
        y : None
            Ignored.

        Returns
        -------
        self : ImageEmbedder
        """
        self._validate_params()
        check_precision(self.precision, _resolve_device(self.device))
        if X is not None:
            check_paths(X)
            _check_feature_names(self, X, reset=True)
        module, self.image_size_ = self._build_module()
        self.module_ = module.to(_resolve_device(self.device)).eval()
        self.embedding_dim_ = int(self.module_.backbone.num_features)
        self.n_features_in_ = 1
        # Reduced precision gives (slightly) other vectors: cache them apart.
        size_key = (self.image_size_ if self.precision == "fp32"
                    else f"{self.image_size_}:{self.precision}")
        self._fingerprint = model_fingerprint(self.module_, size_key)
        return self

    @property
    def _n_features_out(self):
        return self.embedding_dim_

    def _embedding_cache(self):
        location = getattr(self.memory, "location", self.memory)
        return EmbeddingCache(location, in_memory=self.cache)

    def transform(self, X):
        """Embed images.

        Parameters
        ----------
        X : list, 1-D array, Series or one-column table of image paths
            Each distinct path is read once.

        Returns
        -------
        embeddings : ndarray of shape (n_images, embedding_dim_), dtype=float32
            Unit-length rows, in the order of ``X``.
        """
        check_is_fitted(self)
        paths = check_paths(X)
        unique, first, inverse = np.unique(paths, return_index=True, return_inverse=True)
        names = [f"X[{row}]" for row in first]
        keys = []
        for path, name in zip(unique, names):
            try:
                keys.append(file_key(path))
            except FileNotFoundError:
                raise FileNotFoundError(f"{name}: image file not found: {path!r}.") from None
        cache = self._embedding_cache()
        vectors = np.empty((len(unique), self.embedding_dim_), dtype=np.float32)
        missing = []
        for index, key in enumerate(keys):
            vector = cache.get(self._fingerprint, key)
            if vector is None:
                missing.append(index)
            else:
                vectors[index] = vector
        if missing:
            dataset = ImageDataset(unique[missing], self.image_size_,
                                   names=[names[i] for i in missing])
            device = _resolve_device(self.device)
            batches = torch.utils.data.DataLoader(
                dataset, batch_size=self.batch_size,
                **loader_kwargs(device, self.num_workers, len(dataset), self.batch_size))
            with autocast(self.precision, device):
                computed = embed_images(self.module_, batches, device)
            computed = computed.float().cpu().numpy()
            for index, vector in zip(missing, computed):
                vectors[index] = vector
                cache.put(self._fingerprint, keys[index], vector)
        return vectors[inverse.reshape(-1)]
