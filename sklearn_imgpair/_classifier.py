"""ImagePairClassifier: a Siamese timm backbone fitted on pairs of image paths with skorch."""

import json
import time
import warnings
from collections.abc import Mapping
from functools import partial
from numbers import Integral, Real

import numpy as np
import torch
from skorch import NeuralNet, NeuralNetBinaryClassifier
from skorch.callbacks import (
    EpochScoring,
    EpochTimer,
    PassthroughScoring,
    PrintLog,
    ProgressBar,
)
from skorch.dataset import ValidSplit
from skorch.dataset import unpack_data
from skorch.history import History
from skorch.utils import is_dataset, to_tensor
from sklearn.metrics import roc_auc_score
from sklearn.utils._param_validation import (
    Interval,
    StrOptions,
    validate_parameter_constraints,
)

from sklearn_imgpair._augment import ViewAugmentation
from sklearn_imgpair._backbone import (
    BACKBONE_PARAMETER_CONSTRAINTS,
    create_backbone,
    expected_image_size,
    resolve_preprocessing,
)
from sklearn_imgpair._callbacks import (
    AucEarlyStopping,
    CosineSchedule,
    TimeLimit,
    valid_roc_auc,
)
from sklearn_imgpair._dataset import DecodedImageCache, ImageDataset, PairDataset, load_image
from sklearn_imgpair._embedder import embed_images
from sklearn_imgpair._frozen import EmbeddingPairDataset
from sklearn_imgpair._graph import image_identities
from sklearn_imgpair._mining import (
    IdentityBatches,
    IdentitySampler,
    supervised_contrastive_loss,
    training_pairs,
    unwrap_subsets,
)
from sklearn_imgpair._module import SiameseNet
from sklearn_imgpair._persistence import (
    constructor_defaults,
    decode_labels,
    decode_params,
    encode_labels,
    load_module_state,
    persisted_params,
    read_model_file,
    rebuilding,
    resolve_load_device,
    write_model_file,
)
from sklearn_imgpair._runtime import (
    PRECISIONS,
    autocast,
    check_precision,
    device_type,
    grad_scaler,
    loadable_precision,
    loader_kwargs,
    score_pairs,
    to_device,
)
from sklearn_imgpair._seeding import seeded
from sklearn_imgpair._unreadable import ON_ERROR_OPTIONS, decode_pair_images, warn_unreadable
from sklearn_imgpair._validation import (
    check_files_exist,
    check_match_labels,
    check_pairs,
    distinct_paths,
)

__all__ = ["ImagePairClassifier"]


def _json_scalar(value):
    """JSON form of the numpy scalars and other values a skorch history may hold."""
    if isinstance(value, np.generic):
        return value.item()
    return repr(value)


