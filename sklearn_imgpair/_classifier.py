"""ImagePairClassifier: a Siamese timm backbone fitted on pairs of images with skorch."""

import numpy as np
import torch
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import roc_auc_score
from skorch.dataset import ValidSplit
from skorch.utils import is_dataset

from sklearn_imgpair._deploy.onnx_export import export_classifier
from sklearn_imgpair._images.validation import (
    check_match_labels,
    check_pair_features,
    check_pairs,
)
from sklearn_imgpair._matching import (
    class_probabilities,
    decision_scores,
    match_column,
    match_logits,
    predicted_labels,
)
from sklearn_imgpair._nn.backbone import BACKBONE_PARAMETER_CONSTRAINTS
from sklearn_imgpair._nn.device import RUNTIME_PARAMETER_CONSTRAINTS
from sklearn_imgpair._nn.siamese import SiameseNet, image_embedder, pair_scorer
from sklearn_imgpair._persistence.classifier_file import load_classifier, save_classifier
from sklearn_imgpair._training.fitting import fit_pairs
from sklearn_imgpair._training.net import PAIR_NET_PARAMETER_CONSTRAINTS, PairNet

__all__ = ["ImagePairClassifier"]


class ImagePairClassifier(PairNet):
    """Siamese image-pair matcher with a shared timm backbone, as a skorch net.

    Both images of a pair go through one backbone (one set of weights). Their
    L2-normalised embeddings give a cosine similarity, and a learnable head
    turns it into a match logit ``scale * cosine + bias``. Training uses
    binary cross-entropy on the labelled pairs; after training (with a
    validation split) the head is refitted on the validation pairs in
    Fisher's z of the cosine,
    ``scale * atanh(cosine) + bias`` (:class:`HeadCalibration`), so that
    ``predict_proba`` is a calibrated match probability, the default
    threshold of 0.5 a sensible decision rule, and an image paired with
    itself gets a probability near 1.

    This is a :class:`skorch.NeuralNetBinaryClassifier`: every skorch
    parameter (``lr``, ``max_epochs``, ``batch_size``, ``optimizer``,
    ``callbacks``, ``train_split``, ``device``, ``verbose``, ``iterator_*``,
    ``optimizer__*``, ...) works as in skorch.

    Parameters
    ----------
    model_name : str, default="swin_tiny_patch4_window7_224"
        Name of the timm backbone. Any :func:`timm.create_model` name works.

    pretrained : bool, default=True
        Start from the model's pretrained weights: from the local cache, else
        downloaded from the model hub. Offline, and without a cached copy,
        ``fit`` fails at once with an ``OSError`` that says to pass
        ``weights_path`` or ``pretrained=False``.

    weights_path : str or path-like, default=None
        Local ``.pth``, ``.bin`` or ``.safetensors`` checkpoint of the
        backbone; takes precedence over ``pretrained``.

    model_kwargs : dict, default=None
        Extra keyword arguments for :func:`timm.create_model`, for example a
        small Swin: ``dict(embed_dim=32, depths=(2, 2), num_heads=(2, 4),
        window_size=4, patch_size=4)``.

    image_size : int, default=None
        Side length in pixels of the square images the backbone sees. None
        uses the model's own input size (224 for the default).

    match_label : int, str or bool, default=1
        The label of ``y`` that means "both images show the same thing".

    time_limit : float, default=None
        Wall-clock budget in seconds for the whole of ``fit``, reading the
        images included (``time_budget_``). Training stops by itself before
        the budget runs out and keeps the best weights seen so far, and the
        learning rate reaches its floor when the budget ends. None trains for
        ``max_epochs``.

    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, the validation split, shuffling and
        augmentation. An int makes two fits on CPU give identical models.

    augment : bool or torch.nn.Module, default=True
        Identity-preserving augmentation of training images (crops to 60 %
        of the side, shifts, rotations up to 20 degrees, flips, brightness and
        contrast up to 25 %; see :class:`ViewAugmentation`, whose defaults
        were chosen by measurement). A module replaces the default
        augmentation; False switches it off.

    head_lr : float, default=0.01
        Learning rate of the two parameters of the match head (scale and
        bias), which need larger steps than the backbone's weights to follow
        the cosine distribution quickly.

    cache_size : float, default=1024
        Memory in MB for decoded, resized training images, so that each
        image file is decoded once per ``fit`` rather than once per pair and
        epoch. 0 decodes on every read. With ``iterator_train__num_workers``
        above 0 each worker keeps its own cache; add
        ``iterator_train__persistent_workers=True`` so it lasts across epochs.

    pair_mining : {"graph", "none"}, default="graph"
        ``"graph"`` also learns from identities mined from the labelled
        pairs: images joined by a chain of matching pairs are views of one
        identity (the components of the match graph), every training batch
        of pairs is joined by ``views_per_identity`` views of each of several
        identities, and a supervised contrastive loss (weight
        ``mining_weight``) pulls views of one identity together and pushes
        other identities apart. The match head, hence the probability, still
        learns from the listed pairs alone; validation pairs are never mined.
        Use ``"none"`` when images in different components may show the same
        identity, when labels are not about identity, or to keep a training
        step as cheap as possible (mining adds half as many images again).

    views_per_identity : int, default=4
        Images of each identity in a mined batch (K). Identities with fewer
        images repeat them, differently augmented.

    hard_identities : float, default=0.0
        Share of the identities of each mined batch that are not drawn at
        random but are the nearest look-alikes of the drawn ones in the
        embedding being learned (running centroids of the identities' views,
        updated after every step at no extra forward pass), so that the
        identity loss spends its batch on look-alikes rather than on
        identities already far apart.

    mining_weight : float, default=1.0
        Weight of the identity loss beside the pairs' cross-entropy.

    mining_temperature : float, default=0.1
        Temperature of the supervised contrastive loss; lower values focus
        on the hardest negatives.

    on_error : {"raise", "warn"}, default="raise"
        What an unreadable image (missing, empty, truncated, not an image,
        above PIL's pixel limit) does. ``"raise"``: an error naming the row,
        column and path, before any training. ``"warn"``: ``fit`` leaves its
        pairs out; prediction gives exactly its rows NaN in ``predict_proba``
        and ``decision_function``, the non-match label in ``predict`` and no
        say in ``score``; each call issues one :class:`UnreadableImageWarning`
        listing them. No image is ever replaced silently.

    num_workers : int or None, default=None
        Processes that decode images in parallel with the network when
        images are embedded for prediction, as in :class:`ImageEmbedder`.
        None sizes them to the machine (on CUDA every core but one, at most
        16; on CPU one per 8 cores; never more than the batches to read); 0
        decodes in the main process. ``fit`` reads every training image once,
        on several threads, into the ``cache_size`` cache before training;
        ``iterator_train__num_workers`` sets training's own workers.

    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Arithmetic of the backbone, by :func:`torch.autocast`; embeddings,
        the head and the losses stay float32. ``"auto"`` trains in fp32 and
        predicts in bf16 where the device computes it natively, else in fp32
        (``precision_``; see the user guide's speed page). ``"bf16"``
        (emulated, and warned about, on CPUs without it) and ``"fp16"``
        (CUDA, with loss scaling) apply to ``fit`` too, which raises a
        ``ValueError`` where the device cannot do them.

    freeze_backbone : bool, default=False
        Train the match head alone: ``fit`` embeds each distinct image once,
        without augmentation or mining, and trains the head's scale and bias
        on the embeddings (seconds instead of hours on a CPU). Validation,
        early stopping and calibration work as usual.

    module : type, default=SiameseNet
        The torch module class; it receives ``backbone``, ``mean``, ``std``
        and ``augment``, plus any ``module__*`` parameters.

    criterion : type, default=torch.nn.BCEWithLogitsLoss
        Loss on the match logits.

    optimizer : type, default=torch.optim.AdamW
        Optimizer class.

    lr : float, default=1e-4
        Peak learning rate of the backbone (1e-4 suits pretrained weights,
        about 1e-3 a small model from random weights). The ``lr_schedule``
        callback (:class:`CosineSchedule`) warms it up, then decays it over
        the time budget or ``max_epochs``.

    max_epochs : int, default=10
        Largest number of passes over the training pairs.

    batch_size : int, default=32
        Pairs per training batch (two images each). Prediction embeds images
        in batches chosen for the device and ``image_size_`` (8 images of
        224 px on a CPU), or of ``iterator_valid__batch_size`` where set.

    train_split : callable or None, default=ValidSplit(0.1, stratified=True)
        Holds out 10 % of the pairs for validation: the ``early_stopping``
        callback (:class:`AucEarlyStopping`) stops after 5 epochs without a
        better validation ROC AUC and restores the best epoch's weights, and
        the ``calibration`` callback (:class:`HeadCalibration`) then refits
        the head's scale and bias on that epoch's validation logits.
        :class:`IdentityValidSplit` holds out whole identities instead. None
        trains on all pairs, without either.

    threshold : float, default=0.5
        Match probability above which ``predict`` returns ``match_label``.

    verbose : int, default=0
        0 is silent, 1 prints a table row per epoch, 2 adds a progress bar
        per epoch.

    device : str or torch.device, default="auto"
        Where the network runs, e.g. ``"cpu"`` or ``"cuda"``; ``"auto"`` takes
        CUDA, else MPS (Apple GPUs), else the CPU (the parameter keeps
        ``"auto"``; the attribute ``device`` reads as the device chosen).

    iterator_train__shuffle : bool, default=True
        Shuffle the training pairs every epoch (skorch's own default is
        False).

    **kwargs
        Further skorch parameters, such as ``callbacks``,
        ``iterator_train__num_workers`` or ``optimizer__weight_decay``.

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
        The two labels seen in ``fit``, sorted.

    module_ : SiameseNet
        The fitted network.

    image_size_ : int
        Side length the images are resized to.

    embedding_dim_ : int
        Length of the embedding vectors: the backbone's features, and the
        colour histogram's 512 with ``module__colour_share`` above 0.

    n_features_in_ : int
        Always 2: two image columns.

    history_ : skorch.History
        Per-epoch and per-batch training records.

    time_budget_ : TimeBudget
        The time budget of the last ``fit`` or ``partial_fit``.

    grad_scaler_ : torch.amp.GradScaler or None
        The fp16 loss scaler (``precision="fp16"``), else None.

    precision_ : {"fp32", "bf16", "fp16"}
        The precision prediction runs in on this machine: ``precision``, with
        ``"auto"`` resolved for the device the network is on.

    See Also
    --------
    skorch.NeuralNetBinaryClassifier : The skorch net this class extends.

    Notes
    -----
    A cell of ``X`` is an image path, an image in memory (the bytes of an
    image file, a PIL image, a ``uint8`` array) or several images of one
    item (a list or tuple of these, or paths joined by ``";"``); see
    :func:`check_pairs`, and :ref:`images-in-memory` for how each is
    decoded, embedded and trained on. At prediction time each distinct
    image in ``X`` is decoded and embedded once, however many pairs share it.

    Examples
    --------
    >>> from sklearn_imgpair import ImagePairClassifier
    >>> clf = ImagePairClassifier(pretrained=False, image_size=32, max_epochs=2,
    ...                           model_kwargs=TINY_SWIN, random_state=0)
    >>> proba = clf.fit(X, y).predict_proba(X)
    >>> proba.shape == (len(X), 2)
    True
    >>> clf.classes_
    array([0, 1])
    """

    _parameter_constraints = {**BACKBONE_PARAMETER_CONSTRAINTS, **RUNTIME_PARAMETER_CONSTRAINTS,
                              **PAIR_NET_PARAMETER_CONSTRAINTS}

    def __init__(self, model_name="swin_tiny_patch4_window7_224", *, pretrained=True,
                 weights_path=None, model_kwargs=None, image_size=None, match_label=1,
                 time_limit=None, random_state=None, augment=True, head_lr=0.01, cache_size=1024,
                 pair_mining="graph", views_per_identity=4, hard_identities=0.0, mining_weight=1.0,
                 mining_temperature=0.1, on_error="raise", num_workers=None, precision="auto",
                 freeze_backbone=False, module=SiameseNet, criterion=torch.nn.BCEWithLogitsLoss,
                 optimizer=torch.optim.AdamW, lr=1e-4, max_epochs=10, batch_size=32,
                 train_split=ValidSplit(0.1, stratified=True), threshold=0.5, verbose=0,
                 device="auto", iterator_train__shuffle=True, **kwargs):
        self.model_name = model_name
        self.pretrained = pretrained
        self.weights_path = weights_path
        self.model_kwargs = model_kwargs
        self.image_size = image_size
        self.match_label = match_label
        self.time_limit = time_limit
        self.random_state = random_state
        self.augment = augment
        self.head_lr = head_lr
        self.cache_size = cache_size
        self.pair_mining = pair_mining
        self.views_per_identity = views_per_identity
        self.hard_identities = hard_identities
        self.mining_weight = mining_weight
        self.mining_temperature = mining_temperature
        self.on_error = on_error
        self.num_workers = num_workers
        self.precision = precision
        self.freeze_backbone = freeze_backbone
        super().__init__(module, criterion=criterion, optimizer=optimizer, lr=lr,
                         max_epochs=max_epochs, batch_size=batch_size, train_split=train_split,
                         threshold=threshold, verbose=verbose, device=device,
                         iterator_train__shuffle=iterator_train__shuffle, **kwargs)

    def fit(self, X, y, **fit_params):
        """Fit the Siamese network on labelled pairs of images.

        Parameters
        ----------
        X : DataFrame, ndarray of shape (n_pairs, 2) or list of pairs
            Images (see Notes), two per pair, taken by column position.
        y : array-like of shape (n_pairs,)
            Two distinct labels; ``match_label`` marks matching pairs.
        **fit_params : dict
            Passed to skorch's ``fit``; ``sample_weight`` is not supported.

        Returns
        -------
        self : ImagePairClassifier
        """
        return fit_pairs(self, X, y, fit_params)

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        """Continue training on more pairs without re-initialising the network.

        Parameters
        ----------
        X : DataFrame, ndarray of shape (n_pairs, 2) or list of pairs
            Images, two per pair.
        y : array-like of shape (n_pairs,)
            Labels; after the first fit they must be among ``classes_``.
        classes : array-like, default=None
            The two labels, needed when the first call's ``y`` holds only one.
        **fit_params : dict
            Passed to skorch's ``partial_fit``; ``sample_weight`` is not supported.

        Returns
        -------
        self : ImagePairClassifier
        """
        return fit_pairs(self, X, y, fit_params, classes=classes, partial=True)

    def _match_logits(self, X):
        self.check_is_fitted(["module_", "classes_"])
        if is_dataset(X):  # skorch's own scoring callbacks pass datasets
            return self.forward(X).float().numpy().reshape(-1)
        pairs = check_pairs(X)
        check_pair_features(self, X, reset=False)
        # Where the network is: ``device``, or the accelerator's (device=None).
        device = next(self.module_.parameters()).device
        embed_images = image_embedder(
            self.module_, image_size=self.image_size_, on_error=self.on_error,
            batch_size="auto", device=device, precision=self.precision,
            num_workers=self.num_workers, iterator=self.iterator_valid,
            iterator_params=self.get_params_for("iterator_valid"))
        return match_logits(pairs, embed_images, pair_scorer(self.module_, device),
                            on_error=self.on_error)

    def _match_column(self):
        return match_column(self.classes_, self.match_label)

    def decision_function(self, X):
        """Match logits, signed for ``classes_[1]`` as scikit-learn expects.

        With the usual labels (``match_label`` is the larger label, e.g. 1 in
        {0, 1}) this is ``scale * link(cosine) + bias`` (``link`` is
        ``atanh`` once the head is calibrated, see :class:`HeadCalibration`);
        otherwise its negation.

        Parameters
        ----------
        X : DataFrame, ndarray of shape (n_pairs, 2) or list of pairs
            Images, two per pair (see Notes).

        Returns
        -------
        scores : ndarray of shape (n_pairs,)
        """
        return decision_scores(self._match_logits(X), self._match_column())

    def predict_proba(self, X):
        """Probabilities of the two classes, in ``classes_`` order.

        Parameters
        ----------
        X : DataFrame, ndarray of shape (n_pairs, 2) or list of pairs
            Images, two per pair (see Notes).

        Returns
        -------
        proba : ndarray of shape (n_pairs, 2), dtype=float64
        """
        return class_probabilities(self._match_logits(X), self._match_column())

    def predict(self, X):
        """Predict ``match_label`` where the match probability exceeds ``threshold``.

        Parameters
        ----------
        X : DataFrame, ndarray of shape (n_pairs, 2) or list of pairs
            Images, two per pair (see Notes).

        Returns
        -------
        y_pred : ndarray of shape (n_pairs,)
            Labels from ``classes_``.
        """
        return predicted_labels(self.predict_proba(X), self.classes_, self._match_column(),
                                self.threshold)

    def score(self, X, y, sample_weight=None):
        """ROC AUC of the match probability against the true labels.

        Parameters
        ----------
        X : DataFrame, ndarray of shape (n_pairs, 2) or list of pairs
            Images, two per pair (see Notes).
        y : array-like of shape (n_pairs,)
            True labels, holding both classes.
        sample_weight : array-like of shape (n_pairs,), default=None
            Sample weights.

        Returns
        -------
        score : float
            With ``on_error="warn"``, measured on the pairs whose images could
            be read.
        """
        match = self.predict_proba(X)[:, self._match_column()]
        _, targets = check_match_labels(y, self.match_label, len(match))
        readable = ~np.isnan(match)
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight)[readable]
        return float(roc_auc_score(targets[readable], match[readable],
                                   sample_weight=sample_weight))

    #: Parameters of a subclass that a plain classifier's model file leaves out (read by
    #: :meth:`_to_file`), so that :meth:`load` of this class reads the file.
    _not_saved = ()

    def save(self, path):
        """Save the fitted classifier to one file that holds no pickle.

        Weights as safetensors; parameters, ``classes_``, preprocessing,
        history and versions as JSON, with a SHA-256 checksum; written
        atomically. Parameters that JSON cannot hold (callback objects, a
        ``RandomState``) are saved as their defaults, with a warning.

        Parameters
        ----------
        path : str or path-like
            The file to write, by convention with a ``.safetensors`` suffix.

        Returns
        -------
        path : str
            The absolute path written.
        """
        self.check_is_fitted(["module_", "classes_"])
        return save_classifier(self, path)

    @classmethod
    def load(cls, path, *, device=None):
        """Load a classifier saved with :meth:`save`, without running code from the file.

        Works offline and without the original weights file.

        Parameters
        ----------
        path : str or path-like
            A file written by :meth:`save`.
        device : str or torch.device, default=None
            Where the network runs; None keeps the saved device (or the CPU,
            with a warning, where that is missing).

        Returns
        -------
        clf : ImagePairClassifier
            A fitted classifier that predicts as the saved one did.

        Raises
        ------
        FileNotFoundError
            If ``path`` does not exist.
        ValueError
            If the file is not such a model file, is truncated, corrupt or
            modified, or was written by a newer version of the format.
        """
        return load_classifier(cls, path, device=device)

    def _to_file(self):
        """The parameters that :meth:`save` writes, by name.

        ``get_params(deep=False)`` less the parameters named in ``_not_saved``,
        with ``device=None`` written as ``"cpu"``. The fitted state the file
        holds is public (``module_``, ``classes_``, ``image_size_``, ...), and
        :meth:`load` restores it as such.

        Returns
        -------
        params : dict
        """
        params = self.get_params(deep=False)
        params["device"] = params["device"] or "cpu"
        return {name: value for name, value in params.items() if name not in self._not_saved}

    def export_onnx(self, path, *, opset=None, quantize=None, calibration_images=None):
        """Export the fitted matcher to an ONNX file that runs without PyTorch.

        The file holds the pair graph and its metadata, and is run by
        :class:`sklearn_imgpair.onnx.OnnxImageMatcher` (onnxruntime, numpy and
        PIL only) or by any ONNX runtime; its inputs, outputs and metadata are
        described in the user guide (:ref:`onnx-file-format`). The graph
        computes in float32, whatever ``precision`` is.

        Parameters
        ----------
        path : str or path-like
            The file to write, by convention with a ``.onnx`` suffix; it is
            written atomically.
        opset : int, default=None
            ONNX opset, 18 or later; None uses the exporter's default (20
            with torch 2.14). onnxruntime runs opset 20 from version 1.17.
        quantize : {"int8"}, default=None
            ``"int8"``: dynamic quantisation of the weights (7 bits, per
            output channel) with onnxruntime, about a quarter of the file
            size and faster on CPUs with int8 instructions; probabilities
            within a few hundredths of float32's. None keeps float32.
        calibration_images : array-like of shape (n_images,), default=None
            With ``quantize="int8"``: static quantisation, calibrated on a
            few dozen to a few hundred images of the kind the model will see
            (as :meth:`ImageEmbedder.transform` takes them), closer to
            float32 (see :ref:`int8-dynamic-or-static`).

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
            images (checked with onnxruntime after every export).
        """
        self.check_is_fitted(["module_", "classes_"])
        return export_classifier(self, path, opset=opset, quantize=quantize,
                                 calibration_images=calibration_images)


def fitted_classifier(classifier):
    """The fitted :class:`ImagePairClassifier` in ``classifier``, out of a FrozenEstimator.

    A :class:`~sklearn.frozen.FrozenEstimator` keeps a fitted classifier
    fitted through :func:`~sklearn.base.clone`; other wrappers
    (``CalibratedClassifierCV``, ``TunedThresholdClassifierCV``) change the
    probabilities or the threshold, which a search over embeddings cannot
    apply, so they are refused rather than silently bypassed.

    Raises
    ------
    TypeError
        If ``classifier`` is not an ImagePairClassifier, frozen or not.
    sklearn.exceptions.NotFittedError
        If it is not fitted.
    """
    inner = classifier.estimator if isinstance(classifier, FrozenEstimator) else classifier
    if not isinstance(inner, ImagePairClassifier):
        raise TypeError(
            "classifier must be a fitted ImagePairClassifier, or one in a FrozenEstimator; got "
            f"{type(classifier).__name__}. Wrappers that recalibrate probabilities or tune the "
            "threshold cannot be applied to embeddings: set a tuned threshold on the "
            "classifier itself (clf.set_params(threshold=...)).")
    inner.check_is_fitted()
    return inner
