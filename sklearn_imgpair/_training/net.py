"""PairNet: the skorch net of the pair classifiers, each of skorch's hooks overridden once."""

import warnings
from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import (
    Interval,
    Options,
    StrOptions,
    validate_parameter_constraints,
)
from skorch import NeuralNetBinaryClassifier
from skorch.callbacks import EpochScoring, EpochTimer, PassthroughScoring, PrintLog, ProgressBar
from skorch.utils import is_dataset
from torch.utils.data import Dataset

from sklearn_imgpair._images.datasets import pair_dataset
from sklearn_imgpair._images.unreadable import ON_ERROR_OPTIONS
from sklearn_imgpair._images.validation import check_pairs
from sklearn_imgpair._nn.augment import ViewAugmentation
from sklearn_imgpair._nn.device import (
    autocast,
    check_device,
    device_type,
    fitted_precision,
    resolve_device,
    to_device,
)
from sklearn_imgpair._nn.siamese import embedding_dim, siamese_net_kwargs
from sklearn_imgpair._training.budget import StopTraining, TimeLimit
from sklearn_imgpair._training.calibration import HeadCalibration
from sklearn_imgpair._training.fitting import at_network_size, fit_in_progress
from sklearn_imgpair._training.frozen import (
    embed_training_pairs,
    freeze_backbone_parameters,
    is_embedding_batch,
    match_embedding_batch,
    trainable_parameters,
)
from sklearn_imgpair._training.mining import IdentityBatches, identity_batches, identity_loss
from sklearn_imgpair._training.precision import (
    scaled_train_step,
    scaled_train_step_single,
    training_loss_scaler,
)
from sklearn_imgpair._training.schedule import CosineSchedule
from sklearn_imgpair._training.selection import AucEarlyStopping, valid_roc_auc

__all__ = ["PAIR_NET_PARAMETER_CONSTRAINTS", "PairNet", "default_callbacks"]