class ImagePairClassifier(NeuralNetBinaryClassifier):
    """Siamese image-pair matcher with a shared timm backbone, as a skorch net.

    Both images of a pair go through one backbone (one set of weights). Their
    L2-normalised embeddings give a cosine similarity, and a learnable head
    turns it into a match logit ``scale * cosine + bias``. Training uses
    binary cross-entropy on the labelled pairs, so ``predict_proba`` is a
    calibrated match probability and the default threshold of 0.5 is a
    sensible decision rule.

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
        Wall-clock budget in seconds for the whole of ``fit``. Training stops
        by itself before the budget runs out and keeps the best weights seen
        so far. None trains for ``max_epochs``.

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
        ``"graph"`` learns from identities mined from the labelled pairs as
        well as from the pairs themselves. Images joined by a chain of
        matching pairs (a-b and b-c) are taken as views of one identity, the
        connected components of the match graph; every training batch of
        pairs is joined by as many images again, ``views_per_identity`` views
        of each of several identities, and a supervised contrastive loss on
        their embeddings (weight ``mining_weight``) pulls views of one
        identity together and pushes other identities apart. Two views of one
        identity are never a negative pair, and the match head, hence the
        probability, is still trained on the listed pairs alone, in their
        class balance. The assumption: images in different components are
        different identities unless a matching pair links them. Switch to
        ``"none"`` (plain training on the listed pairs) when that does not
        hold, e.g. when the same object appears in separate components
        because its views were never paired, or when the labels are not about
        identity at all (e.g. "similar style"); also when a training step
        must stay as cheap as possible (mining adds half as many images
        again to every step). Only the training pairs are mined, never the
        validation split.

    views_per_identity : int, default=4
        Images of each identity in a mined batch (K). Identities with fewer
        images repeat them, differently augmented.

    mining_weight : float, default=1.0
        Weight of the identity loss beside the pairs' cross-entropy.

    mining_temperature : float, default=0.1
        Temperature of the supervised contrastive loss; lower values focus
        on the hardest negatives.

    on_error : {"raise", "warn"}, default="raise"
        What an image that cannot be read (missing, empty, truncated, not an
        image, above PIL's pixel limit) does. ``"raise"``: an error naming
        the row, column and path; ``fit`` reads every image once before
        training starts, so it fails before any training. ``"warn"``, for
        long batch jobs: ``fit`` leaves the pairs with unreadable images out,
        and prediction gives exactly the rows that use one NaN in
        ``predict_proba`` and ``decision_function``, the non-match label in
        ``predict`` (NaN is not above the threshold) and no say in ``score``;
        each call issues one :class:`UnreadableImageWarning` that lists them
        (all of them in its ``failures`` and ``rows`` attributes). No image
        is ever replaced silently.

    num_workers : int or None, default=None
        Processes that decode images in parallel with the network at
        prediction time (:class:`torch.utils.data.DataLoader` workers). None
        sizes them to the machine: on CUDA every core but one (at most 16);
        on CPU one per 8 cores, so none below 8 cores, where workers would
        take cores from the model's own threads; and never more than the
        batches to read. 0 decodes in the main process. ``fit`` decodes
        every distinct training image once, on several threads, into the
        ``cache_size`` cache before training, so training batches come from
        memory; training itself uses ``iterator_train__num_workers``
        (default 0), worth raising when the training images do not fit in
        the cache.

    precision : {"fp32", "bf16", "fp16"}, default="fp32"
        Arithmetic of the backbone's forward and backward passes, by
        :func:`torch.autocast`; embeddings, cosines, the head and the losses
        stay float32. ``"bf16"`` runs on CPUs with bfloat16 instructions
        (AVX512-BF16 or AMX; elsewhere it is emulated, slow, and ``fit``
        warns) and on recent GPUs; on such a CPU it made swin_tiny inference
        2-3 times faster, with embeddings within a cosine of 0.9999 of fp32
        (``benchmarks/bench_inference.py``). ``"fp16"`` is for CUDA only, with
        loss scaling in training. ``fit`` raises a ``ValueError`` where the
        device cannot do it.

    freeze_backbone : bool, default=False
        Keep the backbone's weights as they are and train the match head
        (scale and bias) alone. ``fit`` then embeds each distinct image of
        ``X`` once, without augmentation (``augment`` and ``pair_mining`` are
        ignored), and trains the head on the cached embeddings: seconds
        instead of hours on a CPU. Validation, early stopping and
        recalibration work as usual, and prediction runs the same way as
        after full training.

    module : type, default=SiameseNet
        The torch module class; it receives ``backbone``, ``mean``, ``std``
        and ``augment``, plus any ``module__*`` parameters.

    criterion : type, default=torch.nn.BCEWithLogitsLoss
        Loss on the match logits.

    optimizer : type, default=torch.optim.AdamW
        Optimizer class.

    lr : float, default=1e-4
        Peak learning rate of the backbone; 1e-4 suits pretrained weights,
        about 1e-3 suits training a small model from random weights. The
        ``lr_schedule`` callback warms the rates up over the first 5 % of
        training and then decays them along a cosine over the time budget
        (``time_limit``) or ``max_epochs``; set ``callbacks__lr_schedule=None``
        for constant rates.

    max_epochs : int, default=10
        Largest number of passes over the training pairs.

    batch_size : int, default=32
        Pairs per batch (two images each).

    train_split : callable or None, default=ValidSplit(0.1, stratified=True)
        Holds out 10 % of the pairs for validation. After each epoch the
        validation ROC AUC (``valid_auc`` in the history) is measured;
        training stops early when it has not improved for 5 epochs, the best
        epoch's weights (best ROC AUC, ties broken by validation loss) are
        restored, and the head's scale and bias are recalibrated on that
        epoch's validation logits (the ``early_stopping`` callback, an
        :class:`AucEarlyStopping`; tune it with
        ``callbacks__early_stopping__patience``). :class:`IdentityValidSplit`
        holds out whole identities instead, so that validation measures
        matching of unseen objects; it needs many identities to be stable.
        None trains on all pairs without validation, early stopping or
        recalibration.

    threshold : float, default=0.5
        Match probability above which ``predict`` returns ``match_label``.

    verbose : int, default=0
        0 is silent, 1 prints a table row per epoch, 2 adds a progress bar
        per epoch.

    device : str or torch.device, default="cpu"
        Where the network runs, e.g. ``"cuda"``.

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
        Length of the backbone's embedding vectors.

    n_features_in_ : int
        Always 2: two image-path columns.

    history_ : skorch.History
        Per-epoch and per-batch training records.

    See Also
    --------
    skorch.NeuralNetBinaryClassifier : The skorch net this class extends.

    Notes
    -----
    Images are decoded with PIL: EXIF orientation is applied, every mode is
    converted to RGB (transparent pixels onto white, 16-bit images rescaled),
    and the image is resized to ``image_size`` without cropping. At
    prediction time each distinct path in ``X`` is decoded and embedded once,
    however many pairs share it.

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

    _parameter_constraints = {
        **BACKBONE_PARAMETER_CONSTRAINTS,
        "match_label": "no_validation",
        "time_limit": [Interval(Real, 0, None, closed="neither"), None],
        "random_state": ["random_state"],
        "augment": ["boolean", torch.nn.Module],
        "head_lr": [Interval(Real, 0, None, closed="neither")],
        "cache_size": [Interval(Real, 0, None, closed="left")],
        "pair_mining": [StrOptions({"graph", "none"})],
        "views_per_identity": [Interval(Integral, 2, None, closed="left")],
        "mining_weight": [Interval(Real, 0, None, closed="left")],
        "mining_temperature": [Interval(Real, 0, None, closed="neither")],
        "on_error": [StrOptions(ON_ERROR_OPTIONS)],
        "num_workers": [Interval(Integral, 0, None, closed="left"), None],
        "precision": [StrOptions(set(PRECISIONS))],
        "freeze_backbone": ["boolean"],
    }

    def __init__(
        self,
        model_name="swin_tiny_patch4_window7_224",
        *,
        pretrained=True,
        weights_path=None,
        model_kwargs=None,
        image_size=None,
        match_label=1,
        time_limit=None,
        random_state=None,
        augment=True,
        head_lr=0.01,
        cache_size=1024,
        pair_mining="graph",
        views_per_identity=4,
        mining_weight=1.0,
        mining_temperature=0.1,
        on_error="raise",
        num_workers=None,
        precision="fp32",
        freeze_backbone=False,
        module=SiameseNet,
        criterion=torch.nn.BCEWithLogitsLoss,
        optimizer=torch.optim.AdamW,
        lr=1e-4,
        max_epochs=10,
        batch_size=32,
        train_split=ValidSplit(0.1, stratified=True),
        threshold=0.5,
        verbose=0,
        device="cpu",
        **kwargs,
    ):
        # Set before skorch's __init__: skorch refuses torch modules (augment)
        # as attributes once the net exists.
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
        self.mining_weight = mining_weight
        self.mining_temperature = mining_temperature
        self.on_error = on_error
        self.num_workers = num_workers
        self.precision = precision
        self.freeze_backbone = freeze_backbone
        super().__init__(
            module,
            criterion=criterion,
            optimizer=optimizer,
            lr=lr,
            max_epochs=max_epochs,
            batch_size=batch_size,
            train_split=train_split,
            threshold=threshold,
            verbose=verbose,
            device=device,
            **kwargs,
        )

    # ------------------------------------------------------------------
    # skorch plumbing
    # ------------------------------------------------------------------

    @property
    def _default_callbacks(self):
        callbacks = [
            ("epoch_timer", EpochTimer()),
            ("lr_schedule", CosineSchedule()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
        ]
        if self.train_split is not None and self.train_split is not False:
            callbacks += [
                ("valid_loss", PassthroughScoring(name="valid_loss")),
                ("valid_auc", EpochScoring(valid_roc_auc, name="valid_auc",
                                           lower_is_better=False, use_caching=True)),
                ("early_stopping", AucEarlyStopping(patience=5, load_best=True)),
            ]
        callbacks.append(("time_limit", TimeLimit()))
        if isinstance(self.verbose, Integral) and self.verbose >= 2:
            callbacks.append(("progress_bar", ProgressBar()))
        callbacks.append(("print_log", PrintLog()))
        return callbacks

    @property
    def classes_(self):
        """The two labels seen in ``fit``, sorted."""
        try:
            return self.__dict__["classes_"]
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__} has no classes_ before fit."
            ) from None

    @classes_.setter
    def classes_(self, value):
        self.__dict__["classes_"] = value

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = True
        tags.classifier_tags.multi_class = False
        tags.non_deterministic = self.random_state is None
        return tags

    def _validate_hyperparameters(self):
        validate_parameter_constraints(
            self._parameter_constraints,
            {name: getattr(self, name) for name in self._parameter_constraints},
            caller_name=type(self).__name__,
        )

    def initialize(self):
        """Validate the parameters, then build the network, optimizer and callbacks."""
        self._validate_hyperparameters()
        check_precision(self.precision, self.device)
        # fp16 gradients underflow without loss scaling; bf16 and fp32 need none.
        self._grad_scaler = grad_scaler(self.device) if self.precision == "fp16" else None
        return super().initialize()

    def initialize_module(self):
        """Build the backbone and wrap it in the Siamese module."""
        backbone = create_backbone(
            self.model_name,
            pretrained=self.pretrained,
            weights_path=self.weights_path,
            image_size=self.image_size,
            model_kwargs=self.model_kwargs,
        )
        preprocessing = resolve_preprocessing(backbone, self.image_size)
        if isinstance(self.augment, torch.nn.Module):
            augment = self.augment
        else:
            augment = ViewAugmentation() if self.augment else None
        kwargs = {
            "backbone": backbone,
            "mean": preprocessing["mean"],
            "std": preprocessing["std"],
            "augment": augment,
            **self.get_params_for("module"),
        }
        self.module_ = self.initialized_instance(self.module, kwargs)
        if self.freeze_backbone:
            self.module_.backbone.requires_grad_(False)
        self.image_size_ = preprocessing["image_size"]
        self.embedding_dim_ = int(backbone.num_features)
        return self

    def get_params_for_optimizer(self, prefix, named_parameters):
        """Put the match head's parameters in their own group with ``head_lr``."""
        # A frozen backbone's weights stay out of the optimizer (and its weight decay).
        named_parameters = [(name, param) for name, param in named_parameters
                            if param.requires_grad]
        args, kwargs = super().get_params_for_optimizer(prefix, named_parameters)
        head = [param for name, param in named_parameters if name.startswith("head.")]
        if prefix != "optimizer" or not head:
            return args, kwargs
        head_ids = {id(param) for param in head}
        groups = []
        for group in args[0]:
            params = [param for param in group["params"] if id(param) not in head_ids]
            if params:
                groups.append({**group, "params": params})
        groups.append({"params": head, "lr": self.head_lr, "weight_decay": 0.0})
        return (groups,), kwargs

    def get_iterator(self, dataset, training=False):
        """Like skorch's, but training batches are shuffled unless told otherwise.

        With ``pair_mining="graph"``, every training batch of pairs also
        carries an identity batch (see :class:`IdentityBatches`).
        """
        iterator = self._pair_iterator(dataset, training=training)
        if training and self.pair_mining == "graph" and not self.freeze_backbone:
            return self._identity_batches(dataset, iterator)
        return iterator

    def _pair_iterator(self, dataset, training=False):
        """skorch's iterator over ``dataset``, shuffled when training unless told otherwise.

        Images to embed (an :class:`ImageDataset`) are decoded by
        ``num_workers`` workers; on CUDA, batches come in pinned memory.
        ``iterator_train__*`` and ``iterator_valid__*`` parameters win.
        """
        kwargs = self.get_params_for("iterator_train" if training else "iterator_valid")
        kwargs.setdefault("batch_size", self.batch_size)
        if kwargs["batch_size"] == -1:
            kwargs["batch_size"] = len(dataset)
        if training:
            kwargs.setdefault("shuffle", True)
        elif isinstance(unwrap_subsets(dataset)[0], ImageDataset):
            kwargs = {**loader_kwargs(self.device, self.num_workers, len(dataset),
                                      kwargs["batch_size"]), **kwargs}
        if device_type(self.device) == "cuda":
            kwargs.setdefault("pin_memory", True)
        return (self.iterator_train if training else self.iterator_valid)(dataset, **kwargs)

    def _identity_batches(self, dataset, iterator, *, device=None, seed_offset=0):
        """Join identity batches, mined from ``dataset``'s pairs, to ``iterator``.

        ``device`` is where the identity batches go (None: left on the CPU,
        as the pair batches are); ``seed_offset`` is added to the sampler's
        seed, so that several training processes draw different identities.
        """
        found = training_pairs(dataset)
        if found is None:
            warnings.warn(
                f"pair_mining='graph' needs the training pairs, but the training data is a "
                f"{type(dataset).__name__}, not pairs of paths; training on the pairs alone.",
                UserWarning, stacklevel=3)
            return iterator
        pairs, targets = found
        images, identities = image_identities(pairs, targets > 0.5)
        seed = int(torch.randint(np.iinfo(np.int32).max, ()).item()) + seed_offset
        sampler = IdentitySampler(images, identities, n_views=self.views_per_identity,
                                  random_state=np.random.RandomState(seed))
        if sampler.n_eligible < 2:
            warnings.warn(
                f"pair_mining='graph' found {sampler.n_eligible} identities with two or more "
                "images in the training pairs (it needs two); training on the pairs alone.",
                UserWarning, stacklevel=3)
            return iterator
        dataset, _ = unwrap_subsets(dataset)
        if dataset.cache is None:
            load = partial(load_image, image_size=dataset.image_size)
        else:
            load = partial(dataset.cache.get, image_size=dataset.image_size)
        return IdentityBatches(iterator, sampler, load, device=device)

    def infer(self, x, **fit_params):
        """Run the module in ``precision``; identity labels of mined batches are for the loss only.

        Batches of embeddings (``"e1"``, ``"e2"``: training with
        ``freeze_backbone=True``) go through the match head alone.
        """
        if isinstance(x, Mapping) and "view_identities" in x:
            x = {key: value for key, value in x.items() if key != "view_identities"}
        if isinstance(x, Mapping):
            x = to_device(dict(x), self.device)  # non-blocking from pinned memory on CUDA
            if "e1" in x:
                x = to_tensor(x, device=self.device)
                return self.module_.similarity(x["e1"], x["e2"])
        with autocast(self.precision, self.device):
            return super().infer(x, **fit_params)

    def train_step_single(self, batch, **fit_params):
        """Like skorch's, with the loss scaled for fp16 gradients (``precision="fp16"``)."""
        scaler = getattr(self, "_grad_scaler", None)
        if scaler is None:
            return super().train_step_single(batch, **fit_params)
        self._set_training(True)
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        scaler.scale(loss).backward()
        return {"loss": loss, "y_pred": y_pred}

    def _step_optimizer(self, step_fn):
        scaler = getattr(self, "_grad_scaler", None)
        if scaler is None:
            return super()._step_optimizer(step_fn)
        step_fn()  # the gradients, as LBFGS-style closures are not supported with scaling
        for name in self._optimizers:
            scaler.step(getattr(self, name + "_"))  # unscales; skips steps with inf/NaN
        scaler.update()
        return None

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """Binary cross-entropy on the pairs, plus the identity loss on mined batches.

        The identity loss, :func:`supervised_contrastive_loss` of the views'
        embeddings weighted by ``mining_weight``, trains the backbone only:
        the match head (and so the probability) learns from the pairs alone.
        """
        if not isinstance(y_pred, tuple):
            return super().get_loss(y_pred, y_true, X=X, training=training)
        logits, view_embeddings = y_pred
        loss = super().get_loss(logits, y_true, X=X, training=training)
        identities = to_tensor(X["view_identities"], device=view_embeddings.device)
        identity_loss = supervised_contrastive_loss(view_embeddings, identities,
                                                    self.mining_temperature)
        if training:
            self.history.record_batch("identity_loss", identity_loss.item())
        return loss + self.mining_weight * identity_loss

    def get_dataset(self, X, y=None):
        """Wrap pairs of image paths in a :class:`PairDataset`."""
        if is_dataset(X):
            return X
        return self._pair_dataset(check_pairs(X), y)

    def _pair_dataset(self, pairs, targets):
        cache = DecodedImageCache(int(self.cache_size * 2**20))
        return PairDataset(pairs, targets, image_size=self.image_size_, cache=cache)

    # ------------------------------------------------------------------
    # fitting
    # ------------------------------------------------------------------

    def _check_fit_data(self, X, y, classes=None):
        pairs = check_pairs(X)
        if classes is None:
            classes, targets = check_match_labels(y, self.match_label, len(pairs))
        else:
            y_values = np.asarray(y).reshape(-1)
            unknown = np.setdiff1d(y_values, classes)
            if unknown.size:
                raise ValueError(
                    f"y holds labels {unknown[:10].tolist()} not seen in the first fit "
                    f"(classes_={classes.tolist()})."
                )
            if len(y_values) != len(pairs):
                raise ValueError(
                    f"X and y have different lengths: X has {len(pairs)} pairs, "
                    f"y has {len(y_values)}."
                )
            targets = (y_values == self.match_label).astype(np.float32)
        if self.on_error == "raise":
            check_files_exist(pairs)
        return pairs, targets, classes

    def _training_dataset(self, pairs, targets, image_size, require_both_classes):
        """Read every image once, before training, and wrap the readable pairs.

        The decoded images stay in the training cache (up to ``cache_size``),
        so the first epoch does not decode them again.
        """
        cache = DecodedImageCache(int(self.cache_size * 2**20))
        bad_rows, failures = decode_pair_images(
            pairs, partial(cache.get, image_size=image_size), self.on_error)
        if failures:
            warn_unreadable(failures, np.flatnonzero(bad_rows), "are left out of training",
                            stacklevel=4)
            pairs, targets = pairs[~bad_rows], targets[~bad_rows]
            if len(pairs) == 0 or (require_both_classes and np.unique(targets).size < 2):
                raise ValueError(
                    f"Too few pairs are left to train on after leaving out the "
                    f"{bad_rows.sum()} with unreadable images: {len(pairs)} pairs with "
                    f"labels {sorted(set(targets.tolist()))} (1.0 = match).")
        return PairDataset(pairs, targets, image_size=image_size, cache=cache)

    def _read_training_images(self, pairs, targets, require_both_classes, initialize):
        """Read every image, then ``initialize()`` the network if asked.

        Images are read first where the input size is known before the
        network is built, so that a bad image leaves a fitted estimator as it
        was. Returns the :class:`PairDataset` of the readable pairs.
        """
        size = expected_image_size(self.model_name, self.image_size, self.model_kwargs)
        if not initialize:
            size = self.image_size_
        dataset = None
        if size is not None:
            dataset = self._training_dataset(pairs, targets, size, require_both_classes)
        if initialize:
            self.initialize()
        if dataset is None or dataset.image_size != self.image_size_:
            if dataset is not None:  # read again at the size the network turned out to take
                pairs, targets = dataset.pairs, dataset.y
            dataset = self._training_dataset(pairs, targets, self.image_size_,
                                              require_both_classes)
        if self.freeze_backbone:
            dataset = self._embedded_pairs(dataset)
        return dataset

    def _embedded_pairs(self, dataset):
        """Embed each distinct image of a :class:`PairDataset` once, for ``freeze_backbone``.

        The images come from the dataset's cache, filled when they were read
        before training; the embeddings replace them.
        """
        unique, _, inverse = distinct_paths(dataset.pairs)
        load = partial(dataset.cache.get, image_size=dataset.image_size)
        batches = ((torch.stack([load(path) for path in unique[start:start + self.batch_size]]),
                    None) for start in range(0, len(unique), self.batch_size))
        with autocast(self.precision, self.device):
            embeddings, _ = embed_images(self.module_, batches, self.device)
        return EmbeddingPairDataset(dataset.pairs, dataset.y, embeddings=embeddings.cpu(),
                                    index=inverse.reshape(-1, 2))

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        """skorch's training loop; a ``KeyboardInterrupt`` ends it with a warning.

        skorch then runs the callbacks' ``on_train_end``: the best weights
        seen so far are restored (``early_stopping``) and the head is
        recalibrated, so the interrupted estimator is usable.
        """
        try:
            return super().fit_loop(X, y, epochs=epochs, **fit_params)
        except KeyboardInterrupt:
            callbacks = dict(self.callbacks_)
            time_limit = callbacks.get("time_limit")
            early_stopping = callbacks.get("early_stopping")
            # skorch's EarlyStopping stops training with a KeyboardInterrupt too.
            stopped_early = (getattr(early_stopping, "misses_", 0)
                             >= getattr(early_stopping, "patience", float("inf")))
            if not getattr(time_limit, "stopped_", False) and not stopped_early:
                epoch = len(self.history)
                warnings.warn(
                    f"fit was interrupted (KeyboardInterrupt) in epoch {epoch}; the "
                    "estimator keeps the best weights validated so far (the last ones "
                    "without a validation split).", UserWarning, stacklevel=2)
            raise

    def _start_time_limit(self, elapsed):
        callback = dict(self.callbacks_).get("time_limit")
        if isinstance(callback, TimeLimit):
            callback.start(elapsed)

    def fit(self, X, y, **fit_params):
        """Fit the Siamese network on labelled pairs of image paths.

        Parameters
        ----------
        X : DataFrame, ndarray of shape (n_pairs, 2) or list of pairs
            Image paths, two per pair, taken by column position.
        y : array-like of shape (n_pairs,)
            Two distinct labels; ``match_label`` marks matching pairs.
        **fit_params : dict
            Passed to skorch's ``partial_fit``.

        Returns
        -------
        self : ImagePairClassifier
            The fitted classifier.
        """
        started = time.monotonic()
        self._validate_hyperparameters()
        pairs, targets, classes = self._check_fit_data(X, y)
        with seeded(self.random_state):
            dataset = self._read_training_images(
                pairs, targets, True, initialize=not self.warm_start or not self.initialized_)
            self._start_time_limit(time.monotonic() - started)
            self.classes_ = classes
            super().partial_fit(dataset, dataset.y, _routing_method="fit", **fit_params)
        self.n_features_in_ = 2
        return self

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        """Continue training on more pairs without re-initialising the network.

        Parameters
        ----------
        X : DataFrame, ndarray of shape (n_pairs, 2) or list of pairs
            Image paths, two per pair.
        y : array-like of shape (n_pairs,)
            Labels; after the first fit they must be among ``classes_``.
        classes : array-like, default=None
            The two labels, needed when the first call's ``y`` holds only one.
        **fit_params : dict
            Passed to skorch's ``partial_fit``.

        Returns
        -------
        self : ImagePairClassifier
        """
        if is_dataset(X):
            return super().partial_fit(X, y, **fit_params)
        self._validate_hyperparameters()
        known = self.__dict__.get("classes_")
        if known is None and classes is not None:
            known = np.unique(np.asarray(classes))
            if len(known) != 2 or self.match_label not in known.tolist():
                raise ValueError(
                    f"classes must be two labels including match_label="
                    f"{self.match_label!r}; got {known.tolist()}."
                )
        pairs, targets, known = self._check_fit_data(X, y, classes=known)
        with seeded(self.random_state):
            dataset = self._read_training_images(pairs, targets, False,
                                                 initialize=not self.initialized_)
            self.classes_ = known
            super().partial_fit(dataset, dataset.y, **fit_params)
        self.n_features_in_ = 2
        return self

    # ------------------------------------------------------------------
    # prediction
    # ------------------------------------------------------------------

    def _match_logits(self, X):
        self.check_is_fitted(["module_", "classes_"])
        if is_dataset(X):  # skorch's own scoring callbacks pass datasets
            return self.forward(X).float().numpy().reshape(-1)
        pairs = check_pairs(X)
        if self.on_error == "raise":
            check_files_exist(pairs)
        unique, first, inverse = distinct_paths(pairs)
        names = [f"X[{position // 2}, {position % 2}]" for position in first]
        dataset = ImageDataset(unique, self.image_size_, names=names, on_error=self.on_error)
        with autocast(self.precision, self.device):
            embeddings, failures = embed_images(self.module_, self.get_iterator(dataset),
                                                self.device)
        # Pairs are scored in chunks: memory grows with the distinct images only.
        logits = score_pairs(self.module_, embeddings, inverse.reshape(-1, 2))
        if failures:
            warn_unreadable(failures, np.flatnonzero(np.isnan(logits)),
                            "get NaN probabilities", stacklevel=4)
        return logits

    def _match_column(self):
        return int(np.flatnonzero(self.classes_ == self.match_label)[0])

    def decision_function(self, X):
        """Match logits, signed for ``classes_[1]`` as scikit-learn expects.

        With the usual labels (``match_label`` is the larger label, e.g. 1 in
        {0, 1}) this is ``scale * cosine + bias``; otherwise its negation.

        Parameters
        ----------
        X : DataFrame, ndarray of shape (n_pairs, 2) or list of pairs
            Image paths.

        Returns
        -------
        scores : ndarray of shape (n_pairs,)
        """
        logits = self._match_logits(X)
        return logits if self._match_column() == 1 else -logits

    def predict_proba(self, X):
        """Probabilities of the two classes, in ``classes_`` order.

        Parameters
        ----------
        X : DataFrame, ndarray of shape (n_pairs, 2) or list of pairs
            Image paths.

        Returns
        -------
        proba : ndarray of shape (n_pairs, 2)
        """
        match = torch.sigmoid(torch.from_numpy(self._match_logits(X))).numpy()
        proba = np.empty((len(match), 2), dtype=np.float32)
        column = self._match_column()
        proba[:, column] = match
        proba[:, 1 - column] = 1.0 - match
        return proba

    def predict(self, X):
        """Predict ``match_label`` where the match probability exceeds ``threshold``.

        Parameters
        ----------
        X : DataFrame, ndarray of shape (n_pairs, 2) or list of pairs
            Image paths.

        Returns
        -------
        y_pred : ndarray of shape (n_pairs,)
            Labels from ``classes_``.
        """
        proba = self.predict_proba(X)
        column = self._match_column()
        is_match = proba[:, column] > self.threshold
        return np.where(is_match, self.classes_[column], self.classes_[1 - column])

    def score(self, X, y, sample_weight=None):
        """ROC AUC of the match probability against the true labels.

        Parameters
        ----------
        X : DataFrame, ndarray of shape (n_pairs, 2) or list of pairs
            Image paths.
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

    # ------------------------------------------------------------------
    # persistence
    # ------------------------------------------------------------------

    # Parameters of subclasses that a saved (plain) classifier does not have.
    _not_saved = ()

    def save(self, path):
        """Save the fitted classifier to one file that holds no pickle.

        The network's weights are written as safetensors; the parameters,
        ``classes_``, ``match_label``, ``threshold``, the preprocessing, the
        training history, a format version and the library versions as JSON,
        with a SHA-256 checksum of all of it. The write is atomic: the file
        at ``path`` is replaced only once the new one is complete, so a crash
        mid-save leaves the previous model intact. Use :meth:`load` to read
        it back; unlike a pickle, loading it cannot run code.

        Parameters that cannot be written as JSON (callback objects, a
        ``RandomState``, custom classes) are saved as their defaults, with a
        warning; predictions do not depend on them.

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
        if type(self.module_) is not SiameseNet:
            raise ValueError(f"save supports the SiameseNet module, not "
                             f"{type(self.module_).__name__}; use pickle for this model.")
        defaults = constructor_defaults(type(self), NeuralNetBinaryClassifier, NeuralNet)
        content = {
            "params": persisted_params(self, defaults, exclude=self._not_saved,
                                       overrides={"device": self.device or "cpu"}),
            "fitted": {"classes_": encode_labels(self.classes_),
                       "image_size_": self.image_size_,
                       "embedding_dim_": self.embedding_dim_,
                       "n_features_in_": 2},
            "preprocessing": {"image_size": self.image_size_,
                              "mean": self.module_.mean.reshape(-1).tolist(),
                              "std": self.module_.std.reshape(-1).tolist()},
            "history": json.loads(json.dumps(self.history_.to_list(), default=_json_scalar)),
        }
        state = {name: tensor for name, tensor in self.module_.state_dict().items()
                 if not name.startswith("augment.")}
        return write_model_file(path, "ImagePairClassifier", content, state)

    @classmethod
    def load(cls, path, *, device=None):
        """Load a classifier saved with :meth:`save`, without running code from the file.

        Works offline and without the original weights file: the network is
        built from the saved architecture and filled with the saved weights.

        Parameters
        ----------
        path : str or path-like
            A file written by :meth:`save`.
        device : str or torch.device, default=None
            Where the network runs; None keeps the saved device, or uses
            ``"cpu"`` (with a warning) when that is not available.

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
        content, state = read_model_file(path, "ImagePairClassifier")
        fitted = content.get("fitted", {})
        with rebuilding(path, fitted, lambda: clf.image_size_):
            params = decode_params(content["params"])
            classes = decode_labels(fitted["classes_"])
            params["device"] = resolve_load_device(params.get("device", "cpu"), device)
            params["precision"] = loadable_precision(params.get("precision", "fp32"),
                                                     params["device"])
            # Build the saved architecture with random weights (no download, no
            # weights file), then fill in the saved weights.
            clf = cls(**{**params, "pretrained": False, "weights_path": None})
            with seeded(0):
                clf.initialize()
            load_module_state(clf.module_, state, ignore_missing=("augment.",))
        clf.pretrained = params.get("pretrained", True)
        clf.weights_path = params.get("weights_path")
        clf.classes_ = classes
        clf.n_features_in_ = fitted["n_features_in_"]
        clf.history_ = History(content.get("history") or [])
        clf.module_.eval()
        return clf