# Constraints of the parameters the net reads for training, then of skorch's
# own, in scikit-learn's vocabulary (skorch checks their names only). The
# vocabulary is scikit-learn's private _param_validation, as for the runtime
# parameters (see _nn/device.py; tests/test_common.py runs scikit-learn's
# parameter-validation check on it).
PAIR_NET_PARAMETER_CONSTRAINTS = {
    "match_label": "no_validation",
    "time_limit": [Interval(Real, 0, None, closed="neither"), None],
    "augment": ["boolean", torch.nn.Module],
    "head_lr": [Interval(Real, 0, None, closed="neither")],
    "cache_size": [Interval(Real, 0, None, closed="left")],
    "pair_mining": [StrOptions({"graph", "none"})],
    "views_per_identity": [Interval(Integral, 2, None, closed="left")],
    "hard_identities": [Interval(Real, 0, 1, closed="both")],
    "mining_weight": [Interval(Real, 0, None, closed="left")],
    "mining_temperature": [Interval(Real, 0, None, closed="neither")],
    "on_error": [StrOptions(ON_ERROR_OPTIONS)],
    "freeze_backbone": ["boolean"],
    "module": [callable],
    "criterion": [callable],
    "optimizer": [callable],
    "lr": [Interval(Real, 0, None, closed="neither")],
    "max_epochs": [Interval(Integral, 1, None, closed="left")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "iterator_train": [callable],
    "iterator_valid": [callable],
    "dataset": [callable, Dataset],
    "train_split": [callable, None],
    # Options rather than StrOptions, whose wrong strings scikit-learn's
    # check_param_validation tries: skorch's set_params builds the callbacks
    # from a new value at once and fails on them before fit could name them.
    "callbacks": [list, Options(str, {"disable"}), None],
    "predict_nonlinearity": [StrOptions({"auto"}), callable, None],
    "warm_start": ["boolean"],
    "verbose": ["verbose"],
    "compile": ["boolean"],
    "use_caching": [StrOptions({"auto"}), "boolean"],
    "torch_load_kwargs": [dict, None],
    "threshold": [Interval(Real, 0, 1, closed="both")],
    "iterator_train__shuffle": ["boolean"],
}


def _skorch_state(name):
    """A property for an attribute skorch's ``__init__`` sets, stored as ``_<name>``.

    Before skorch's ``__init__`` has set it, reading it raises AttributeError,
    as skorch's ``__setattr__`` expects of ``initialized_`` during ``__init__``.
    """
    key = "_" + name.rstrip("_")

    def get(self):
        try:
            return self.__dict__[key]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no {name} yet.") from None

    def set(self, value):
        self.__dict__[key] = value

    return property(get, set, doc=f"skorch's ``{name}``.")


def default_callbacks(net):
    """The callbacks a pair classifier trains with, by name, in the order they run.

    ``epoch_timer``, ``lr_schedule`` (:class:`CosineSchedule`) and
    ``train_loss``; with a validation split ``valid_loss``, ``valid_auc``,
    ``early_stopping`` (:class:`AucEarlyStopping`) and ``calibration``
    (:class:`HeadCalibration`, after the best weights are restored); then
    ``time_limit`` (:class:`TimeLimit`), a ``progress_bar`` with
    ``verbose >= 2``, and ``print_log``. Each can be tuned or switched off by
    name, e.g. ``callbacks__early_stopping__patience=10`` or
    ``callbacks__lr_schedule=None``.
    """
    callbacks = [
        ("epoch_timer", EpochTimer()),
        ("lr_schedule", CosineSchedule()),
        ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
    ]
    if net.train_split is not None and net.train_split is not False:
        callbacks += [
            ("valid_loss", PassthroughScoring(name="valid_loss")),
            ("valid_auc", EpochScoring(valid_roc_auc, name="valid_auc",
                                       lower_is_better=False, use_caching=True)),
            ("early_stopping", AucEarlyStopping(patience=5, load_best=True)),
            ("calibration", HeadCalibration()),
        ]
    callbacks.append(("time_limit", TimeLimit()))
    if isinstance(net.verbose, Integral) and net.verbose >= 2:
        callbacks.append(("progress_bar", ProgressBar()))
    callbacks.append(("print_log", PrintLog()))
    return callbacks


class PairNet(NeuralNetBinaryClassifier):
    """A skorch net that trains a Siamese module on labelled pairs of images.

    The base of :class:`ImagePairClassifier`, which holds the parameters this
    net reads (``model_name``, ``image_size``, ``match_label``, ``augment``,
    ``head_lr``, ``cache_size``, ``pair_mining``, ``views_per_identity``,
    ``hard_identities``, ``mining_weight``, ``mining_temperature``,
    ``on_error``, ``precision``, ``freeze_backbone``, ``time_limit``, ...).
    Each skorch hook is overridden here once, and the features are plain
    functions: identity mining (``_training.mining``), the frozen backbone
    (``_training.frozen``), fp16 loss scaling (``_training.precision``) and
    autocast (``_nn.device``).

    It also keeps the parts of scikit-learn's estimator contract that skorch's
    ``NeuralNet`` misses:

    - Only public names are parameters: skorch lists every attribute not
      ending in ``_``, so its bookkeeping (``_params_to_validate``, Accelerate's
      ``_wrapped_with_accelerator``) reached ``clone`` and ``set_params``.
    - No fitted attribute is set in ``__init__``: skorch's ``history_``,
      ``initialized_`` and ``virtual_params_`` live in private storage.
    - Parameters set on the net win in ``get_params(deep=True)`` over the
      values of skorch's freshly built default callbacks (skorch reported
      ``callbacks__early_stopping__patience=5`` after the user set 2).
    - Parameters named in ``_module_parameters`` may hold torch modules:
      skorch's ``__setattr__`` takes a module set after ``__init__`` for a
      network component and refuses it.
    - ``set_params`` takes ``iterator_train__*`` and ``iterator_valid__*``
      parameters after ``fit``: skorch 1.4 sets them, then raises because
      no network component needs re-initializing.
    - ``device`` also takes ``"auto"``: skorch moves modules and tensors to
      ``net.device`` in many places, so the attribute reads as the device
      chosen (:func:`resolve_device`), while ``get_params``, cloning and
      pickling keep ``"auto"`` as given.
    """

    _module_parameters = ("augment",)

    # ------------------------------------------------------------------
    # scikit-learn's estimator contract
    # ------------------------------------------------------------------

    # skorch overrides scikit-learn's private _get_param_names to list every
    # attribute not ending in "_"; tests/test_classifier.py fails if skorch renames it
    # or stops listing parameters through it.
    def _get_param_names(self):
        return [name for name in super()._get_param_names() if not name.startswith("_")]

    history_ = _skorch_state("history_")
    initialized_ = _skorch_state("initialized_")
    virtual_params_ = _skorch_state("virtual_params_")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True  # a table of paths (or images), not a numeric array
        tags.input_tags.two_d_array = False
        tags.classifier_tags.multi_class = False
        return tags

    def get_params(self, deep=True):
        """Get the parameters of this estimator, as scikit-learn's ``get_params``.

        Parameters
        ----------
        deep : bool, default=True
            Also return the parameters of contained objects (skorch's
            ``callbacks__<name>__<parameter>``).

        Returns
        -------
        params : dict
            Parameter names mapped to their values; ``device`` as given.
        """
        params = super().get_params(deep=deep)
        if deep:
            params.update(super().get_params(deep=False))
        params["device"] = self.__dict__.get("device")  # as given, not resolved
        return params

    def set_params(self, **params):
        """Set the parameters of this estimator, as skorch's ``set_params``.

        Parameters
        ----------
        **params : dict
            Parameter names mapped to their new values.

        Returns
        -------
        self : PairNet
        """
        loaders = {name: params.pop(name) for name in list(params)
                   if name.startswith(("iterator_train__", "iterator_valid__"))}
        if loaders and self.initialized_:  # read whenever a loader is made: no re-initialization
            # skorch's private set of the names its _validate_params checks (skorch 1.4);
            # tests/deploy/test_runtime.py sets iterator_valid__batch_size after fit.
            self._params_to_validate.update(loaders)
            vars(self).update(loaders)
        else:
            params.update(loaders)
        return super().set_params(**params)

    def __setattr__(self, name, value):
        if name in self._module_parameters:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def device(self):
        """Where the network runs: the ``device`` parameter, ``"auto"`` resolved."""
        return resolve_device(self.__dict__.get("device"))

    @device.setter
    def device(self, value):
        self.__dict__["device"] = value

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

    @property
    def precision_(self):
        """The precision prediction runs in here: ``precision``, ``"auto"`` resolved."""
        return fitted_precision(self)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_identity_sampler", None)  # a pickle taken during training ...
        state.pop("_fitting", None)  # ... is not fitting when it is loaded
        return state

    def __setstate__(self, state):
        device = state["device"]
        state["device"] = resolve_device(device)  # skorch maps the tensors to a real device
        super().__setstate__(state)
        if isinstance(device, str) and device == "auto":
            self.device = device

    def _validate_hyperparameters(self):
        params = self.get_params(deep=False)
        validate_parameter_constraints(
            self._parameter_constraints,
            {name: params[name] for name in self._parameter_constraints},
            caller_name=type(self).__name__,
        )
        check_device(params["device"])

    def _check_parameters_unless_fitting(self):
        """Validate the parameters, unless ``fit`` (which has just done so) is under way."""
        if not fit_in_progress(self):
            self._validate_hyperparameters()

    # ------------------------------------------------------------------
    # building the network
    # ------------------------------------------------------------------

    # skorch's own classifiers override this private property, and skorch reads it
    # directly (get_default_callbacks, and get_params of the callbacks); there is no
    # public hook for default callbacks. tests/test_classifier.py fails if that changes.
    @property
    def _default_callbacks(self):
        return default_callbacks(self)

    def initialize(self):
        """Validate the parameters and the precision, then build the network and the rest.

        With ``precision="fp16"`` the loss scaler (``grad_scaler_``) is made
        here; other precisions train without one.
        """
        self._check_parameters_unless_fitting()
        self.grad_scaler_ = training_loss_scaler(self.precision, self.device)
        return super().initialize()

    def initialize_module(self):
        """Build the backbone and wrap it in the Siamese module."""
        kwargs, self.image_size_ = siamese_net_kwargs(
            self.model_name, pretrained=self.pretrained, weights_path=self.weights_path,
            image_size=self.image_size, model_kwargs=self.model_kwargs)
        if isinstance(self.augment, torch.nn.Module):
            augment = self.augment
        else:
            augment = ViewAugmentation() if self.augment else None
        self.module_ = self.initialized_instance(
            self.module, {**kwargs, "augment": augment, **self.get_params_for("module")})
        self.embedding_dim_ = embedding_dim(self.module_)
        return self

    def initialize_optimizer(self, *args, **kwargs):
        """Freeze the backbone if asked, then build the optimizer for what still trains."""
        if self.freeze_backbone:
            freeze_backbone_parameters(self.module_)
        return super().initialize_optimizer(*args, **kwargs)

    def get_params_for_optimizer(self, prefix, named_parameters):
        """skorch's, for the parameters that train (a frozen backbone's do not)."""
        return super().get_params_for_optimizer(prefix, trainable_parameters(named_parameters))

    def get_params_for(self, prefix):
        """skorch's, plus the match head's parameter group and pinned memory on CUDA.

        The head's two parameters (scale and bias) learn at ``head_lr``
        without weight decay, through skorch's ``optimizer__param_groups``;
        training and validation batches come in pinned memory on CUDA.
        """
        params = super().get_params_for(prefix)
        if prefix == "optimizer":
            head = ("head.*", {"lr": self.head_lr, "weight_decay": 0.0})
            params["param_groups"] = [head, *params.get("param_groups", [])]
        elif prefix in ("iterator_train", "iterator_valid") and device_type(self.device) == "cuda":
            params.setdefault("pin_memory", True)
        return params

    # ------------------------------------------------------------------
    # data
    # ------------------------------------------------------------------

    def get_dataset(self, X, y=None):
        """Pairs of images as a :class:`PairDataset` (datasets pass through).

        With a frozen backbone, labelled pairs of images become pairs of
        embeddings.
        """
        if not is_dataset(X):
            X = pair_dataset(check_pairs(X), y, image_size=self.image_size_,
                             cache_size=self.cache_size, read=False)
        dataset = super().get_dataset(X, y)
        if self.freeze_backbone:
            return embed_training_pairs(self.module_, dataset, batch_size=self.batch_size,
                                        precision=self.precision)
        return dataset

    def get_iterator(self, dataset, training=False):
        """skorch's; with ``pair_mining="graph"`` training batches carry identity batches."""
        loader = self._data_loader(dataset, training=training)
        return self._with_identity_batches(dataset, loader) if training else loader

    def _data_loader(self, dataset, training=False):
        """skorch's own data loader over ``dataset``, before any identity batches join it.

        A subclass whose mixin prepares what ``get_iterator`` returns
        (:class:`AcceleratedImagePairClassifier`) builds its batches from this.
        """
        return super().get_iterator(dataset, training=training)

    def _with_identity_batches(self, dataset, loader, *, device=None, seed_offset=0):
        """Join identity batches to the training ``loader`` (see :func:`identity_batches`).

        Only with ``pair_mining="graph"`` and a backbone that trains. The
        sampler is kept (``_identity_sampler``) for the loss to feed it the
        views' embeddings, until training ends: the training iterator, made
        once per training run, holds one sampler for all its epochs, so that
        the identity centroids it learns (``hard_identities``) carry over.
        """
        if self.pair_mining != "graph" or self.freeze_backbone:
            return loader
        batches = identity_batches(dataset, loader, n_views=self.views_per_identity,
                                   device=device, seed_offset=seed_offset,
                                   hard_identities=self.hard_identities)
        self.__dict__.pop("_identity_sampler", None)
        if isinstance(batches, IdentityBatches):
            self._identity_sampler = batches.sampler
        return batches

    # ------------------------------------------------------------------
    # training and inference steps
    # ------------------------------------------------------------------

    def infer(self, x, **fit_params):
        """Run the module on a batch, with the backbone in ``precision``.

        ``precision="auto"`` trains in float32 and, with the module in eval
        mode (validation, prediction), runs as prediction does: bfloat16 where
        the device computes it natively (:func:`resolve_precision`). Batches
        of embeddings (a frozen backbone) go through the match head alone; the
        identity labels of mined batches are for the loss only.
        """
        if is_embedding_batch(x):
            return match_embedding_batch(self.module_, x, self.device)
        if isinstance(x, dict) and "view_identities" in x:
            x = {key: value for key, value in x.items() if key != "view_identities"}
        x = to_device(x, self.device)  # non-blocking from pinned memory on CUDA
        # Where the network is: device is None under Accelerate, whose accelerator placed it.
        network_device = next(self.module_.parameters()).device
        with autocast(self.precision, network_device, training=self.module_.training):
            return super().infer(x, **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """The loss on the pairs, plus ``mining_weight`` times the identity loss on mined batches.

        The identity loss trains the backbone only: the match head (and so
        the probability) learns from the pairs alone.
        """
        if not isinstance(y_pred, tuple):
            return super().get_loss(y_pred, y_true, X=X, training=training)
        logits, view_embeddings = y_pred
        loss = super().get_loss(logits, y_true, X=X, training=training)
        sampler = self.__dict__.get("_identity_sampler") if training else None
        views_loss = identity_loss(view_embeddings, X["view_identities"],
                                   temperature=self.mining_temperature, sampler=sampler)
        if training:
            self.history.record_batch("identity_loss", views_loss.item())
        return loss + self.mining_weight * views_loss

    def train_step_single(self, batch, **fit_params):
        """skorch's; with fp16, the loss is scaled before the backward pass."""
        scaler = getattr(self, "grad_scaler_", None)
        if scaler is None:
            return super().train_step_single(batch, **fit_params)
        return scaled_train_step_single(self, batch, scaler, **fit_params)

    def train_step(self, batch, **fit_params):
        """skorch's; with fp16, the optimizer steps through the loss scaler."""
        scaler = getattr(self, "grad_scaler_", None)
        if scaler is None:
            return super().train_step(batch, **fit_params)
        return scaled_train_step(self, batch, scaler, **fit_params)

    def _evaluation_step_here(self, batch, training=False):
        """skorch's evaluation step, on this process alone (nothing gathered)."""
        return super().evaluation_step(batch, training=training)

    # ------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------

    def _train_on(self, dataset, **fit_params):
        """Train on pairs read by ``fit`` or ``partial_fit``: their one way into skorch.

        skorch's ``partial_fit`` (the network is built by then), on the pairs
        read again where the network takes another image size.
        """
        dataset = at_network_size(self, dataset)
        # skorch's fit passes its private _routing_method ("fit") to partial_fit, so that
        # metadata routing resolves fit's requests; fit_pairs passes it alike.
        # tests/training/test_net.py fails if skorch's partial_fit stops taking it.
        return super().partial_fit(dataset, dataset.y, **fit_params)

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        """skorch's training loop; a user's ``KeyboardInterrupt`` ends it with a warning.

        skorch then runs the callbacks' ``on_train_end``: the best weights
        seen so far are restored and the head is recalibrated, so the
        interrupted estimator is usable. Callbacks that stop training on
        purpose (time budget, patience) raise :class:`StopTraining`, which
        ends it silently; so should a user's callback.
        """
        try:
            return super().fit_loop(X, y, epochs=epochs, **fit_params)
        except StopTraining:
            raise
        except KeyboardInterrupt:
            warnings.warn(
                f"fit was interrupted (KeyboardInterrupt) in epoch {len(self.history)}; the "
                "estimator keeps the best weights validated so far (the last ones without "
                "a validation split).", UserWarning, stacklevel=2)
            raise

    def on_train_end(self, net, **kwargs):
        """Drop the identity sampler (and the image list it holds) once training ends."""
        self.__dict__.pop("_identity_sampler", None)
        return super().on_train_end(net, **kwargs)
